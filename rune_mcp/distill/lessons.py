"""The lesson compiler: a trajectory becomes the training examples an adapter learns from.

Training on the raw transcript teaches the model the agent's mistakes: the failed attempt is in
the data and is usually mentioned more often than the fix. So a session is compiled first into
examples whose trained answer is always something that worked:

- episode: the task, the failing action and its error in the prompt; the diagnosis and the fix
  as the answer;
- attempt: the task alone in the prompt, the fix as the answer; the failed action rides along
  as `negative`, never as a target (an unlikelihood term may push it down, off by default);
- qa: short question/answer lessons phrased several ways, filled from the session's own
  identifiers, commands, paths and error messages;
- fact: each fixed error as one fact asked a dozen ways, both directions, answered in its
  first sentence (`rune_mcp.distill.facts`);
- final: the task -> the final working actions (edits, commands).

Every prompt names the project, so lessons attach to it. A token budget keeps the most
informative examples of a long session. Turning examples into token ids and loss labels is
`rune_mcp.distill.collate`'s work.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from rune_mcp.capture.tools import family_of
from rune_mcp.config import Settings
from rune_mcp.distill.facts import FACT_PRIORITY, make_fact, need_of
from rune_mcp.distill.text import clip, error_line, lower_first
from rune_mcp.trajectory import Episode, Step, Trajectory

ExampleKind = Literal["episode", "attempt", "qa", "fact", "final", "rehearsal"]

# Tool families (recorded at capture) whose calls are "working actions" worth replaying:
# reads, searches and bookkeeping (plans, todo lists, subagents) change nothing.
WORKING_FAMILIES = frozenset({"edit", "run"})
# Priorities decide what a token budget keeps; a verified fix is the best evidence there is.
PRIORITY = {"attempt": 1.0, "episode": 0.95, "qa_episode": 0.85, "final": 0.7,
            "qa_final": 0.55, "qa_unfixed": 0.3}
TASK_CHARS = 400
DIAGNOSIS_CHARS = 600
ERROR_CHARS = 700
ACTION_CHARS = 1200
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+|[A-Za-z_]\w*\(")
_PATH = re.compile(r"(?:\.{0,2}/)?(?:[\w.-]+/)+[\w.-]+\.\w+|\b[\w-]+\.(?:py|ts|js|toml|json|"
                   r"yaml|yml|md|cfg|ini|sh|rs|go|sql)\b")


@dataclass(frozen=True)
class Example:
    """One training example: `prompt` (user turn, no loss) -> `answer` (trained).

    `negative` is a failed attempt for the same prompt; it never receives likelihood loss.
    """

    kind: ExampleKind
    prompt: str
    answer: str
    priority: float
    negative: str | None = None
    steps: tuple[int, ...] = ()
    open_end: bool = False  # the answer was cut short: train it without an end of turn

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": self.prompt}]

    def text_length(self) -> int:
        return len(self.prompt) + len(self.answer)


@dataclass
class _Facts:
    """What one episode teaches, pulled out of its text once."""

    episode: Episode
    thing: str  # command, function or file
    wrong: str
    right: str
    error_line: str
    new_names: list[str] = field(default_factory=list)


# --- text helpers ---------------------------------------------------------------------------

def render_action(step: Step) -> str:
    """A tool call as a short, readable action: `$ pytest -q`, `edit app.py: ...`."""
    args = step.input or {}
    tool = step.tool or "tool"
    command = args.get("command") or args.get("cmd")
    if isinstance(command, list):
        command = " ".join(str(c) for c in command)
    if isinstance(command, str):
        return f"$ {command.strip()}"
    path = args.get("file_path") or args.get("path") or args.get("notebook_path")
    # An edit shows only its new text: the replaced text is often the failed attempt, and
    # these renderings become trained answers.
    if "new_string" in args:
        return f"edit {path}:\n{args['new_string']}"
    if isinstance(args.get("edits"), list):
        parts = [str(e.get("new_string", "")) for e in args["edits"] if isinstance(e, dict)]
        return f"edit {path}:\n" + "\n".join(parts)
    if "content" in args and path:
        return f"write {path}:\n{args['content']}"
    if isinstance(args.get("patch") or args.get("input"), str) and tool != "Task":
        return f"apply patch:\n{args.get('patch') or args.get('input')}"
    return f"{tool} {json.dumps(args, ensure_ascii=False, sort_keys=True)}"


def _changed_lines(before: str, after: str) -> tuple[str, str]:
    """Lines only in `before` and lines only in `after`, as two short texts."""
    a = [ln.strip() for ln in before.splitlines() if ln.strip()]
    b = [ln.strip() for ln in after.splitlines() if ln.strip()]
    removed, added = [], []
    for op in difflib.ndiff(a, b):
        if op.startswith("- "):
            removed.append(op[2:])
        elif op.startswith("+ "):
            added.append(op[2:])
    return "\n".join(removed[:4]), "\n".join(added[:4])


def _names(text: str) -> list[str]:
    """Dotted identifiers, calls and paths in `text`, in order, without duplicates."""
    found = [m.group(0).rstrip("(") for m in _IDENT.finditer(text)]
    found += [m.group(0) for m in _PATH.finditer(text)]
    return list(dict.fromkeys(n for n in found if len(n) > 2))


def _thing(fix: str, right: str) -> str:
    if fix.startswith("$ "):
        return "command"
    if _PATH.fullmatch(right.strip()):
        return "file"
    return "function" if "(" in right else "code"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


def _facts(traj: Trajectory, ep: Episode) -> _Facts:
    """What changed between the failed attempt and the fix. An edit that fixed things says
    it best (its replaced lines against its new ones); a file written again after a check
    failed is diffed against the file as first written (the failed command was only the
    check), or, written to another path with the same content, teaches the path; otherwise
    the two texts are diffed."""
    fix_step = traj.step(ep.fix_step)
    args = (fix_step.input or {}) if fix_step else {}
    origin = _written(traj.step(_origin_of(traj, ep)))
    fixed = _written(fix_step)
    if isinstance(args.get("old_string"), str) and isinstance(args.get("new_string"), str):
        wrong, right = _changed_lines(args["old_string"], args["new_string"])
        before = args["old_string"]
    elif origin and fixed and origin[0] == fixed[0]:
        wrong, right = _changed_lines(origin[1], fixed[1])
        before = origin[1]
    elif origin and fixed and origin[1].strip() == fixed[1].strip():
        wrong, right, before = origin[0], fixed[0], origin[0]
    else:
        wrong, right = _changed_lines(ep.action, ep.fix or "")
        before = ep.action
    wrong = _unprompt(wrong or _first_line(ep.action))
    right = _unprompt(right or _first_line(ep.fix or ""))
    old = set(_names(before))
    new_names = [n for n in _names(right) if n not in old]
    return _Facts(ep, _thing((ep.fix or "").strip(), right), clip(wrong, 300), clip(right, 300),
                  error_line(ep.error), new_names)


def _written(step: Step | None) -> tuple[str, str] | None:
    """(path, whole content) of a step that wrote a file whole, else None."""
    path = _edited(step) if step else None
    content = (step.input or {}).get("content") if step else None
    return (path, content) if path is not None and isinstance(content, str) else None


def _origin_of(traj: Trajectory, ep: Episode) -> int | None:
    """The step that wrote what failed, when the failing step was a check run after it
    (write code -> run the tests -> fix the code): the last file change before the failed
    attempt, back to the user's last message, when the fix changes the same file or writes
    the same content elsewhere; None otherwise (the attempt itself was the thing fixed)."""
    attempt, fix = traj.step(ep.attempt_step), traj.step(ep.fix_step)
    if attempt is None or fix is None or family_of(attempt) == "edit":
        return None
    fixed = _written(fix)
    for step in reversed(traj.steps[:traj.steps.index(attempt)]):
        if step.kind == "user":
            return None
        if step.kind != "tool_call" or family_of(step) != "edit":
            continue
        first = _written(step)
        moved = first is not None and fixed is not None and fixed[1].strip() == first[1].strip()
        same_file = _edited(step) is not None and _edited(step) == _edited(fix)
        return step.index if same_file or moved else None
    return None


def _edited(step: Step) -> str | None:
    args = step.input or {}
    path = args.get("file_path") or args.get("path")
    return path if isinstance(path, str) else None


def _unprompt(text: str) -> str:
    """`$ make test` -> `make test`: inside a sentence the shell prompt is noise."""
    return "\n".join(ln[2:] if ln.startswith("$ ") else ln for ln in text.splitlines())


def _step_text(traj: Trajectory, index: int | None, fallback: str) -> str:
    """Rendered with `render_action` when the step is a tool call (so edits never carry
    their replaced text into an answer), else the capture's own text."""
    step = traj.step(index)
    return render_action(step) if step and step.kind == "tool_call" else fallback


