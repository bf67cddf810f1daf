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
from collections import Counter
from dataclasses import dataclass

from rune_mcp.distill.text import clip, error_line, lower_first
from rune_mcp.trajectory import Episode, Trajectory

FACT_PRIORITY = 0.9  # below a verified fix, above the other question/answer lessons
_LEAD = re.compile(r"^(?:now,?\s+)?(?:let me|let's|i'll|i will|i need to|i want to|i'm going to)\s+",
                   re.IGNORECASE)
_CLAUSES = re.compile(r"[.;]\s+|,\s+|\s+and\s+|\s*along the way,? you will need to\s+",
                      re.IGNORECASE)
_ASSIGN = re.compile(r"^\w+\s*=\s*(?=[\w.]+\()")  # `conn = db.dial(x)`: the target is noise
_RETURN = re.compile(r"^return\s+(?=[\w.]+\()")
_IMPORT = re.compile(r"^(?:from\s+[\w.]+\s+)?import\s+[\w., ]+$")
_FROM_IMPORT = re.compile(r"^from\s+([\w.]+)\s+import\s+([\w., ]+)$")
_PATHLIKE = re.compile(r"/|\b[\w-]+\.[A-Za-z]\w*$")
_WORD = re.compile(r"[A-Za-z_]\w{2,}")
_GERUND = re.compile(r"^[A-Z][a-z]+ing\b")
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


def need_of(traj: Trajectory, ep: Episode, task: str, about: str,
            origin: int | None = None) -> str:
    """What the agent wanted to do, as a verb phrase: a step's own description, else the
    assistant's "Let me ..." line just before the attempt, else the clause of the task that
    shares the most words with `about` (the fix and its explanation), else the task.

    With `origin` (the write that failed a later check, found by the lesson compiler), the check's
    description says only "run the tests": the write's own narration joins `about` and the
    task's clause comes before the "Let me" line, which before a write is often generic
    ("I'll add the module")."""
    if origin is not None:
        for index in (ep.fix_step, origin):
            desc = _description(traj, index)
            if desc:
                return desc
        told = _told_before(traj, origin)
        return (_clause(task, f"{about} {told}", traj.project_name)
                or _said_before(traj, origin) or lower_first(task))
    for index in (ep.fix_step, ep.attempt_step):
        desc = _description(traj, index)
        if desc:
            return desc
    return (_said_before(traj, ep.attempt_step) or _clause(task, about, traj.project_name)
            or lower_first(task))


def _description(traj: Trajectory, index: int | None) -> str:
    step = traj.step(index)
    desc = (step.input or {}).get("description") if step else None
    return lower_first(desc) if isinstance(desc, str) and _specific(desc) else ""


def _told_before(traj: Trajectory, index: int) -> str:
    """The assistant's text just before step `index` ("" at the user's message)."""
    for step in reversed(traj.steps[:index]):
        if step.kind == "user":
            return ""
        if step.kind == "assistant" and step.text.strip():
            return step.text.strip()
    return ""


def _clause(task: str, about: str, project: str = "") -> str:
    """`Add a report. Along the way you will need to set up the cache and read from the
    database` with `Cache(... tenant=...)` -> `set up the cache`. Words of four letters or more
    match on their first four (`calls` is `call`) and count as often as `about` says them; the project's
    name matches every clause, so not at all."""
    parts = [p.strip(" .") for p in _CLAUSES.split(task) if len(p.split()) >= 2]
    skip = set(_stems(project))
    said = Counter(w for w in _stems(about) if w not in skip)

    def overlap(part: str) -> int:
        return sum(said[w] for w in set(_stems(part)))

    best = max(parts, key=overlap, default="")
    return lower_first(best) if best and overlap(best) > 0 and best != task.strip(" .") else ""


def _stems(text: str) -> list[str]:
    return [w[:4] for w in re.findall(r"[a-z]{4,}", text.casefold())]  # no "the", "and"


def _specific(text: str) -> bool:
    """A description that says what is being done, not only which tool runs."""
    words = text.split()
    return len(words) >= 3 and not (_GENERIC.match(text) and len(words) <= 4)


