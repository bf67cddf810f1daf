"""Whether a session may be captured at all: excluded projects, and paused automatic capture.

Two controls, checked before a session is parsed into the queue:

- **Exclusion** is for projects that must never be remembered: a path or glob in
  `exclude_projects` (or in `ignore_projects`, its older name: both apply), or a `.runeignore`
  file in the project folder or any folder above it. It refuses every way in, automatic or
  explicit: the watcher skips the session, a hook queues nothing, and `rune remember`,
  `rune jobs add` and the `remember_session` tool answer with one sentence saying why.
- **Pause** (`rune pause [--project P]`, undone by `rune resume [--project P]`) stops
  *automatic* capture, the watcher and the agents' hooks, everywhere or for one project (the
  folder and everything under it). An explicit request still works while capture is paused:
  asking is consent, and `rune remember` says that capture is paused when it does it.

A session is checked against its project (the folder its agent ran in, as the transcript or
the hook event names it) and against its transcript's path (globs only: a Cursor transcript
that names no project can still be excluded by where it lies). The queue checks when a job is
added, and the worker checks again once the transcript is parsed, because a hook's job waits
for the session to go quiet and capture may have been paused, or the project excluded, since.

The pause state is `RUNE_HOME/capture.json`. Each change reads it, edits it and replaces it
atomically while holding `RUNE_HOME/locks/capture.lock`, so several processes pausing and
resuming at once never lose each other's entries and a reader never sees half a file. A file
that cannot be read counts as paused everywhere (it may have said so); `rune resume` rewrites
it.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.errors import InputError

AUTOMATIC_SOURCES = frozenset({"hook", "watcher"})
STATE_FILE = "capture.json"
LOCK_FILE = Path("locks") / "capture.lock"
IGNORE_FILE = ".runeignore"

Candidate = str | Path | None


class CaptureRefusedError(InputError):
    """A session of an excluded project, or automatic capture while it is paused."""


# --- exclusion -------------------------------------------------------------------------------


def _norm(path: Candidate) -> str | None:
    if path is None or not str(path).strip():
        return None
    return os.path.normpath(os.path.expanduser(str(path)))


def _matches(candidate: str, pattern: str) -> bool:
    """A glob match, the folder itself, or anything under it."""
    pat = os.path.normpath(os.path.expanduser(pattern))
    return fnmatch.fnmatch(candidate, pat) or candidate == pat or candidate.startswith(
        pat.rstrip("/") + "/"
    )


def exclusion(settings: Settings, project: Candidate, paths: Sequence[Candidate] = ()) -> str | None:
    """Why this session is never captured (one sentence), or None."""
    folder = _norm(project)
    candidates = [c for c in (folder, *(_norm(p) for p in paths)) if c]
    for name in ("exclude_projects", "ignore_projects"):
        for pattern in getattr(settings, name):
            for cand in candidates:
                if _matches(cand, pattern):
                    what = f"project {cand}" if cand == folder else f"transcript {cand}"
                    return (f"{what} matches {name} entry {pattern!r}; Rune never remembers "
                            "it (remove the entry to change that).")
    if folder:
        for parent in (Path(folder), *Path(folder).parents):
            if (parent / IGNORE_FILE).exists():
                return (f"{parent / IGNORE_FILE} opts project {folder} out; Rune never "
                        "remembers it (delete the file to change that).")
    return None


# --- pause -------------------------------------------------------------------------------------


def _state_path(settings: Settings) -> Path:
    return settings.home / STATE_FILE


def read_state(settings: Settings) -> dict[str, Any]:
    """`{"everywhere": {"since": t} | None, "projects": {path: {"since": t}}, "problem": ...}`."""
    path = _state_path(settings)
    empty: dict[str, Any] = {"everywhere": None, "projects": {}, "problem": None}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return empty
    except (OSError, ValueError) as exc:
        return {**empty, "everywhere": {"since": None},
                "problem": f"{path} is unreadable ({exc}); `rune resume` rewrites it."}
    projects = data.get("projects") if isinstance(data, dict) else None
    if not isinstance(projects, dict) or not all(isinstance(v, dict) for v in projects.values()):
        return {**empty, "everywhere": {"since": None},
                "problem": f"{path} is not Rune's capture state; `rune resume` rewrites it."}
    everywhere = data.get("everywhere")
    return {"everywhere": everywhere if isinstance(everywhere, dict) else None,
            "projects": {str(k): v for k, v in projects.items()}, "problem": None}


def _pause_key(project: Path) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(project))))


def _forms(path: str) -> set[str]:
    """A folder as written and with its links resolved: a session's recorded cwd may be
    either."""
    return {path, os.path.realpath(path)}


def pause_reason(settings: Settings, project: Candidate) -> str | None:
    """Why automatic capture of this project is paused (one sentence), or None."""
    state = read_state(settings)
    if state["everywhere"] is not None:
        return ("automatic capture is paused everywhere (`rune resume` restarts it); "
                "`rune remember PATH` still remembers a session you name.")
    folder = _norm(project)
    if folder is None:
        return None
    mine = _forms(folder)
    for paused in state["projects"]:
        if any(m == p or m.startswith(p.rstrip("/") + "/") for m in mine for p in _forms(paused)):
            return (f"automatic capture is paused for {paused} (`rune resume --project "
                    f"{paused}` restarts it); `rune remember PATH` still remembers a session "
                    "you name.")
    return None


def _change(settings: Settings, edit: Any) -> dict[str, Any]:
    from rune_mcp.fsutil import atomic_write_json, locked  # filelock: only changes need it

    with locked(settings.home / LOCK_FILE, timeout=30.0):
        state = read_state(settings)
        edit(state)
        atomic_write_json(_state_path(settings), {
            "format_version": 1, "everywhere": state["everywhere"], "projects": state["projects"],
        })
        return state


def pause(settings: Settings, project: Path | None = None) -> str:
    """Pause automatic capture everywhere (None) or for one project; returns what was done."""
    now = {"since": time.time()}
    if project is None:
        def edit(state: dict[str, Any]) -> None:
            state["everywhere"] = state["everywhere"] or now

        _change(settings, edit)
        return "automatic capture paused everywhere; `rune resume` restarts it."
    key = _pause_key(project)

    def edit_one(state: dict[str, Any]) -> None:
        state["projects"].setdefault(key, now)

    _change(settings, edit_one)
    return f"automatic capture paused for {key}; `rune resume --project {key}` restarts it."


def resume(settings: Settings, project: Path | None = None) -> str:
    """Resume automatic capture everywhere (every pause goes) or for one project."""
    if project is None:
        def edit(state: dict[str, Any]) -> None:
            state["everywhere"], state["projects"] = None, {}

        _change(settings, edit)
        return "automatic capture resumed everywhere."
    key = _pause_key(project)

    def edit_one(state: dict[str, Any]) -> None:
        state["projects"].pop(key, None)

    state = _change(settings, edit_one)
    if state["everywhere"] is not None:
        return (f"{key} is no longer paused on its own, but capture is still paused "
                "everywhere; `rune resume` restarts it everywhere.")
    return f"automatic capture resumed for {key}."


# --- the checks --------------------------------------------------------------------------------


def refusal(
    settings: Settings, project: Candidate, source: str, paths: Sequence[Candidate] = ()
) -> str | None:
    """Why a session from `source` (`hook`, `watcher`, `mcp`, `cli`, ...) is not captured:
    exclusion for every source, pause for the automatic ones; None when it may be."""
    why = exclusion(settings, project, paths)
    if why is None and source in AUTOMATIC_SOURCES:
        why = pause_reason(settings, project)
    return why


def check(
    settings: Settings, project: Candidate, source: str, paths: Sequence[Candidate] = ()
) -> None:
    """Raise CaptureRefusedError with `refusal`'s sentence when there is one."""
    why = refusal(settings, project, source, paths)
    if why is not None:
        raise CaptureRefusedError(why[0].upper() + why[1:])