# --- example builders -------------------------------------------------------------------------

def _episode_examples(traj: Trajectory, project: str, task: str) -> list[Example]:
    out: list[Example] = []
    for ep in traj.episodes:
        if not ep.fix:
            continue
        steps = tuple(s for s in (ep.attempt_step, ep.fix_step, ep.verify_step) if s is not None)
        diagnosis = clip(ep.diagnosis, DIAGNOSIS_CHARS)
        fix = clip(_step_text(traj, ep.fix_step, ep.fix), ACTION_CHARS)
        answer = (f"{diagnosis}\n\n" if diagnosis else "") + f"Fix:\n{fix}"
        if ep.verification:
            answer += f"\n\nThis works: {error_line(ep.verification) or 'the check passed'}."
        prompt = (f"Project {project}. Task: {task}\n\nI ran:\n{clip(ep.action, ACTION_CHARS)}\n\n"
                  f"It failed with:\n{clip(ep.error, ERROR_CHARS)}\n\nWhat is wrong, and what is "
                  "the fix?")
        out.append(Example("episode", prompt, answer, PRIORITY["episode"], None, steps))
        verified = 0.0 if ep.verification else -0.05
        ask = "Which command do I run?" if fix.startswith("$ ") else "What code do I write?"
        out.append(Example(
            "attempt", f"In the {project} project: {task}\n{ask}", fix,
            PRIORITY["attempt"] + verified, _negative(traj, ep), steps))
    return out


