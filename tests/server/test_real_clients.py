"""Two MCP clients that nobody here wrote, from the npm registry: the MCP Inspector CLI and
Claude Code's own CLI. They are installed once into `.test-cache/npm` (or RUNE_TEST_CACHE);
the tests skip, with the reason, where node/npm is missing or the registry is unreachable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rune_mcp.config import Settings
from rune_mcp.fsutil import locked

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("RUNE_TEST_CACHE", REPO / ".test-cache")) / "npm"
PACKAGES = ["@modelcontextprotocol/inspector@0.17", "@anthropic-ai/claude-code"]


@pytest.fixture(scope="module")
def npm_bin() -> Path:
    """The folder with `mcp-inspector` and `claude`, installed on first use."""
    if not shutil.which("npm") or not shutil.which("node"):
        pytest.skip("node and npm are not installed; the real-client tests need them")
    bin_dir = CACHE / "node_modules" / ".bin"
    with locked(CACHE.parent / "npm.lock"):
        if not (bin_dir / "mcp-inspector").exists() or not (bin_dir / "claude").exists():
            CACHE.mkdir(parents=True, exist_ok=True)
            proc = subprocess.run(
                ["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                 "--prefix", str(CACHE), *PACKAGES],
                capture_output=True, text=True, timeout=600, check=False,
            )
            if proc.returncode != 0:
                pytest.skip(f"npm install failed: {(proc.stderr or proc.stdout)[-300:]}")
    return bin_dir


def _env(settings: Settings, npm_bin: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNE_")}
    env.update(
        RUNE_HOME=str(settings.home), RUNE_CACHE_DIR=str(settings.cache_dir),
        HOME=str(Path.home()), PATH=f"{npm_bin}{os.pathsep}{Path(sys.executable).parent}"
        f"{os.pathsep}{env.get('PATH', '')}",
        DISABLE_AUTOUPDATER="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )
    return env


def _rune() -> list[str]:
    script = Path(sys.executable).parent / "rune"
    return [str(script)] if script.exists() else [sys.executable, "-m", "rune_mcp"]


def test_mcp_inspector_lists_and_calls_tools(settings: Settings, npm_bin: Path) -> None:
    env = _env(settings, npm_bin)
    base = [str(npm_bin / "mcp-inspector"), "--cli", *_rune(), "serve"]
    listed = subprocess.run([*base, "--method", "tools/list"], env=env, capture_output=True,
                            text=True, timeout=180, check=False)
    assert listed.returncode == 0, listed.stderr[-1000:]
    names = {t["name"] for t in json.loads(listed.stdout)["tools"]}
    assert names == {"remember_session", "recall_adapter", "run_with_memory", "list_adapters",
                     "forget", "memory_status"}
    called = subprocess.run(
        [*base, "--method", "tools/call", "--tool-name", "recall_adapter",
         "--tool-arg", "task=fix the login test"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )
    assert called.returncode == 0, called.stderr[-1000:]
    result = json.loads(called.stdout)
    assert result["isError"] is False and result["structuredContent"]["adapters"] == []


def test_claude_code_shows_rune_connected_after_install(settings: Settings, npm_bin: Path) -> None:
    env = _env(settings, npm_bin)
    install = subprocess.run([*_rune(), "install", "claude-code", "--scope", "user"], env=env,
                             capture_output=True, text=True, timeout=180, check=False)
    assert install.returncode == 0, install.stderr
    assert "claude mcp add" in install.stdout  # the real CLI registered the server
    listed = subprocess.run([str(npm_bin / "claude"), "mcp", "list"], env=env,
                            capture_output=True, text=True, timeout=180, check=False)
    assert listed.returncode == 0, listed.stderr
    line = next(ln for ln in listed.stdout.splitlines() if ln.startswith("rune:"))
    assert "Connected" in line, listed.stdout
    hooks = json.loads((Path.home() / ".claude" / "settings.json").read_text())["hooks"]
    assert set(hooks) == {"SessionStart", "SessionEnd", "Stop", "PreCompact"}

    removed = subprocess.run([*_rune(), "uninstall", "claude-code", "--scope", "user"], env=env,
                             capture_output=True, text=True, timeout=180, check=False)
    assert removed.returncode == 0, removed.stderr
    after = subprocess.run([str(npm_bin / "claude"), "mcp", "list"], env=env,
                           capture_output=True, text=True, timeout=180, check=False)
    assert "rune:" not in after.stdout


def test_claude_code_installs_the_rune_plugin(settings: Settings, npm_bin: Path) -> None:
    """The plugin in integrations/claude-code installs through Claude Code's own marketplace
    commands and brings the server (connected) and the four hooks."""
    env = _env(settings, npm_bin)
    claude = str(npm_bin / "claude")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([claude, *args], env=env, capture_output=True, text=True,
                              timeout=180, check=False)

    added = run("plugin", "marketplace", "add", str(REPO / "integrations" / "claude-code"))
    assert added.returncode == 0, added.stderr
    installed = run("plugin", "install", "rune@rune")
    assert installed.returncode == 0, installed.stderr
    details = run("plugin", "details", "rune@rune")
    assert "SessionEnd, Stop, PreCompact" in details.stdout, details.stdout
    assert "SessionStart" in details.stdout, details.stdout
    listed = run("mcp", "list")
    line = next(ln for ln in listed.stdout.splitlines() if "rune" in ln)
    assert "Connected" in line, listed.stdout
