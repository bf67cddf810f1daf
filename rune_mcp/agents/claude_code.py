"""Claude Code: its session transcripts, where they live, its hooks, and `rune install`.

Transcripts are `<claude_dir>/projects/<escaped cwd>/<session>.jsonl`. Each line is one event;
the conversation is a tree through `parentUuid`. The branch that was kept is the path from the
last line back to the root, bridging compactions through `logicalParentUuid` and, where a link
is broken (a damaged line, a compaction naming a line the file lacks), file order
(`capture.chain`); parallel tool calls hang off that path as siblings, so lines sharing an API
`message.id` with the path, and tool results answering calls on it, are kept too. One API
message is split over several lines that share `message.id`; their blocks are merged with
duplicates removed. Subagents appear either inline (`isSidechain` chains, older versions) or as
`<session>/subagents/agent-*.jsonl` files; both become nested trajectories. Compaction
(`agent-acompact-*`, compact summaries) is noise and is skipped.

Hooks: `SessionEnd` means the session is over (the job is ready at once); `Stop` and
`PreCompact` end a turn but the user may go on, so the job waits `idle_seconds` and every later
turn pushes it back (Ctrl+C fires no `SessionEnd`); `SessionStart` is answered with Rune's note.

Install: the server goes through `claude mcp add` when that CLI is on PATH (so Claude Code
records it where it wants), otherwise into `.mcp.json` (project scope) or `~/.claude.json`
(user and local scope, the files the CLI itself writes); the hooks go to the settings file of
the same scope.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from rune_mcp.agents.base import (
    CLAUDE_START,
    Agent,
    HookJob,
    Installer,
    InstallTarget,
    Match,
    Place,
    Sample,
    SkipEventError,
)
from rune_mcp.agents.installing import (
    SERVER_NAME,
    drop_hooks,
    drop_server,
    hook_command,
    hook_list,
    section,
    set_server,
    stdio_entry,
    update,
    without_rune,
)
from rune_mcp.capture.base import Builder, as_text, decode, read_jsonl
from rune_mcp.capture.budget import image_note
from rune_mcp.capture.chain import kept_branch, trees, unique
from rune_mcp.capture.transcript_file import read_transcript
from rune_mcp.config import Settings
from rune_mcp.errors import ConfigError, ParseError
from rune_mcp.trajectory import Trajectory

FORMAT = "claude-code"
SKIPPED_TYPES = frozenset(
    {"summary", "system", "progress", "file-history-snapshot", "queue-operation",
     "attachment", "permission-mode", "custom-title", "ai-title", "last-prompt",
     "agent-name", "tag", "pr-link"}
)
_COMMAND = re.compile(r"<command-name>\s*(.*?)\s*</command-name>", re.DOTALL)
_ARGS = re.compile(r"<command-args>(.*?)</command-args>", re.DOTALL)
# User-role text the client injected rather than the person typed.
_INJECTED = ("<local-command-stdout>", "<local-command-stderr>", "<local-command-caveat>",
             "<system-reminder>", "<task-notification>", "<user-prompt-submit-hook>",
             "[Request interrupted", "<bash-stdout>", "<bash-stderr>")
# How a compact summary opens, for lines written without `isCompactSummary`.
_SUMMARY = "This session is being continued from a previous conversation"
HOOK_EVENTS = ("SessionStart", "SessionEnd", "Stop", "PreCompact")  # what `rune install` adds
_IMMEDIATE = frozenset({"SessionEnd"})
_DEBOUNCED = frozenset({"Stop", "PreCompact", "SubagentStop"})
SCOPES = ("user", "project", "local")


def looks_like(sample: Sample) -> bool:
    """Detection: Claude Code lines carry `uuid`/`parentUuid`/`sessionId` or its line types."""
    records = sample.records
    hits = 0
    for rec in records:
        if "parentUuid" in rec or "sessionId" in rec or "leafUuid" in rec or rec.get(
            "type"
        ) in ("file-history-snapshot", "queue-operation", "progress"):
            hits += 1
    return hits > 0 and hits * 2 >= len(records)


def parse(text: str, name: str, source: Path | None = None) -> Trajectory:
    stats: Counter[str] = Counter()
    records, repeated = unique([_sanitize(r) for r in read_jsonl(text, stats)], "uuid")
    if repeated:
        stats["duplicate_lines"] = repeated
    main = [r for r in records if not r.get("isSidechain")]
    side = [r for r in records if r.get("isSidechain")]
    if not any(r.get("type") in ("user", "assistant") for r in main):
        main, side = side, []  # a subagent file read on its own: everything is a sidechain
    builder = Builder(FORMAT, name, agent="claude-code")
    builder.stats.update(stats)
    _count_other_types(records, builder.stats)
    _emit(builder, _kept(main, builder.stats))
    subagents = _inline_subagents(side, name, builder.stats)
    if source is not None:
        subagents += _file_subagents(source, builder.stats)
    builder.stats["subagents"] = len(subagents)
    return builder.finish(subagents)


def _sanitize(rec: dict[str, Any]) -> dict[str, Any]:
    """Drop linking fields of the wrong JSON type, so a malformed line cannot break the tree."""
    for key in ("uuid", "parentUuid", "logicalParentUuid", "type"):
        if key in rec and not isinstance(rec[key], str):
            rec[key] = None
    msg = rec.get("message")
    if isinstance(msg, dict) and "id" in msg and not isinstance(msg["id"], str):
        msg["id"] = None
    return rec


def _count_other_types(records: list[dict[str, Any]], stats: Counter[str]) -> None:
    """Lines that are not conversation: known noise is counted as skipped, the rest unknown."""
    for rec in records:
        kind = rec.get("type")
        if kind in ("user", "assistant"):
            continue
        key = f"skipped:{kind}" if kind in SKIPPED_TYPES else f"unknown:{kind}"
        stats[key[:80]] += 1


def _message(rec: dict[str, Any]) -> dict[str, Any]:
    msg = rec.get("message")
    return msg if isinstance(msg, dict) else {}


def _blocks(rec: dict[str, Any]) -> list[Any]:
    content = _message(rec).get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def _kept(records: list[dict[str, Any]], stats: Counter[str]) -> list[dict[str, Any]]:
    """The records on the kept branch, in file order (see the module docstring)."""
    branch = kept_branch(
        records, id_key="uuid", parent_keys=("parentUuid", "logicalParentUuid"),
        is_node=lambda r: r.get("type") in ("user", "assistant", "system"),
        continues=lambda r: r.get("subtype") == "compact_boundary",
    )
    if not branch.ids:
        return [r for r in records if r.get("type") in ("user", "assistant")]
    if branch.bridged:
        stats["broken_links"] += branch.bridged
    path = branch.ids
    message_ids = {_message(r).get("id") for r in records if r.get("uuid") in path}
    message_ids.discard(None)
    call_ids: set[str] = set()
    kept: list[dict[str, Any]] = []
    for rec in records:
        on_path = rec.get("uuid") in path or (
            rec.get("type") == "assistant" and _message(rec).get("id") in message_ids
        )
        if rec.get("type") == "assistant" and on_path:
            call_ids.update(str(b.get("id")) for b in _blocks(rec)
                            if isinstance(b, dict) and b.get("type") == "tool_use")
        if not on_path and rec.get("type") == "user":
            on_path = any(isinstance(b, dict) and isinstance(b.get("tool_use_id"), str)
                          and b["tool_use_id"] in call_ids for b in _blocks(rec))
        if on_path or not isinstance(rec.get("uuid"), str):
            kept.append(rec)
        elif rec.get("type") in ("user", "assistant"):
            stats["off_branch_lines"] += 1
    return kept


def _emit(builder: Builder, records: list[dict[str, Any]]) -> None:
    seen_blocks: set[tuple[Any, ...]] = set()
    pending_command = False
    for rec in records:
        kind = rec.get("type")
        if builder.session_id is None and isinstance(rec.get("sessionId"), str):
            builder.session_id = rec["sessionId"]
        if builder.project is None and isinstance(rec.get("cwd"), str):
            builder.project = rec["cwd"]
        if kind == "assistant":
            _assistant(builder, rec, seen_blocks)
        elif kind == "user":
            pending_command = _user(builder, rec, pending_command)


def _assistant(builder: Builder, rec: dict[str, Any], seen: set[tuple[Any, ...]]) -> None:
    ts = rec.get("timestamp")
    msg_id = _message(rec).get("id") or rec.get("uuid")
    for block in _blocks(rec):
        if not isinstance(block, dict):
            builder.stats["bad_blocks"] += 1
            continue
        btype = block.get("type")
        sig = (msg_id, btype, block.get("id") or str(block.get("text") or block.get("thinking")))
        if sig in seen:
            builder.stats["merged_blocks"] += 1
            continue
        seen.add(sig)
        if btype == "text":
            builder.assistant(as_text(block.get("text")), ts)
        elif btype == "thinking":
            builder.thinking(as_text(block.get("thinking")), ts)
        elif btype in ("tool_use", "server_tool_use"):
            builder.tool_call(str(block.get("name") or "unknown"), _str(block.get("id")),
                              block.get("input"), ts)
        elif btype != "redacted_thinking":
            builder.stats[f"unknown_block:{btype}"[:80]] += 1


def _user(builder: Builder, rec: dict[str, Any], pending_command: bool) -> bool:
    """Handle one user line; returns whether a slash command still waits for its prompt."""
    ts = rec.get("timestamp")
    meta = bool(rec.get("isMeta"))
    if rec.get("isCompactSummary") or rec.get("isVisibleInTranscriptOnly") or (
        as_text(_message(rec).get("content")).startswith(_SUMMARY)
    ):  # the model's own summary of the turns before a compaction: never a task or lesson
        builder.stats["skipped_compaction"] += 1
        return pending_command
    for block in _blocks(rec):
        if not isinstance(block, dict):
            builder.stats["bad_blocks"] += 1
            continue
        btype = block.get("type")
        if btype == "tool_result":
            _tool_result(builder, rec, block, ts)
        elif btype == "text":
            text = as_text(block.get("text"))
            if meta:
                builder.stats["skipped_meta"] += 1
                if pending_command:
                    builder.fallback_task(text)  # the prompt a slash command expanded to
                continue
            pending_command = _user_text(builder, text, ts)
        elif btype == "image":
            source = block.get("source")
            media = source.get("media_type") if isinstance(source, dict) else None
            builder.user(image_note(media, builder.stats), ts, request=False)
        else:
            builder.stats[f"unknown_block:{btype}"[:80]] += 1
    return pending_command


def _user_text(builder: Builder, text: str, ts: Any) -> bool:
    command = _COMMAND.search(text)
    if command:
        args_match = _ARGS.search(text)
        args = args_match.group(1).strip() if args_match else ""
        builder.user(f"{command.group(1)} {args}".strip(), ts, request=False)
        if args:
            builder.user_request_text(args)
        return not args
    stripped = text.lstrip()
    if stripped.startswith(_INJECTED):
        builder.stats["skipped_injected"] += 1
        return False
    builder.user(text, ts)
    return False


def _tool_result(builder: Builder, rec: dict[str, Any], block: dict[str, Any], ts: Any) -> None:
    content = block.get("content")
    parts: list[str] = []
    if isinstance(content, list):
        for item in content:
            if isinstance(item, dict) and item.get("type") == "image":
                source = item.get("source")
                media = source.get("media_type") if isinstance(source, dict) else None
                parts.append(image_note(media, builder.stats))
            else:
                parts.append(as_text([item]))
    else:
        parts.append(as_text(content))
    output = "\n".join(p for p in parts if p)
    extra = rec.get("toolUseResult")
    is_error = block.get("is_error") is True
    if not output:
        if isinstance(extra, str):  # on errors the client stores a plain string
            output = extra
        elif isinstance(extra, dict):
            output = "\n".join(as_text(extra.get(k)) for k in ("stdout", "stderr")
                               if extra.get(k))
    if isinstance(extra, str) and extra.startswith("Error"):
        is_error = True
    builder.tool_result(_str(block.get("tool_use_id")), output, is_error, ts)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _inline_subagents(records: list[dict[str, Any]], name: str,
                      stats: Counter[str]) -> list[Trajectory]:
    """Older transcripts keep each Task subagent inline as an `isSidechain` chain."""
    if not records:
        return []
    subs = []
    for i, group in enumerate(trees(records, "uuid", "parentUuid")):
        sub = Builder(FORMAT, f"{name} (subagent {i + 1})", agent="claude-code")
        group = [r for r in group if r.get("type") in ("user", "assistant", "system")]
        _emit(sub, _kept(group, sub.stats))
        try:
            subs.append(sub.finish())
        except ParseError:
            stats["subagents_without_task"] += 1
    return subs


def _file_subagents(source: Path, stats: Counter[str]) -> list[Trajectory]:
    folder = source.with_suffix("") / "subagents"
    if not folder.is_dir():
        return []
    subs = []
    for path in sorted(folder.glob("*.jsonl")):
        if path.name.startswith("agent-acompact"):
            stats["skipped_compaction_agents"] += 1
            continue
        try:
            # Read like the main transcript, and only from inside its folder: a subagent file
            # that is a link to somewhere else is not read.
            data = read_transcript(path, [source.parent], error=ParseError).data
            subs.append(parse(decode(data, Counter()), str(path)))
        except (ParseError, OSError):
            stats["subagents_unreadable"] += 1
    return subs


# --- install ----------------------------------------------------------------------------


def _add_hooks(path: Path) -> bool:
    command = hook_command(FORMAT)

    def change(data: dict[str, Any]) -> None:
        hooks = section(data, "hooks", path)
        for event in HOOK_EVENTS:
            groups = hook_list(hooks, event, path)
            groups[:] = _without_rune_hooks(groups, keep=command)
            if not any(_group_has(g, command) for g in groups):
                groups.append(
                    {"hooks": [{"type": "command", "command": command, "timeout": 10}]}
                )

    return update(path, change)


def _group_has(group: Any, command: str) -> bool:
    return isinstance(group, dict) and any(
        isinstance(h, dict) and h.get("command") == command for h in group.get("hooks") or []
    )


def _without_rune_hooks(groups: list[Any], keep: str | None = None) -> list[Any]:
    """Claude Code hook groups without Rune's hook commands (but `keep`); a group that held
    only Rune's is left out."""
    result = []
    for group in groups:
        if isinstance(group, dict) and isinstance(group.get("hooks"), list):
            kept = without_rune(group["hooks"], keep)
            if not kept and group["hooks"]:
                continue
            group["hooks"] = kept
        result.append(group)
    return result