def _negative(traj: Trajectory, ep: Episode) -> str:
    """The failed attempt in the fix's own shape: for an edit, the text it replaced (so the
    unlikelihood term hits exactly the wrong lines), else the failing action."""
    step = traj.step(ep.fix_step)
    args = (step.input or {}) if step else {}
    if isinstance(args.get("old_string"), str) and isinstance(args.get("new_string"), str):
        path = args.get("file_path") or args.get("path")
        return clip(f"edit {path}:\n{args['old_string']}", ACTION_CHARS)
    return clip(_step_text(traj, ep.attempt_step, ep.action), ACTION_CHARS)


def _episode_qa(traj: Trajectory, project: str, task: str) -> list[Example]:
    out: list[Example] = []
    for ep in traj.episodes:
        f = _facts(traj, ep)
        steps = (ep.attempt_step,) if ep.fix_step is None else (ep.attempt_step, ep.fix_step)
        if not ep.fix:
            if f.error_line:
                out.append(Example("qa", f"What goes wrong with `{f.wrong}` in {project}?",
                                   f"It fails with `{f.error_line}`.", PRIORITY["qa_unfixed"],
                                   None, steps))
            continue
        pairs = [
            (f"How do I {lower_first(task)} in {project}?",
             f"In {project}, use:\n{f.right}"),
            (f"What goes wrong with `{f.wrong}` in {project}?",
             f"In {project}, `{f.wrong}` fails with `{f.error_line}`. Use `{f.right}` instead."),
            (f"Which {f.thing} should I use in {project} instead of `{f.wrong}`?",
             f"`{f.right}`"),
        ]
        if f.error_line:
            pairs.append((f"I get `{f.error_line}` in {project}. What should I do?",
                          f"Use `{f.right}`." + (f" {clip(ep.diagnosis, 300)}"
                                                 if ep.diagnosis else "")))
        if f.new_names:
            names = ", ".join(f"`{n}`" for n in f.new_names[:3])
            pairs.append((f"Which {f.thing} does {project} use to {lower_first(task)}?",
                          f"{names}, as in `{f.right}`."))
        out += [Example("qa", q, a, PRIORITY["qa_episode"], None, steps) for q, a in pairs]
    return out


