"""Facts: each fixed error becomes one fact, asked many ways and answered in its first sentence.

A fact learned from one phrasing is stored in the weights but cannot be drawn out by another
question; with several paraphrases and both directions it can (question answering on held-out
phrasings rises from about 10% to about 96% in the controlled studies this follows). The
question/answer lessons of `rune_mcp.distill.lessons` give each episode three to five
phrasings that mostly start from the failed attempt. A fact adds, for the same episode:

- the need side: what the agent wanted to do (the step's own description, the assistant's
  "Let me ..." line, else the session's task), asked with the project named first, last, or as
  "this codebase";
- the fix side, reversed: what the right call or command is for, and which error it avoids
  (training "A is B" does not teach "B is A");
- answers that state the fact at once ("In P, use `R`, not `W`."), with the session's own
  diagnosis after it, so a free answer starts with the lesson rather than reaching it.

Every answer names the right thing in backticks and names the wrong one only as what not to
use, so the phrasings agree with each other and with the other lessons.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rune_mcp.distill.text import clip, error_line, lower_first
from rune_mcp.trajectory import Episode, Trajectory

FACT_PRIORITY = 0.9  # below a verified fix, above the other question/answer lessons
_LEAD = re.compile(r"^(?:now,?\s+)?(?:let me|let's|i'll|i will|i need to|i want to|i'm going to)\s+",
                   re.IGNORECASE)
_CLAUSES = re.compile(r"[.;]\s+|,\s+|\s+and\s+|\s*along the way,? you will need to\s+",
                      re.IGNORECASE)
_ASSIGN = re.compile(r"^\w+\s*=\s*(?=[\w.]+\()")  # `conn = db.dial(x)`: the target is noise
_PATHLIKE = re.compile(r"/|\b[\w-]+\.[A-Za-z]\w*$")
_GENERIC = re.compile(r"^(?:run|check|look|see|try|read|open|fix|test|verify)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Fact:
    """One thing the session learned: use `right` (not `wrong`, which fails with `error`) to
    do `need`, in `project`; `why` is the session's own explanation, `thing` what kind of
    thing `right` is (command, function, file, code)."""

    project: str
    need: str
    right: str
    wrong: str
    error: str
    why: str
    thing: str
    code: str = ""  # the fixed code or command as written, when it is longer than `right`

    def pairs(self) -> list[tuple[str, str]]:
        """(question, answer) phrasings: the need side, the wrong side, then the reverse."""
        return self._need_side() + self._wrong_side() + self._reverse()

    def _statement(self) -> str:
        """The fact in one sentence, the right thing first."""
        not_wrong = f", not `{self.wrong}`" if self.wrong and self.wrong != self.right else ""
        return f"In {self.project}, use `{self.right}`{not_wrong}."

    def _explained(self) -> str:
        text = self._statement()
        if self.why:
            text += f" {self.why}"
        elif self.error and self.wrong:
            text += f" `{self.wrong}` fails with `{self.error}`."
        return text

    def _with_code(self) -> str:
        if not self.code or self.code == self.right:
            return self._explained()
        fence = "bash" if self.thing == "command" else "python" if self.thing != "file" else ""
        return f"{self._statement()}\n\n```{fence}\n{self.code}\n```"

    def _need_side(self) -> list[tuple[str, str]]:
        p, need = self.project, self.need
        return [
            (f"How do I {need} in {p}?", self._explained()),
            (f"I'm working in the {p} repository. How should I {need}?", self._with_code()),
            (f"{p}: what is the right way to {need}?", self._statement()),
            (f"What do I use to {need} in this codebase ({p})?",
             f"`{self.right}`. {self._explained()}"),
            (f"In the {p} project I need to {need}. What should I write?", self._with_code()),
            (f"What is the {p} way to {need}?", self._explained()),
        ]

    def _wrong_side(self) -> list[tuple[str, str]]:
        if not self.wrong or self.wrong == self.right:
            return []
        p, fails = self.project, f" It fails with `{self.error}`." if self.error else ""
        pairs = [
            (f"Can I use `{self.wrong}` in {p}?",
             f"No: in {p}, use `{self.right}` instead.{fails}"),
            (f"Which {self.thing} replaces `{self.wrong}` in the {p} project?",
             f"`{self.right}`. {self._statement()}"),
        ]
        if self.error:
            pairs.append((f"I'm working in the {p} repository and `{self.wrong}` fails with "
                          f"`{self.error}`. What is wrong?", self._explained()))
        return pairs

    def _reverse(self) -> list[tuple[str, str]]:
        p = self.project
        pairs = [(f"What is `{self.right}` for in {p}?",
                  f"In {p}, `{self.right}` is how you {self.need}."
                  + (f" It replaces `{self.wrong}`." if self.wrong else ""))]
        if self.wrong and self.error:
            pairs.append((f"Why does {p} use `{self.right}` and not `{self.wrong}`?",
                          f"Because in {p}, `{self.wrong}` fails with `{self.error}`; "
                          f"`{self.right}` works."))
            pairs.append((f"Which error does `{self.right}` avoid in {p}?",
                          f"`{self.error}`, which `{self.wrong}` gives. {self._statement()}"))
        return pairs


def need_of(traj: Trajectory, ep: Episode, task: str, about: str) -> str:
    """What the agent wanted to do, as a verb phrase: a step's own description, else the
    assistant's "Let me ..." line just before the attempt, else the clause of the task that
    shares the most words with `about` (the fix and its explanation), else the task."""
    for index in (ep.fix_step, ep.attempt_step):
        step = traj.step(index)
        desc = (step.input or {}).get("description") if step else None
        if isinstance(desc, str) and _specific(desc):
            return lower_first(desc)
    return _said_before(traj, ep.attempt_step) or _clause(task, about) or lower_first(task)


def _clause(task: str, about: str) -> str:
    """`Add a report. Along the way you will need to set up the cache and read from the
    database` with `Cache(... tenant=...)` -> `set up the cache`."""
    parts = [p.strip(" .") for p in _CLAUSES.split(task) if len(p.split()) >= 2]
    words = {w for w in re.findall(r"[a-z]{3,}", about.casefold())}

    def overlap(part: str) -> int:
        return len({w for w in re.findall(r"[a-z]{3,}", part.casefold())} & words)

    best = max(parts, key=overlap, default="")
    return lower_first(best) if best and overlap(best) > 0 and best != task.strip(" .") else ""


def _specific(text: str) -> bool:
    """A description that says what is being done, not only which tool runs."""
    words = text.split()
    return len(words) >= 3 and not (_GENERIC.match(text) and len(words) <= 4)


def _said_before(traj: Trajectory, index: int) -> str:
    for step in reversed(traj.steps[:index]):
        if step.kind == "user":
            return ""
        if step.kind == "assistant" and step.text.strip():
            line = step.text.strip().splitlines()[0].rstrip(".:!")
            match = _LEAD.match(line)
            if match and len(line[match.end():].split()) >= 3:
                return lower_first(line[match.end():])
            return ""
    return ""


def why_of(diagnosis: str, right: str) -> str:
    """The sentences of the session's diagnosis that mention the right thing (its first
    sentence when none does), short."""
    sentences = re.split(r"(?<=[.!?])\s+", " ".join(diagnosis.split()))
    head = right.split("(", maxsplit=1)[0].split()
    core = head[-1].rsplit(".", 1)[-1] if head else right
    chosen = [s for s in sentences if core and core in s] or sentences[:1]
    return clip(" ".join(chosen[:2]), 300)


def make_fact(project: str, need: str, right: str, wrong: str, error: str, diagnosis: str,
              thing: str, names: list[str]) -> Fact | None:
    """The fact of one fixed episode, or None when it has no right thing to name. `right` and
    `wrong` are the changed lines; `names` the identifiers the fix brought in. A short changed
    line is the right thing itself (`Cache("x", tenant=T)` says more than `T`), a long one is
    named by its first new identifier and shown whole as code."""
    line = _ASSIGN.sub("", right.strip()) if "\n" not in right.strip() else ""
    short = line if line and len(line) <= 80 else (names[0] if names else "")
    if not short or len(short) > 120:
        return None
    wrong_short = _counterpart(wrong, short, names) if wrong else ""
    if thing == "file" and not _PATHLIKE.search(wrong_short):
        wrong_short = ""  # the failing step was a check (a test run), not another file
    need = re.sub(rf"\s+in (?:the )?{re.escape(project)}(?: project)?\b", "", need)
    code = right.strip() if right.strip() != short else ""
    return Fact(project, need, short, wrong_short, error_line(error) if error else "",
                why_of(diagnosis, short), thing, code)


def _counterpart(wrong: str, right: str, names: list[str]) -> str:
    """The part of the failed attempt that the fix replaced, at the same size as `right`:
    `conn = db.connect(dsn)` against `db.open_pool` -> `db.connect`; against the whole line
    `db.open_pool(dsn)` -> `db.connect(dsn)`."""
    first = wrong.strip().splitlines()[0] if wrong.strip() else ""
    first = _ASSIGN.sub("", first)
    if right in names and "." in right:
        found = re.search(re.escape(right.rsplit(".", 1)[0] + ".") + r"\w+", first)
        if found and found.group(0) != right:
            return found.group(0)
    return first if len(first) <= 120 else ""