def _drop_hooks(path: Path) -> bool:
    return drop_hooks(path, _without_rune_hooks, drop_empty=True)


def settings_file(settings: Settings, scope: str, project: Path) -> Path:
    """The settings file of a scope, where the hooks go."""
    if scope == "user":
        return settings.claude_dir / "settings.json"
    if scope == "project":
        return project / ".claude" / "settings.json"
    return project / ".claude" / "settings.local.json"


def state_file() -> Path:
    """`~/.claude.json`, where Claude Code keeps user- and local-scope servers (inside
    CLAUDE_CONFIG_DIR when that is set)."""
    env = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(env) / ".claude.json" if env else Path.home() / ".claude.json"


def _claude_cli() -> str | None:
    return shutil.which("claude")


def _use_cli(asked: bool | None) -> bool:
    """Whether to register through the `claude` CLI: as asked, else when it is on PATH."""
    return _claude_cli() is not None if asked is None else asked


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


def _add_via_cli(scope: str, project: Path) -> str:
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


def _server_file(scope: str, project: Path) -> tuple[Path, tuple[str, ...]]:
    if scope == "project":
        return project / ".mcp.json", ()
    if scope == "user":
        return state_file(), ()
    return state_file(), ("projects", str(project))


def install(target: InstallTarget) -> list[str]:
    """Register the server and the hooks for one scope; returns what was done, one line each."""
    scope, project = target.scope, target.project
    if _use_cli(target.use_cli):
        done = [_add_via_cli(scope, project)]
    else:
        path, keys = _server_file(scope, project)
        changed = set_server(path, stdio_entry(), *keys)
        done = [f"{'wrote' if changed else 'kept'} the rune server in {path}"]
    hooks_file = settings_file(target.settings, scope, project)
    changed = _add_hooks(hooks_file)
    verb = "added" if changed else "kept"
    done.append(f"{verb} hooks {', '.join(HOOK_EVENTS)} in {hooks_file}")
    return done