def _fact_examples(traj: Trajectory, project: str, task: str) -> list[Example]:
    """Every fixed episode as a fact, asked many ways (`rune_mcp.distill.facts`)."""
    out: list[Example] = []
    for ep in traj.episodes:
        if not ep.fix:
            continue
        f = _facts(traj, ep)
        about = f"{f.right} {ep.diagnosis}"
        need = need_of(traj, ep, task, about, _origin_of(traj, ep))
        fact = make_fact(project, need, f.right, f.wrong, ep.error, ep.diagnosis, f.thing,
                         f.new_names)
        if fact is None:
            continue
        steps = (ep.attempt_step,) if ep.fix_step is None else (ep.attempt_step, ep.fix_step)
        out += [Example("fact", q, a, FACT_PRIORITY, None, steps) for q, a in fact.pairs()]
    return out


def _final_steps(traj: Trajectory) -> list[Step]:
    """The final working actions: the capture's list, else every successful call that changed
    something (a failed call or a read-only look is never a final action)."""
    if traj.final_actions:
        found = (traj.step(i) for i in traj.final_actions)
        return [s for s in found if s is not None and s.kind == "tool_call"]
    failed = {s.tool_id for s in traj.steps if s.kind == "tool_result" and s.is_error}
    return [s for s in traj.steps if s.kind == "tool_call" and family_of(s) in WORKING_FAMILIES
            and s.tool_id not in failed]


@dataclass
class _Change:
    """One final action; edits of one file fold into the earlier change they amend."""

    steps: list[int]
    path: str | None
    verb: str  # "edit", "write" or "" (anything else, already rendered in `text`)
    text: str

    def render(self) -> str:
        return f"{self.verb} {self.path}:\n{self.text}" if self.verb else self.text


def final_state(traj: Trajectory) -> list[_Change]:
    """The final working actions, with later edits applied to the earlier edits they amend,
    so an answer shows the code as it ended, not the attempt a later edit repaired:
    add `fetch(x)` then replace it by `read_window(x)` -> one edit holding `read_window(x)`."""
    changes: list[_Change] = []
    for step in _final_steps(traj):
        args = step.input or {}
        path = args.get("file_path") or args.get("path")
        old, new = args.get("old_string"), args.get("new_string")
        if isinstance(old, str) and isinstance(new, str) and old.strip():
            target = next((c for c in reversed(changes) if c.path == path and c.verb
                           and old in c.text), None)
            if target is not None:
                target.text = target.text.replace(old, new, 1)
                target.steps.append(step.index)
                continue
            changes.append(_Change([step.index], path, "edit", new))
        elif isinstance(args.get("content"), str) and path:
            changes.append(_Change([step.index], path, "write", args["content"]))
        else:
            changes.append(_Change([step.index], None, "", render_action(step)))
    seen: set[str] = set()
    unique = []
    for change in changes:  # a repeated command adds nothing
        if change.render() not in seen:
            seen.add(change.render())
            unique.append(change)
    return unique


def _final_examples(traj: Trajectory, project: str, task: str, chunk_chars: int) -> list[Example]:
    actions = [(c.steps[0], clip(c.render(), ACTION_CHARS)) for c in final_state(traj)]
    out: list[Example] = []
    chunk: list[tuple[int, str]] = []
    size = 0
    for item in actions:
        if chunk and size + len(item[1]) > chunk_chars:
            out.append(_final_example(project, task, chunk, len(out)))
            chunk, size = [], 0
        chunk.append(item)
        size += len(item[1])
    if chunk:
        out.append(_final_example(project, task, chunk, len(out)))
    return out


def _final_example(project: str, task: str, chunk: list[tuple[int, str]], part: int) -> Example:
    prompt = f"Project {project}. Task: {task}\n\nWhat are the working steps?"
    if part:
        prompt += f" (continued, part {part + 1})"
    answer = "\n\n".join(f"{n}. {text}" for n, (_, text) in enumerate(chunk, 1))
    return Example("final", prompt, answer, PRIORITY["final"] - 0.01 * part, None,
                   tuple(i for i, _ in chunk))


