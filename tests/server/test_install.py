"""`rune install` / `rune uninstall`: merge, back up, stay idempotent, reverse exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rune_mcp.config import Settings
from rune_mcp.errors import ConfigError
from rune_mcp.server.install import (
    claude_state_file,
    install_claude_code,
    install_cursor,
    is_rune_hook,
    uninstall_claude_code,
    uninstall_cursor,
)

OTHER_HOOK = {"hooks": [{"type": "command", "command": "notify-send done"}]}


def _write(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def test_claude_project_scope_merges_backs_up_and_reverses(
    settings: Settings, tmp_path: Path
) -> None:
    project = tmp_path / "app"
    mcp = project / ".mcp.json"
    hooks = project / ".claude" / "settings.json"
    _write(mcp, {"mcpServers": {"other": {"command": "other-server"}}})
    _write(hooks, {"permissions": {"allow": ["Bash(ls)"]}, "hooks": {"Stop": [OTHER_HOOK]}})
    before = {p: json.loads(p.read_text()) for p in (mcp, hooks)}

    install_claude_code(settings, "project", project, use_cli=False)
    servers = json.loads(mcp.read_text())["mcpServers"]
    assert servers["other"] == {"command": "other-server"}
    assert servers["rune"]["type"] == "stdio" and servers["rune"]["args"][-1] == "serve"
    data = json.loads(hooks.read_text())
    assert data["permissions"] == {"allow": ["Bash(ls)"]}
    assert data["hooks"]["Stop"][0] == OTHER_HOOK
    for event in ("SessionEnd", "Stop", "PreCompact"):
        commands = [h["command"] for g in data["hooks"][event] for h in g["hooks"]]
        assert sum(is_rune_hook(c) for c in commands) == 1, event
    assert json.loads((project / ".mcp.json.rune-backup").read_text()) == before[mcp]

    snapshot = {p: p.read_text() for p in (mcp, hooks)}
    done = install_claude_code(settings, "project", project, use_cli=False)
    assert all(line.startswith("kept") for line in done)
    assert {p: p.read_text() for p in (mcp, hooks)} == snapshot  # idempotent

    uninstall_claude_code(settings, "project", project, use_cli=False)
    assert {p: json.loads(p.read_text()) for p in (mcp, hooks)} == before


def test_claude_user_and_local_scope_without_cli(settings: Settings, tmp_path: Path) -> None:
    state = claude_state_file()
    _write(state, {"numStartups": 3, "projects": {"/x": {"allowedTools": []}}})
    install_claude_code(settings, "user", tmp_path, use_cli=False)
    install_claude_code(settings, "local", tmp_path, use_cli=False)
    data = json.loads(state.read_text())
    assert data["numStartups"] == 3 and data["projects"]["/x"] == {"allowedTools": []}
    assert "rune" in data["mcpServers"]
    assert "rune" in data["projects"][str(tmp_path.resolve())]["mcpServers"]
    assert (settings.claude_dir / "settings.json").exists()
    assert (tmp_path / ".claude" / "settings.local.json").exists()
    uninstall_claude_code(settings, "user", tmp_path, use_cli=False)
    uninstall_claude_code(settings, "local", tmp_path, use_cli=False)
    data = json.loads(state.read_text())
    assert "rune" not in data["mcpServers"]
    assert "hooks" not in json.loads((settings.claude_dir / "settings.json").read_text())


def test_cursor_both_scopes(settings: Settings, tmp_path: Path) -> None:
    project = tmp_path / "app"
    hooks = project / ".cursor" / "hooks.json"
    _write(hooks, {"version": 1, "hooks": {"stop": [{"command": "./lint.sh"}],
                                           "afterFileEdit": [{"command": "fmt"}]}})
    install_cursor(settings, "project", project)
    install_cursor(settings, "project", project)
    data = json.loads(hooks.read_text())
    assert data["hooks"]["afterFileEdit"] == [{"command": "fmt"}]
    assert data["hooks"]["stop"][0] == {"command": "./lint.sh"} and len(data["hooks"]["stop"]) == 2
    server = json.loads((project / ".cursor" / "mcp.json").read_text())["mcpServers"]["rune"]
    assert "type" not in server and server["args"][-1] == "serve"
    uninstall_cursor(settings, "project", project)
    assert json.loads(hooks.read_text())["hooks"]["stop"] == [{"command": "./lint.sh"}]

    install_cursor(settings, "user", project)
    assert (settings.cursor_dir / "mcp.json").exists() and (settings.cursor_dir / "hooks.json").exists()
    assert uninstall_cursor(settings, "user", project)
    assert uninstall_cursor(settings, "user", project) == [
        "nothing of Rune's was installed for this scope"
    ]


def test_unparsable_config_is_refused_not_overwritten(settings: Settings, tmp_path: Path) -> None:
    mcp = tmp_path / ".cursor" / "mcp.json"
    mcp.parent.mkdir()
    mcp.write_text("{ // my servers\n")
    with pytest.raises(ConfigError, match="not valid JSON"):
        install_cursor(settings, "project", tmp_path)
    assert mcp.read_text() == "{ // my servers\n"


def test_install_command_line(settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rune_mcp.cli import main

    assert main(["install", "claude-code", "--scope", "project", "--project", str(tmp_path),
                 "--no-cli"]) == 0
    out = capsys.readouterr().out
    assert "pending until you approve" in out
    assert main(["uninstall", "claude-code", "--scope", "project", "--project", str(tmp_path),
                 "--no-cli"]) == 0
    with pytest.raises(SystemExit) as info:
        main(["install", "cursor", "--scope", "banana"])
    assert info.value.code == 2
