"""What every agent's installer shares: Rune's server entry and hook command, and safe edits
of an agent's JSON config files.

A user's config holds other servers and hooks they care about, so installing merges into the
existing JSON and never drops a key, refuses a file it cannot parse instead of overwriting
it, saves the previous content as `<file>.rune-backup` before changing it, writes
atomically, and does nothing the second time. Uninstalling removes only Rune's own entries.
Where each agent keeps those files is in its own module (`claude_code.py`, `cursor.py`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rune_mcp.errors import ConfigError, UsageError

SERVER_NAME = "rune"
BACKUP_SUFFIX = ".rune-backup"
# Rune's own hook commands (`<rune> hook <agent>`), whatever path the executable had when
# they were written.
_OUR_HOOK = re.compile(r"(^|[\s/\\])(rune|rune_mcp)(\.exe)?\b.*\bhook [a-z][a-z0-9-]*\s*$")


def rune_command() -> list[str]:
    """How an agent should start this Rune: the `rune` script beside this Python, or
    `python -m rune_mcp` when there is none (an absolute path: agents do not see a venv)."""
    script = Path(sys.executable).parent / "rune"
    if script.is_file():
        return [str(script)]
    found = shutil.which("rune")
    if found:
        return [str(Path(found).resolve())]
    return [sys.executable, "-m", "rune_mcp"]


def server_env() -> dict[str, str]:
    """The variables the server needs to find this library (only those set here)."""
    return {k: os.environ[k] for k in ("RUNE_HOME", "RUNE_CACHE_DIR") if os.environ.get(k)}


# --- JSON files --------------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any]:
    """An agent's config file as a dict ({} when absent); unparsable files are refused."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}); check its permissions.") from exc
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid JSON (line {exc.lineno}); fix it, then run the command again."
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a JSON object; fix it, then run again.")
    return data


def write_json(path: Path, data: dict[str, Any]) -> bool:
    """Write `data` if it differs from the file; back up the old content first.

    Returns whether the file changed. Keeps the file's permission bits (`~/.claude.json`
    is private).
    """
    from rune_mcp.fsutil import atomic_write_text  # it loads filelock; only writing needs it

    old = read_json(path)
    if path.exists() and old == data:
        return False
    mode = 0o644
    if path.exists():
        mode = path.stat().st_mode & 0o777
        shutil.copy2(path, path.with_name(path.name + BACKUP_SUFFIX))
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", mode)
    return True


def update(path: Path, change: Callable[[dict[str, Any]], None]) -> bool:
    """Apply `change` to the file's JSON and write it back only if something changed."""
    data = read_json(path)
    before = json.dumps(data, sort_keys=True)
    change(data)
    if json.dumps(data, sort_keys=True) == before:
        return False
    return write_json(path, data)


def section(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    """`data[key]` as an object (created when absent); any other value is refused."""
    value = data.setdefault(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' is not a JSON object; fix it, then run again.")
    return value


# --- server entries ----------------------------------------------------------------------


def stdio_entry(with_type: bool = True) -> dict[str, Any]:
    """Rune's MCP server entry: `{"type": "stdio", "command": ..., "args": [..., "serve"]}`."""
    cmd = rune_command()
    entry: dict[str, Any] = {"command": cmd[0], "args": [*cmd[1:], "serve"]}
    if with_type:
        entry = {"type": "stdio", **entry}
    env = server_env()
    if env:
        entry["env"] = env
    return entry


def set_server(path: Path, entry: dict[str, Any], *keys: str) -> bool:
    """Put Rune's entry under `<keys...>.mcpServers.rune`; returns whether the file changed."""
    def change(data: dict[str, Any]) -> None:
        node = data
        for key in keys:
            node = section(node, key, path)
        section(node, "mcpServers", path)[SERVER_NAME] = entry

    return update(path, change)


def drop_server(path: Path, *keys: str) -> bool:
    """Remove `<keys...>.mcpServers.rune`; returns whether the file changed."""
    if not path.exists():
        return False

    def change(data: dict[str, Any]) -> None:
        node: Any = data
        for key in (*keys, "mcpServers"):
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(SERVER_NAME, None)

    return update(path, change)


# --- hooks -------------------------------------------------------------------------------


def hook_command(agent: str) -> str:
    """The shell command an agent runs for its hook: `/path/to/rune hook claude-code`."""
    return " ".join(shlex.quote(part) for part in [*rune_command(), "hook", agent])


def is_rune_hook(command: Any) -> bool:
    """Whether a hook command is one of Rune's (so uninstall may remove it)."""
    return isinstance(command, str) and bool(_OUR_HOOK.search(command))


def hook_list(hooks: dict[str, Any], event: str, path: Path) -> list[Any]:
    """`hooks[event]` as a list (created when absent); any other value is refused."""
    entries = hooks.setdefault(event, [])
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: hooks.{event} is not a list; fix it, then run again.")
    return entries


def without_rune(entries: list[Any], keep: str | None = None) -> list[Any]:
    """`entries` (hook objects with a `command`) less Rune's own, but the one to `keep`."""
    return [
        h for h in entries
        if not (isinstance(h, dict) and is_rune_hook(h.get("command"))
                and h.get("command") != keep)
    ]


def drop_hooks(
    path: Path, strip: Callable[[list[Any]], list[Any]], drop_empty: bool = False
) -> bool:
    """Remove Rune's hooks from every event of the file's `hooks` object: `strip` returns an
    event's list without them, an event left with none is removed, and with `drop_empty` so
    is a `hooks` object left empty. Returns whether the file changed."""
    if not path.exists():
        return False

    def change(data: dict[str, Any]) -> None:
        hooks = data.get("hooks")
        if not isinstance(hooks, dict):
            return
        for event in list(hooks):
            if isinstance(hooks[event], list):
                hooks[event] = strip(hooks[event])
                if not hooks[event]:
                    del hooks[event]
        if drop_empty and not hooks:
            del data["hooks"]

    return update(path, change)


def check_scope(scope: str, allowed: tuple[str, ...], target: str) -> None:
    """Refuse a scope the agent does not have."""
    if scope not in allowed:
        raise UsageError(f"{target} scope must be one of {', '.join(allowed)}; got {scope!r}.")