def capture_state(settings: Settings) -> dict[str, Any]:
    """What `rune status` and the dashboard show: pauses (with ISO times) and exclusions."""
    state = read_state(settings)

    def when(entry: dict[str, Any] | None) -> str | None:
        since = entry.get("since") if entry else None
        if not isinstance(since, int | float):
            return None
        return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(since))

    return {
        "paused_everywhere": state["everywhere"] is not None,
        "paused_since": when(state["everywhere"]),
        "paused_projects": [{"project": p, "since": when(v)}
                            for p, v in sorted(state["projects"].items())],
        "exclude_projects": [*settings.exclude_projects, *settings.ignore_projects],
        "problem": state["problem"],
    }


def capture_text(state: dict[str, Any]) -> str:
    """`capture_state` in a line or two, for people."""
    if state["paused_everywhere"]:
        line = "capture: automatic capture paused everywhere"
        line += f" since {state['paused_since']}" if state["paused_since"] else ""
    elif state["paused_projects"]:
        line = "capture: automatic capture on, paused for " + ", ".join(
            p["project"] for p in state["paused_projects"])
    else:
        line = "capture: automatic capture on"
    excluded = state["exclude_projects"]
    line += f"; never remembered: {', '.join(excluded)}" if excluded else ""
    lines = [line + "."]
    if state["problem"]:
        lines.append(f"problem: {state['problem']}")
    return "\n".join(lines)
