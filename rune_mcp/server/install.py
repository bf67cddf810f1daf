"""`rune install` / `rune uninstall`: register Rune's MCP server and hooks with an editor.

A user's editor config holds other servers and hooks they care about, so installing merges
into the existing JSON and never drops a key, refuses a file it cannot parse instead of
overwriting it, saves the previous content as `<file>.rune-backup` before changing it,
writes atomically, and does nothing the second time. Uninstalling removes only Rune's own
entries.

Claude Code: the server goes through `claude mcp add` when that CLI is on PATH (so Claude
Code records it where it wants), otherwise into `.mcp.json` (project scope) or
`~/.claude.json` (user and local scope, the files the CLI itself writes); the hooks go to
the settings file of the same scope. Cursor: `.cursor/mcp.json` and `.cursor/hooks.json` in
the project, or under `~/.cursor` for user scope.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.errors import ConfigError, UsageError
from rune_mcp.fsutil import atomic_write_text

log = logging.getLogger(__name__)

SERVER_NAME = "rune"
CLAUDE_EVENTS = ("SessionEnd", "Stop", "PreCompact")
CLAUDE_SCOPES = ("user", "project", "local")
CURSOR_SCOPES = ("project", "user")
BACKUP_SUFFIX = ".rune-backup"
# Rune's own hook commands, whatever path the executable had when they were written.
_OUR_HOOK = re.compile(r"(^|[\s/\\])(rune|rune_mcp)(\.exe)?\b.*\bhook (claude-code|cursor)\s*$")


def rune_command() -> list[str]:
    """How an editor should start this Rune: the `rune` script beside this Python, or
    `python -m rune_mcp` when there is none (an absolute path: editors do not see a venv)."""
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
    """An editor config file as a dict ({} when absent); unparsable files are refused."""
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
    old = read_json(path)
    if path.exists() and old == data:
        return False
    mode = 0o644
    if path.exists():
        mode = path.stat().st_mode & 0o777
        shutil.copy2(path, path.with_name(path.name + BACKUP_SUFFIX))
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n", mode)
    return True


def _update(path: Path, change: Callable[[dict[str, Any]], None]) -> bool:
    data = read_json(path)
    before = json.dumps(data, sort_keys=True)
    change(data)
    if json.dumps(data, sort_keys=True) == before:
        return False
    return write_json(path, data)


def _section(data: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = data.setdefault(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' is not a JSON object; fix it, then run again.")
    return value


# --- server entries ----------------------------------------------------------------------


def stdio_entry(with_type: bool = True) -> dict[str, Any]:
    cmd = rune_command()
    entry: dict[str, Any] = {"command": cmd[0], "args": [*cmd[1:], "serve"]}
    if with_type:
        entry = {"type": "stdio", **entry}
    env = server_env()
    if env:
        entry["env"] = env
    return entry


def _set_server(path: Path, entry: dict[str, Any], *keys: str) -> bool:
    def change(data: dict[str, Any]) -> None:
        node = data
        for key in keys:
            node = _section(node, key, path)
        _section(node, "mcpServers", path)[SERVER_NAME] = entry

    return _update(path, change)


def _drop_server(path: Path, *keys: str) -> bool:
    if not path.exists():
        return False

    def change(data: dict[str, Any]) -> None:
        node: Any = data
        for key in (*keys, "mcpServers"):
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(SERVER_NAME, None)

    return _update(path, change)


# --- hooks -------------------------------------------------------------------------------


def hook_command(agent: str) -> str:
    return " ".join(shlex.quote(part) for part in [*rune_command(), "hook", agent])


def is_rune_hook(command: Any) -> bool:
    return isinstance(command, str) and bool(_OUR_HOOK.search(command))


def _add_claude_hooks(path: Path) -> bool:
    command = hook_command("claude-code")

    def change(data: dict[str, Any]) -> None:
        hooks = _section(data, "hooks", path)
        for event in CLAUDE_EVENTS:
            groups = hooks.setdefault(event, [])
            if not isinstance(groups, list):
                raise ConfigError(f"{path}: hooks.{event} is not a list; fix it, then run again.")
            _strip_rune_hooks(groups, keep=command)
            if not any(_group_has(g, command) for g in groups):
                groups.append(
                    {"hooks": [{"type": "command", "command": command, "timeout": 10}]}
                )

    return _update(path, change)


def _group_has(group: Any, command: str) -> bool:
    return isinstance(group, dict) and any(
        isinstance(h, dict) and h.get("command") == command for h in group.get("hooks") or []
    )


def _strip_rune_hooks(groups: list[Any], keep: str | None = None) -> None:
    """Remove Rune's hook commands (but `keep`) from Claude Code hook groups, in place; a
    group left with no hook is removed too."""
    for group in list(groups):
        if not isinstance(group, dict) or not isinstance(group.get("hooks"), list):
            continue
        kept = [
            h for h in group["hooks"]
            if not (isinstance(h, dict) and is_rune_hook(h.get("command"))
                    and h.get("command") != keep)
        ]
        if len(kept) != len(group["hooks"]):
            if kept:
                group["hooks"] = kept
            else:
                groups.remove(group)


def _drop_claude_hooks(path: Path) -> bool:
    if not path.exists():
        return False

    def change(data: dict[str, Any]) -> None:
        hooks = data.get("hooks")
        if not isinstance(hooks, dict):
            return
        for event in list(hooks):
            if isinstance(hooks[event], list):
                _strip_rune_hooks(hooks[event])
                if not hooks[event]:
                    del hooks[event]
        if not hooks:
            del data["hooks"]

    return _update(path, change)


def _add_cursor_hooks(path: Path) -> bool:
    command = hook_command("cursor")

    def change(data: dict[str, Any]) -> None:
        data.setdefault("version", 1)
        hooks = _section(data, "hooks", path)
        stop = hooks.setdefault("stop", [])
        if not isinstance(stop, list):
            raise ConfigError(f"{path}: hooks.stop is not a list; fix it, then run again.")
        stop[:] = [
            h for h in stop
            if not (isinstance(h, dict) and is_rune_hook(h.get("command"))
                    and h.get("command") != command)
        ]
        if not any(isinstance(h, dict) and h.get("command") == command for h in stop):
            stop.append({"command": command})

    return _update(path, change)


def _drop_cursor_hooks(path: Path) -> bool:
    if not path.exists():
        return False

    def change(data: dict[str, Any]) -> None:
        hooks = data.get("hooks")
        if not isinstance(hooks, dict):
            return
        for event in list(hooks):
            if isinstance(hooks[event], list):
                hooks[event] = [
                    h for h in hooks[event]
                    if not (isinstance(h, dict) and is_rune_hook(h.get("command")))
                ]
                if not hooks[event]:
                    del hooks[event]

    return _update(path, change)


# --- Claude Code -------------------------------------------------------------------------


def claude_settings_file(settings: Settings, scope: str, project: Path) -> Path:
    if scope == "user":
        return settings.claude_dir / "settings.json"
    if scope == "project":
        return project / ".claude" / "settings.json"
    return project / ".claude" / "settings.local.json"


def claude_state_file() -> Path:
    """`~/.claude.json`, where Claude Code keeps user- and local-scope servers (inside
    CLAUDE_CONFIG_DIR when that is set)."""
    env = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(env) / ".claude.json" if env else Path.home() / ".claude.json"


def _claude_cli() -> str | None:
    return shutil.which("claude")


def _run_claude(args: list[str], project: Path) -> subprocess.CompletedProcess[str]:
    cli = _claude_cli()
    assert cli is not None
    try:
        return subprocess.run(
            [cli, "mcp", *args], cwd=project, capture_output=True, text=True, timeout=120,
            stdin=subprocess.DEVNULL, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(
            f"`claude mcp {args[0]}` did not run ({exc}); is Claude Code installed?"
        ) from exc


def _claude_add_via_cli(scope: str, project: Path) -> str:
    entry = stdio_entry()
    _run_claude(["remove", "--scope", scope, SERVER_NAME], project)  # re-add: idempotent
    env_args = [arg for k, v in entry.get("env", {}).items() for arg in ("-e", f"{k}={v}")]
    proc = _run_claude(
        # the name goes first: `-e` takes every value up to the next option
        ["add", SERVER_NAME, "--scope", scope, *env_args, "--", entry["command"], *entry["args"]],
        project,
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise ConfigError(
            f"`claude mcp add` failed ({detail[-1] if detail else proc.returncode}); "
            "run it by hand or use --no-cli."
        )
    return f"registered the rune server with `claude mcp add --scope {scope}`"


def _claude_server_file(scope: str, project: Path) -> tuple[Path, tuple[str, ...]]:
    if scope == "project":
        return project / ".mcp.json", ()
    if scope == "user":
        return claude_state_file(), ()
    return claude_state_file(), ("projects", str(project))


def install_claude_code(
    settings: Settings, scope: str = "user", project: Path | None = None,
    use_cli: bool | None = None,
) -> list[str]:
    """Register the server and the hooks for one scope; returns what was done, one line each."""
    _check_scope(scope, CLAUDE_SCOPES, "claude-code")
    project = (project or Path.cwd()).resolve()
    done: list[str] = []
    if use_cli is None:
        use_cli = _claude_cli() is not None
    if use_cli:
        done.append(_claude_add_via_cli(scope, project))
    else:
        path, keys = _claude_server_file(scope, project)
        changed = _set_server(path, stdio_entry(), *keys)
        done.append(f"{'wrote' if changed else 'kept'} the rune server in {path}")
    hooks_file = claude_settings_file(settings, scope, project)
    changed = _add_claude_hooks(hooks_file)
    verb = "added" if changed else "kept"
    done.append(f"{verb} hooks {', '.join(CLAUDE_EVENTS)} in {hooks_file}")
    return done


def uninstall_claude_code(
    settings: Settings, scope: str = "user", project: Path | None = None,
    use_cli: bool | None = None,
) -> list[str]:
    _check_scope(scope, CLAUDE_SCOPES, "claude-code")
    project = (project or Path.cwd()).resolve()
    done: list[str] = []
    if use_cli is None:
        use_cli = _claude_cli() is not None
    if use_cli:
        proc = _run_claude(["remove", "--scope", scope, SERVER_NAME], project)
        done.append(
            "removed the rune server with `claude mcp remove`" if proc.returncode == 0
            else "the rune server was not registered with Claude Code"
        )
    path, keys = _claude_server_file(scope, project)
    if _drop_server(path, *keys):
        done.append(f"removed the rune server from {path}")
    hooks_file = claude_settings_file(settings, scope, project)
    if _drop_claude_hooks(hooks_file):
        done.append(f"removed Rune's hooks from {hooks_file}")
    return done or ["nothing of Rune's was installed for this scope"]


# --- Cursor ------------------------------------------------------------------------------


def cursor_folder(settings: Settings, scope: str, project: Path) -> Path:
    return settings.cursor_dir if scope == "user" else project / ".cursor"


def install_cursor(
    settings: Settings, scope: str = "project", project: Path | None = None
) -> list[str]:
    _check_scope(scope, CURSOR_SCOPES, "cursor")
    folder = cursor_folder(settings, scope, (project or Path.cwd()).resolve())
    mcp_file, hooks_file = folder / "mcp.json", folder / "hooks.json"
    changed = _set_server(mcp_file, stdio_entry(with_type=False))
    done = [f"{'wrote' if changed else 'kept'} the rune server in {mcp_file}"]
    changed = _add_cursor_hooks(hooks_file)
    done.append(f"{'added' if changed else 'kept'} the stop hook in {hooks_file}")
    return done


def uninstall_cursor(
    settings: Settings, scope: str = "project", project: Path | None = None
) -> list[str]:
    _check_scope(scope, CURSOR_SCOPES, "cursor")
    folder = cursor_folder(settings, scope, (project or Path.cwd()).resolve())
    done = []
    if _drop_server(folder / "mcp.json"):
        done.append(f"removed the rune server from {folder / 'mcp.json'}")
    if _drop_cursor_hooks(folder / "hooks.json"):
        done.append(f"removed Rune's hook from {folder / 'hooks.json'}")
    return done or ["nothing of Rune's was installed for this scope"]


def _check_scope(scope: str, allowed: tuple[str, ...], target: str) -> None:
    if scope not in allowed:
        raise UsageError(f"{target} scope must be one of {', '.join(allowed)}; got {scope!r}.")
