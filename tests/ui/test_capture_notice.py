"""The memory page says whether automatic capture runs and what is never remembered."""

from __future__ import annotations

from pathlib import Path

from starlette.testclient import TestClient

from rune_mcp.capture import control
from rune_mcp.config import Settings
from ui.conftest import make_client, plain


def test_capture_on_paused_and_excluded(client: TestClient, settings: Settings,
                                        tmp_path: Path) -> None:
    assert "Automatic capture is on (<code>rune pause</code> stops it)." in plain(client.get("/"))
    control.pause(settings, tmp_path / "quiet")
    text = plain(client.get("/"))
    assert f"Automatic capture is on, except for {tmp_path / 'quiet'} (paused;" in text
    control.pause(settings)
    assert "Automatic capture is paused everywhere since " in plain(client.get("/"))


def test_exclusions_are_listed(settings: Settings) -> None:
    excluded = settings.with_overrides(exclude_projects=["/srv/<clients>/*"])
    with make_client(excluded) as c:
        page = c.get("/")
    assert "Never remembered (exclude_projects): /srv/&lt;clients&gt;/*." in page.text