def uninstall(target: InstallTarget) -> list[str]:
    """Remove Rune's server entry and hooks from one scope."""
    scope, project = target.scope, target.project
    done: list[str] = []
    if _use_cli(target.use_cli):
        proc = _run_claude(["remove", "--scope", scope, SERVER_NAME], project)
        done.append(
            "removed the rune server with `claude mcp remove`" if proc.returncode == 0
            else "the rune server was not registered with Claude Code"
        )
    path, keys = _server_file(scope, project)
    if drop_server(path, *keys):
        done.append(f"removed the rune server from {path}")
    hooks_file = settings_file(target.settings, scope, project)
    if _drop_hooks(hooks_file):
        done.append(f"removed Rune's hooks from {hooks_file}")
    return done or ["nothing of Rune's was installed for this scope"]


def _project_notice(scope: str) -> str | None:
    if scope == "project":
        return "Claude Code lists project servers as pending until you approve them in Claude Code."
    return None


# --- where transcripts live, and hooks ---------------------------------------------------


def _projects(settings: Settings) -> Path:
    return settings.claude_dir.expanduser() / "projects"


def _match(root: Path, path: Path) -> Match | None:
    # projects/<escaped cwd>/<session>.jsonl; subagents in <session>/subagents/agent-*.jsonl
    rel = path.relative_to(root).parts
    if path.suffix != ".jsonl":
        return None
    group = f"{FORMAT}:{rel[0]}"
    if len(rel) == 2:
        return Match(FORMAT, FORMAT, "main", group)
    if len(rel) >= 4 and rel[-2] == "subagents":
        kind = "compaction" if path.name.startswith("agent-acompact") else "subagent"
        return Match(FORMAT, FORMAT, kind, group)
    return None


