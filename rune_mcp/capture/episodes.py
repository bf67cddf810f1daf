"""Episodes: the attempt -> error -> diagnosis -> fix -> verification arcs of a session.

They carry what a session learned: the raw transcript mentions a failed approach as often
as the working one, so training on it teaches the mistake (see the design notes). Here an
error is a tool result flagged as one, or a command whose output clearly failed (traceback,
`FAILED`, `error:`, a non-zero exit code, a linter finding). The fix is the later action
that resolved it (an edit, or the same command with changed arguments), the diagnosis is
the assistant's text between the error and the fix, and the verification is the next run
of the same command (or edit of the same file) that succeeded. Repeated failures of the same
command collapse into one episode that ends at the passing run.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass

from rune_mcp.capture.tools import family_of
from rune_mcp.trajectory import Episode, Step

READ_ONLY_PROGRAMS = frozenset(
    {"ls", "cat", "head", "tail", "grep", "rg", "find", "pwd", "echo", "which", "wc", "tree",
     "less", "file", "stat", "du", "df", "env", "printenv", "whoami", "date", "type", "sed"}
)
READ_ONLY_GIT = frozenset({"status", "log", "diff", "show", "branch", "remote", "rev-parse"})

# Output that clearly failed, for command tools only (reading a file that mentions
# "error:" is not a failure). The regex only runs on output holding one of the needles.
_FAILURE_NEEDLES = ("Traceback", "FAIL", "ERROR", "rror", "xception", "fatal", "npm ERR",
                    "not found", "failed", "** (", "xit code", "xit status")
_FAILURE = re.compile(
    r"Traceback \(most recent call last\)|^\s*(?:FAILED|FAIL|ERROR)\b|^\s*(?:error|fatal)"
    r"(?:\[E?\d+\])?:|^\s*(?:\w+\.)*\w*(?:Error|Exception): |npm ERR!|^\*\* \(|"
    r"\b[1-9]\d* (?:failed|errors?)\b|[Ee]xit (?:code|status):? ?[1-9]|command not found",
    re.MULTILINE,
)
# A linter finding: `app.py:12:5: F401 'os' imported but unused`.
_LINT = re.compile(r"^\S+\.\w+:\d+:\d+: [A-Z]+\d+ ", re.MULTILINE)
# Errors that are refusals or interruptions, not technical failures worth a lesson.
_NOT_FAILURE = re.compile(
    r"requested permissions|doesn't want to proceed|user rejected|Request interrupted|"
    r"tool use was rejected|user denied",
    re.IGNORECASE,
)
_FILE_KEYS = ("file_path", "path", "target_file", "notebook_path", "filename", "file")
_ERROR_CHARS = 2_000
_DIAGNOSIS_CHARS = 1_500
_ACTION_CHARS = 1_200
_WINDOW = 60  # tool calls searched for a fix and its verification


def command_text(call: Step) -> str:
    """The shell command of a command call: `{"command": ["bash", "-lc", "ls"]}` -> `"ls"`."""
    data = call.input or {}
    cmd = data.get("command", data.get("cmd", data.get("input", "")))
    if isinstance(cmd, list):
        parts = [str(p) for p in cmd]
        if len(parts) >= 3 and parts[0].endswith(("bash", "sh", "zsh")) and parts[1] in (
            "-lc", "-c"
        ):
            return parts[2]
        return " ".join(parts)
    return str(cmd)


def _program_key(command: str) -> str:
    """`"cd app && python -m pytest -x tests"` -> `"python -m pytest"`; `"npm test"` -> same."""
    segment = re.split(r"&&|\|\||;|\|", command.strip())
    words: list[str] = []
    for seg in segment:
        try:
            words = shlex.split(seg)
        except ValueError:
            words = seg.split()
        words = [w for w in words if not re.fullmatch(r"\w+=\S*", w)]
        if words and words[0] not in ("cd", "source", "export", "set"):
            break
    if not words:
        return command.strip()[:80]
    key = [words[0].rsplit("/", 1)[-1]]
    rest = words[1:]
    if key[0] in ("uv", "poetry", "npx", "pnpm", "yarn", "bunx") and rest and rest[0] in (
        "run", "exec", "dlx"
    ):
        key.append(rest.pop(0))
    if rest and rest[0] == "-m" and len(rest) > 1:
        key += rest[:2]
    elif rest and not rest[0].startswith("-") and "/" not in rest[0] and "." not in rest[0]:
        key.append(rest[0])
    return " ".join(key)


def file_of(call: Step) -> str | None:
    data = call.input or {}
    for key in _FILE_KEYS:
        if isinstance(data.get(key), str):
            return str(data[key])
    patch = data.get("input") if isinstance(data.get("input"), str) else None
    if patch:
        found = re.search(r"^\*\*\* (?:Update|Add) File: (.+)$", patch, re.MULTILINE)
        if found:
            return found.group(1).strip()
    return None


def action_key(call: Step) -> str | None:
    """What "the same action again" means: the command's program, or the edited file."""
    family = family_of(call)
    if family == "run":
        return "cmd:" + _program_key(command_text(call))
    if family == "edit":
        path = file_of(call)
        return f"file:{path}" if path else None
    path = file_of(call)
    return f"{call.tool}:{path}" if path else None


def render_action(call: Step) -> str:
    """A call as a short readable action: `$ pytest -x`, `edit app.py: - old / + new`."""
    family = family_of(call)
    data = call.input or {}
    if family == "run":
        text = "$ " + command_text(call)
    elif family == "edit" and isinstance(data.get("old_string"), str):
        text = (f"edit {file_of(call)}:\n- {data['old_string']}\n+ "
                f"{data.get('new_string', '')}")
    elif family == "edit" and isinstance(data.get("content"), str):
        text = f"write {file_of(call)}:\n{data['content']}"
    elif family == "edit" and isinstance(data.get("edits"), list):
        text = f"edit {file_of(call)}:\n" + "\n".join(
            f"- {e.get('old_string', '')}\n+ {e.get('new_string', '')}"
            for e in data["edits"] if isinstance(e, dict)
        )
    else:
        args = json.dumps(data, ensure_ascii=False, default=str)
        text = f"{call.tool} {args}"
    return _shorten(text, _ACTION_CHARS)