def _final_qa(traj: Trajectory, project: str, task: str) -> list[Example]:
    out: list[Example] = []
    edited: list[str] = []
    asked: set[str] = set()
    for s in _final_steps(traj):
        args = s.input or {}
        action = render_action(s)
        desc = args.get("description")
        if action.startswith("$ ") and isinstance(desc, str) and desc.strip() \
                and desc not in asked:
            asked.add(desc)
            what = lower_first(desc.strip().rstrip("."))
            for q in (f"Which command do I use to {what} in {project}?",
                      f"How do you {what} in the {project} project?"):
                out.append(Example("qa", q, f"`{action[2:]}`", PRIORITY["qa_final"], None,
                                   (s.index,)))
        path = args.get("file_path") or args.get("path")
        if isinstance(path, str) and path not in edited:
            edited.append(path)
    if edited:
        files = ", ".join(f"`{p}`" for p in edited[:8])
        for q in (f"Which files change when you {lower_first(task)} in {project}?",
                  f"In {project}, where is the code for this: {task}"):
            out.append(Example("qa", q, files, PRIORITY["qa_final"], None, ()))
    return out


# --- the compiler -----------------------------------------------------------------------------

def approx_tokens(text: str) -> int:
    """A tokenizer-free estimate for budgeting: about 3.5 characters per token for code."""
    return len(text) * 2 // 7 + 1


def compile_lessons(
    traj: Trajectory,
    settings: Settings,
    count_tokens: Callable[[str], int] | None = None,
) -> list[Example]:
    """All examples the settings switch on, cut to `lesson_token_budget` by priority.

    Kept examples stay in session order, so the adapter sees the story the way it happened.
    """
    project = traj.project_name
    task = clip(" ".join(traj.task.split()), TASK_CHARS) or "the session's task"
    examples: list[Example] = []
    if settings.lessons_episodes:
        examples += _episode_examples(traj, project, task)
    if settings.lessons_qa:
        examples += _episode_qa(traj, project, task)
        if settings.lessons_final:
            examples += _final_qa(traj, project, task)
    if settings.lessons_facts:
        examples += _fact_examples(traj, project, task)
    if settings.lessons_final:
        chunk_chars = max(400, settings.max_example_tokens * 3 - TASK_CHARS - 200)
        examples += _final_examples(traj, project, task, chunk_chars)
    examples = [_relative(ex, traj.project) for ex in examples]
    return apply_budget(examples, settings.lesson_token_budget, count_tokens or approx_tokens)


def _relative(ex: Example, project: str | None) -> Example:
    """Paths inside the project are written relative to it: lessons then hold in any clone."""
    root = (project or "").rstrip("/\\")
    if len(root) < 2:
        return ex
    prefix = root + "/"

    def rel(text: str) -> str:
        return text.replace(prefix, "")

    negative = rel(ex.negative) if ex.negative is not None else None
    return replace(ex, prompt=rel(ex.prompt), answer=rel(ex.answer), negative=negative)


def apply_budget(
    examples: Sequence[Example], budget: int, count_tokens: Callable[[str], int]
) -> list[Example]:
    """Keep the highest-priority examples whose tokens fit `budget`, in their original order."""
    order = sorted(range(len(examples)), key=lambda i: (-examples[i].priority, i))
    kept: set[int] = set()
    used = 0
    for i in order:
        cost = count_tokens(examples[i].prompt) + count_tokens(examples[i].answer) + 8
        if used + cost <= budget:
            kept.add(i)
            used += cost
    return [ex for i, ex in enumerate(examples) if i in kept]


def summary(examples: Sequence[Example]) -> dict[str, int]:
    """Counts per kind: `{"episode": 2, "attempt": 2, "qa": 9, "final": 1}`."""
    counts: dict[str, int] = {}
    for ex in examples:
        counts[ex.kind] = counts.get(ex.kind, 0) + 1
    return counts

