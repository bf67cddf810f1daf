"""`rune install` / `rune uninstall`: register Rune's MCP server and hooks with an agent.

Which agents can be configured, their scopes and where their files are is each agent's
`installer` (`rune_mcp/agents/`); the guarantees every installer keeps (merge into the
existing JSON, back up, write atomically, do nothing the second time, remove only Rune's own
entries) are in `rune_mcp/agents/installing.py`.
"""

from __future__ import annotations

from pathlib import Path

from rune_mcp import agents
from rune_mcp.agents.base import Installer, InstallTarget
from rune_mcp.agents.installing import check_scope
from rune_mcp.config import Settings
from rune_mcp.errors import UsageError


def installer(agent: str) -> Installer:
    """The installer of `agent`; an agent Rune cannot configure is a UsageError."""
    found = agents.get(agent).installer
    if found is None:
        able = ", ".join(a.name for a in agents.with_installer())
        raise UsageError(f"rune install does not support {agent}; it supports {able}.")
    return found


def install(
    settings: Settings, agent: str, scope: str | None = None, project: Path | None = None,
    use_cli: bool | None = None,
) -> list[str]:
    """Install into one scope of `agent` (its default scope when None); returns what was
    done, one line each, then the agent's notice for that scope if it has one."""
    inst = installer(agent)
    target = _target(inst, agent, settings, scope, project, use_cli)
    done = inst.install(target)
    notice = inst.notice(target.scope)
    return [*done, notice] if notice else done


def uninstall(
    settings: Settings, agent: str, scope: str | None = None, project: Path | None = None,
    use_cli: bool | None = None,
) -> list[str]:
    """Remove Rune's entries from one scope of `agent`; returns what was done."""
    inst = installer(agent)
    return inst.uninstall(_target(inst, agent, settings, scope, project, use_cli))


def _target(
    inst: Installer, agent: str, settings: Settings, scope: str | None, project: Path | None,
    use_cli: bool | None,
) -> InstallTarget:
    """The checked scope (default: the agent's first) and the project (default: here)."""
    scope = scope or inst.scopes[0]
    check_scope(scope, inst.scopes, agent)
    return InstallTarget(settings, scope, (project or Path.cwd()).resolve(), use_cli)