def _shorten(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n[...]\n" + text[-half:]


def is_failure(call: Step | None, result: Step) -> bool:
    """True when a result failed: flagged as an error, or a command's output that failed."""
    output = result.output or ""
    if _NOT_FAILURE.search(output[:500]):
        return False
    if result.is_error:
        return True
    family = family_of(call if call else result)
    if family != "run":
        return False
    if any(n in output for n in _FAILURE_NEEDLES) and _FAILURE.search(output):
        return True
    return ": " in output and bool(_LINT.search(output))


def analyse(steps: list[Step]) -> tuple[list[Episode], list[int]]:
    """Episodes and final actions together, pairing calls with results once."""
    pairs = _pairs(steps)
    return detect_episodes(steps, pairs), final_actions(steps, pairs)


@dataclass
class _Pair:
    call: Step
    result: Step | None
    failed: bool
    key: str | None


def _pairs(steps: list[Step]) -> list[_Pair]:
    """Tool calls with their results, by tool id or else by order."""
    by_id = {s.tool_id: s for s in steps if s.kind == "tool_result" and s.tool_id}
    pending: list[Step] = []
    pairs: list[_Pair] = []
    results: dict[int, Step] = {}
    for step in steps:
        if step.kind == "tool_call":
            pending.append(step)
        elif step.kind == "tool_result" and not step.tool_id and pending:
            results[pending.pop(0).index] = step
        elif step.kind == "tool_result" and step.tool_id:
            pending = [p for p in pending if p.tool_id != step.tool_id]
    for step in steps:
        if step.kind != "tool_call":
            continue
        result = by_id.get(step.tool_id) if step.tool_id else results.get(step.index)
        failed = result is not None and is_failure(step, result)
        pairs.append(_Pair(step, result, failed, action_key(step)))
    return pairs


def _diagnosis(steps: list[Step], after: int, before: int) -> str:
    texts = [s.text for s in steps[after + 1 : before] if s.kind == "assistant" and s.text]
    if not texts:
        texts = [s.text for s in steps[after + 1 : before] if s.kind == "thinking" and s.text]
    return _shorten("\n".join(texts).strip(), _DIAGNOSIS_CHARS)


def _episode(steps: list[Step], pairs: list[_Pair], start: int) -> tuple[Episode | None, int]:
    """The episode opened by the failing pair `start`; returns it and the last pair used."""
    first = pairs[start]
    last_error, verify, fix = first, None, None
    end = start
    for j in range(start + 1, min(len(pairs), start + _WINDOW)):
        pair = pairs[j]
        if pair.key == first.key:
            end = j
            if pair.failed:
                last_error, fix = pair, None
                continue
            verify = pair
            break
        if not pair.failed and family_of(pair.call) == "edit":
            fix = pair
        elif not pair.failed and fix is None and family_of(pair.call) == "run" \
                and pair.key is not None:
            fix = pair  # e.g. installing a missing dependency
    if fix is None and verify is not None and (
        verify.call.input != last_error.call.input or family_of(first.call) == "edit"
    ):
        fix = verify  # the same action with changed arguments, or an edit that now applies
    if fix is None or last_error.result is None:
        return None, end
    error_index = last_error.result.index
    return Episode(
        attempt_step=first.call.index,
        action=render_action(first.call),
        error=_shorten((last_error.result.output or "").strip(), _ERROR_CHARS),
        diagnosis=_diagnosis(steps, error_index, fix.call.index),
        fix_step=fix.call.index,
        fix=render_action(fix.call),
        verify_step=verify.result.index if verify and verify.result else None,
        verification=_shorten((verify.result.output or "").strip(), _ERROR_CHARS)
        if verify and verify.result else None,
    ), end


def detect_episodes(steps: list[Step], pairs: list[_Pair] | None = None) -> list[Episode]:
    """All resolved error episodes of a session, in order (an error never fixed is dropped)."""
    pairs = _pairs(steps) if pairs is None else pairs
    episodes: list[Episode] = []
    i = 0
    while i < len(pairs):
        pair = pairs[i]
        if pair.failed and pair.key is not None:
            episode, end = _episode(steps, pairs, i)
            if episode is not None:
                episodes.append(episode)
                i = max(end, i) + 1
                continue
        i += 1
    return episodes


def _changes_state(pair: _Pair) -> bool:
    family = family_of(pair.call)
    if family == "edit":
        return True
    if family != "run":
        return False
    words = _program_key(command_text(pair.call)).split()
    if not words or words[0] in READ_ONLY_PROGRAMS:
        return False
    return not (words[0] == "git" and len(words) > 1 and words[1] in READ_ONLY_GIT)


def final_actions(steps: list[Step], pairs: list[_Pair] | None = None) -> list[int]:
    """Step indices of the working actions: successful edits, and the last successful run
    of each state-changing command (earlier runs of the same command are superseded)."""
    kept: dict[str, int] = {}
    edits: list[int] = []
    for pair in _pairs(steps) if pairs is None else pairs:
        if pair.failed or pair.result is None or not _changes_state(pair):
            continue
        if family_of(pair.call) == "edit":
            edits.append(pair.call.index)
        elif pair.key is not None:
            kept.pop(pair.key, None)
            kept[pair.key] = pair.call.index
    return sorted(edits + list(kept.values()))
