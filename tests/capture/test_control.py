"""Capture controls: excluded projects are refused everywhere, paused capture stops the
automatic sources only, and the pause state survives several processes changing it at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rune_mcp.capture import control
from rune_mcp.capture.control import CaptureRefusedError
from rune_mcp.config import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return load_settings()


def test_exclude_projects_globs_folders_and_transcript_paths(
    settings: Settings, tmp_path: Path
) -> None:
    settings = settings.with_overrides(exclude_projects=["~/work/secret", "/srv/client-*"],
                                       ignore_projects=["/old/name"])
    home = os.path.expanduser("~")
    assert control.exclusion(settings, f"{home}/work/secret") is not None
    assert "exclude_projects entry '~/work/secret'" in str(
        control.exclusion(settings, f"{home}/work/secret/api"))
    assert control.exclusion(settings, f"{home}/work/secretive") is None  # a prefix is not a folder
    assert control.exclusion(settings, "/srv/client-acme") is not None
    assert "ignore_projects" in str(control.exclusion(settings, "/old/name/x"))
    assert control.exclusion(settings, "/home/dev/app") is None
    assert control.exclusion(settings, None) is None
    why = control.exclusion(settings, None, ["/srv/client-acme/chat.jsonl"])
    assert why is not None and why.startswith("transcript /srv/client-acme/chat.jsonl")


def test_runeignore_in_the_project_or_above(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "clients").mkdir()
    (tmp_path / "clients" / ".runeignore").write_text("")
    assert ".runeignore opts project" in str(
        control.exclusion(settings, str(tmp_path / "clients" / "acme")))
    assert control.exclusion(settings, str(tmp_path / "own")) is None


def test_pause_and_resume_everywhere_and_per_project(settings: Settings, tmp_path: Path) -> None:
    app, other = tmp_path / "app", tmp_path / "other"
    assert control.pause_reason(settings, str(app)) is None
    assert "paused for" in control.pause(settings, app)
    assert control.pause(settings, app)  # again: nothing changes
    assert f"paused for {app}" in str(control.pause_reason(settings, str(app / "sub")))
    assert control.pause_reason(settings, str(other)) is None
    assert control.pause_reason(settings, None) is None  # no project named: not this pause
    control.pause(settings)
    assert "paused everywhere" in str(control.pause_reason(settings, str(other)))
    assert "still paused everywhere" in control.resume(settings, app)
    assert control.pause_reason(settings, str(other)) is not None
    control.resume(settings)
    assert control.pause_reason(settings, str(app)) is None
    assert control.read_state(settings)["projects"] == {}
    control.resume(settings)  # resuming what runs is no error


def test_pause_matches_a_project_through_a_link(settings: Settings, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    control.pause(settings, tmp_path / "link")
    assert control.pause_reason(settings, str(real)) is not None


def test_refusal_pause_is_for_automatic_sources_exclusion_for_all(settings: Settings) -> None:
    control.pause(settings)
    for source in ("hook", "watcher"):
        with pytest.raises(CaptureRefusedError, match="^Automatic capture is paused"):
            control.check(settings, "/home/dev/app", source)
    for source in ("mcp", "cli", "manual"):
        control.check(settings, "/home/dev/app", source)  # asked for explicitly: allowed
    excluded = settings.with_overrides(exclude_projects=["/home/dev/app"])
    with pytest.raises(CaptureRefusedError, match="^Project /home/dev/app matches"):
        control.check(excluded, "/home/dev/app", "mcp")


def test_unreadable_state_counts_as_paused_and_resume_rewrites_it(settings: Settings) -> None:
    settings.ensure_home()
    (settings.home / control.STATE_FILE).write_text("{not json")
    assert control.pause_reason(settings, "/x") is not None
    state = control.capture_state(settings)
    assert state["paused_everywhere"] and "unreadable" in state["problem"]
    control.resume(settings)
    assert control.capture_state(settings) == {
        "paused_everywhere": False, "paused_since": None, "paused_projects": [],
        "exclude_projects": [], "problem": None}


def test_capture_state_and_text(settings: Settings, tmp_path: Path) -> None:
    settings = settings.with_overrides(exclude_projects=["/srv/*"])
    assert control.capture_text(control.capture_state(settings)) == (
        "capture: automatic capture on; never remembered: /srv/*.")
    control.pause(settings, tmp_path)
    state = control.capture_state(settings)
    assert state["paused_projects"][0]["project"] == str(tmp_path)
    assert state["paused_projects"][0]["since"]
    assert f"paused for {tmp_path}" in control.capture_text(state)
    control.pause(settings)
    assert "paused everywhere since" in control.capture_text(control.capture_state(settings))
    on_disk = json.loads((settings.home / control.STATE_FILE).read_text())
    assert on_disk["format_version"] == 1 and str(tmp_path) in on_disk["projects"]


def test_processes_pausing_at_once_lose_nothing(settings: Settings, tmp_path: Path) -> None:
    settings.ensure_home()
    script = ("import sys\nfrom pathlib import Path\nfrom rune_mcp.capture import control\n"
              "from rune_mcp.config import load_settings\n"
              "s = load_settings()\n"
              "for i in range(15):\n"
              "    control.pause(s, Path(sys.argv[1]) / str(i))\n")
    env = {**os.environ, "RUNE_HOME": str(settings.home)}
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"p{n}")], env=env,
                              cwd=REPO) for n in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    assert len(control.read_state(settings)["projects"]) == 60


def test_pause_and_resume_commands(settings: Settings, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    from rune_mcp.cli import main

    assert main(["pause", "--project", str(tmp_path)]) == 0
    assert f"automatic capture paused for {tmp_path}" in capsys.readouterr().out
    assert main(["pause"]) == 0
    assert "paused everywhere" in capsys.readouterr().out
    assert main(["resume"]) == 0
    assert capsys.readouterr().out == "automatic capture resumed everywhere.\n"
    assert control.read_state(settings) == {"everywhere": None, "projects": {}, "problem": None}