def _line(record: dict[str, Any]) -> tuple[bool, str | None]:
    """Conversation lines are user and assistant lines that are not client metadata; the
    project is the `cwd` every line carries."""
    content = record.get("type") in ("user", "assistant") and not record.get("isMeta")
    cwd = record.get("cwd")
    return content, cwd if isinstance(cwd, str) else None


def hook_job(event: dict[str, Any], settings: Settings) -> HookJob:
    """The job for a Claude Code hook event (see the module docstring)."""
    name = str(event.get("hook_event_name") or "")
    if name not in _IMMEDIATE | _DEBOUNCED:
        raise SkipEventError(f"event {name or '?'} does not end a session")
    raw = event.get("transcript_path")
    if name == "SubagentStop" and settings.watch_subagents:
        raw = event.get("agent_transcript_path") or raw
    if not isinstance(raw, str) or not raw:
        raise SkipEventError(f"{name} event without transcript_path")
    session_id = event.get("session_id")
    delay = 0.0 if name in _IMMEDIATE else settings.idle_seconds
    return HookJob(Path(raw), session_id if isinstance(session_id, str) else None, delay, FORMAT,
                   CLAUDE_START.project(event))


AGENT = Agent(
    name=FORMAT,
    title="Claude Code",
    looks_like=looks_like,
    parse=parse,
    places=lambda settings: [Place(FORMAT, _projects(settings), None, _match)],
    roots=lambda settings: [settings.claude_dir / "projects"],
    session_globs=lambda settings, sid: [(settings.claude_dir / "projects", f"*/{sid}.jsonl")],
    lines=_line,
    hook=hook_job,
    start_note=CLAUDE_START,
    installer=Installer(
        scopes=SCOPES, install=install, uninstall=uninstall,
        cli_help="edit the config files directly even when the `claude` CLI is on PATH",
        notice=_project_notice,
    ),
)