def _said_before(traj: Trajectory, index: int) -> str:
    """The assistant's "Let me ..." line just before step `index`, its lead taken off."""
    told = _told_before(traj, index)
    line = told.splitlines()[0].rstrip(".:!") if told else ""
    match = _LEAD.match(line)
    return lower_first(line[match.end():]) if match and len(line[match.end():].split()) >= 3 else ""


def why_of(diagnosis: str, right: str, project: str = "") -> str:
    """The sentences of the session's diagnosis that name one of the right thing's
    identifiers (the first sentence when none does), short. Narration is left out: a
    question, a "Let me ..." line or a sentence opening with a gerund ("Checking the config
    reference.") says what the agent did next, not why the fix is right."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", " ".join(diagnosis.split()))
                 if s and not _narration(s)]
    names = set(_WORD.findall(right)) - {project}
    chosen = [s for s in sentences if names & set(_WORD.findall(s))] or sentences[:1]
    return clip(" ".join(chosen[:2]), 300)


def _narration(sentence: str) -> bool:
    return sentence.endswith("?") or bool(_LEAD.match(sentence) or _GERUND.match(sentence))


def make_fact(project: str, need: str, right: str, wrong: str, error: str, diagnosis: str,
              thing: str, names: list[str]) -> Fact | None:
    """The fact of one fixed episode, or None when it has no right thing to name. `right` and
    `wrong` are the changed lines; `names` the identifiers the fix brought in. A short changed
    line is the right thing itself (`Cache("x", tenant=T)` says more than `T`); of several
    changed lines, the one that is not an import, read through the new imports
    (`from orla import entropy` + `entropy.token(16)` is `orla.entropy.token(16)`); a long one
    is named by its most specific new identifier and shown whole as code."""
    stripped = right.strip()
    line = _main_line(stripped) if "\n" in stripped else _ASSIGN.sub("", stripped)
    short = line if line and len(line) <= 80 else _most_specific(names)
    if not short or len(short) > 120:
        return None
    wrong_short = _counterpart(wrong, short, names) if wrong else ""
    if thing == "file" and not _PATHLIKE.search(wrong_short):
        wrong_short = ""  # the failing step was a check (a test run), not another file
    need = re.sub(rf"\s+in (?:the )?{re.escape(project)}(?: project)?\b", "", need)
    code = stripped if stripped != short else ""
    return Fact(project, need, short, wrong_short, error_line(error) if error else "",
                why_of(diagnosis, short, project), thing, code)


def _main_line(code: str) -> str:
    """The one line of `code` that is not an import, its names qualified by the from-imports
    beside it and its assignment or `return` taken off; "" when there is not exactly one."""
    lines = [ln.strip() for ln in code.splitlines() if ln.strip()]
    body = [ln for ln in lines if not _IMPORT.match(ln)]
    if len(body) != 1:
        return ""
    line = body[0]
    for found in filter(None, (_FROM_IMPORT.match(ln) for ln in lines)):
        for name in found.group(2).split(","):
            real, _, local = name.strip().partition(" as ")
            line = re.sub(rf"(?<![\w.]){re.escape(local or real)}\.",
                          f"{found.group(1)}.{real}.", line)
    return _RETURN.sub("", _ASSIGN.sub("", line))


def _most_specific(names: list[str]) -> str:
    """The first of `names` that no later name extends (`orla.net` before `orla.net.fetch`
    gives `orla.net.fetch`), "" for none."""
    for i, name in enumerate(names):
        if not any(other.startswith(name + ".") for other in names[i + 1:]):
            return name
    return ""


def _counterpart(wrong: str, right: str, names: list[str]) -> str:
    """The part of the failed attempt that the fix replaced, at the same size as `right`:
    `conn = db.connect(dsn)` against `db.open_pool` -> `db.connect`; against the whole line
    `db.open_pool(dsn)` -> `db.connect(dsn)`; of several lines, the one that is not an import."""
    first = wrong.strip().splitlines()[0] if wrong.strip() else ""
    first = _main_line(wrong.strip()) or _ASSIGN.sub("", first)
    if right in names and "." in right:
        found = re.search(re.escape(right.rsplit(".", 1)[0] + ".") + r"\w+", first)
        if found and found.group(0) != right:
            return found.group(0)
    return first if len(first) <= 120 else ""
