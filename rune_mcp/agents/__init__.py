"""The coding agents Rune learns from, one module each, behind one descriptor (`base.Agent`).

Everything Rune knows about an agent lives in its module: how to recognise and parse its
transcripts, where it writes them (for `rune watch` and for the folders MCP tools may read),
how to find one session's transcript by id, how its hook events become queued jobs, and how
`rune install` / `rune uninstall` edit its config. Capture (`rune_mcp.capture`), the watcher,
the server's path checks, `rune hook` and `rune install` walk `AGENTS` and never name an
agent.

`AGENTS` is ordered: format detection asks each agent's `looks_like` in this order and the
first yes wins, so a format with a loose test goes after the stricter ones (`generic`, any
JSON object with a `steps` list, is last).

Adding an agent (Gemini CLI, OpenCode, Windsurf, ...) means one new module and its tests:

1. `rune_mcp/agents/<agent>.py` with `looks_like(sample)` and `parse(text, name, source)`
   building the trajectory through `rune_mcp.capture.base.Builder` (which budgets, redacts
   and records each tool call's family), and `AGENT = Agent(...)` filling in what the agent
   has: `places`, `roots` and `session_globs` for where its transcripts live, `lines` when its
   JSONL lines are not `{"role": ...}`, `hook` when it can call `rune hook <agent>`,
   `installer` when `rune install <agent>` should write its config, `database` when it keeps
   chats in SQLite;
2. its name in `AGENTS` below, at the place its detection belongs;
3. `tests/agents/test_<agent>.py` with a synthetic transcript of each shape it writes.

A folder the user may need to move is a `Settings` field (`claude_dir`, `codex_dir`, ...);
an agent whose folder is fixed needs none. `rune hook` and `rune install` offer an agent as
soon as its descriptor has a `hook` or an `installer`.
"""

from __future__ import annotations

from rune_mcp.agents import aider, claude_code, codex, cursor, generic
from rune_mcp.agents.base import Agent
from rune_mcp.errors import UsageError

AGENTS: tuple[Agent, ...] = (
    claude_code.AGENT,
    codex.AGENT,
    cursor.AGENT,
    aider.AGENT,
    generic.AGENT,
)

__all__ = ["AGENTS", "Agent", "get", "names", "with_database", "with_hooks", "with_installer"]


def names() -> tuple[str, ...]:
    """`("claude-code", "codex", "cursor", "aider", "generic")`: the formats Rune parses."""
    return tuple(agent.name for agent in AGENTS)


def get(name: str) -> Agent:
    """The agent called `name`; an unknown name is a UsageError listing the known ones."""
    for agent in AGENTS:
        if agent.name == name:
            return agent
    raise UsageError(f"unknown agent {name!r}; Rune knows {', '.join(names())}.")


def with_hooks() -> tuple[Agent, ...]:
    """The agents `rune hook` serves."""
    return tuple(agent for agent in AGENTS if agent.hook is not None)


def with_installer() -> tuple[Agent, ...]:
    """The agents `rune install` / `rune uninstall` can configure."""
    return tuple(agent for agent in AGENTS if agent.installer is not None)


def with_database(fmt: str) -> Agent | None:
    """The agent whose chat database the watcher calls `fmt` (`"cursor-db"`), if any."""
    for agent in AGENTS:
        if agent.database is not None and agent.database.fmt == fmt:
            return agent
    return None
