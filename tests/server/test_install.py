"""`rune install` / `rune uninstall`: the command line and the dispatch to each agent's
installer (the installers themselves are tested in tests/agents/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError
from rune_mcp.server.install import install, uninstall


def test_dispatch_uses_the_default_scope_and_adds_the_notice(
    settings: Settings, tmp_path: Path
) -> None:
    done = install(settings, "cursor", project=tmp_path)  # cursor's default: project scope
    assert (tmp_path / ".cursor" / "mcp.json").exists()
    assert len(done) == 2
    done = install(settings, "claude-code", "project", tmp_path, use_cli=False)
    assert done[-1].startswith("Claude Code lists project servers as pending")
    assert "rune" in json.loads((tmp_path / ".mcp.json").read_text())["mcpServers"]
    uninstall(settings, "claude-code", "project", tmp_path, use_cli=False)
    assert "rune" not in json.loads((tmp_path / ".mcp.json").read_text())["mcpServers"]
    with pytest.raises(UsageError, match="does not support codex; it supports claude-code, cursor"):
        install(settings, "codex")
    with pytest.raises(UsageError, match="unknown agent 'vim'"):
        install(settings, "vim")
    with pytest.raises(UsageError, match="cursor scope must be one of project, user; got 'local'"):
        install(settings, "cursor", "local", tmp_path)


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


def test_command_line_offers_the_agents_that_have_installers_and_hooks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from rune_mcp.cli import main

    for argv in (["install", "codex"], ["hook", "aider"], ["install", "cursor", "--no-cli"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2, argv
    assert "invalid choice" in capsys.readouterr().err


def test_install_and_uninstall_the_session_start_hook(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rune_mcp.cli import main

    args = ["claude-code", "--scope", "project", "--project", str(tmp_path), "--no-cli"]
    hooks = tmp_path / ".claude" / "settings.json"
    for _ in range(2):  # the second run changes nothing
        assert main(["install", *args]) == 0
        assert [len(g) for g in json.loads(hooks.read_text())["hooks"].values()] == [1, 1, 1, 1]
    assert "SessionStart" in json.loads(hooks.read_text())["hooks"]
    assert "kept hooks SessionStart, SessionEnd, Stop, PreCompact" in capsys.readouterr().out
    for _ in range(2):
        assert main(["uninstall", *args]) == 0
        assert "hooks" not in json.loads(hooks.read_text())
