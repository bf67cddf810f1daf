"""`rune status` on the watcher: whether the process its state names is still there."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rune_mcp.config import load_settings
from rune_mcp.watch import STATE_DB, watch_status
from rune_mcp.watch.sessions import SESSIONS_SCHEMA
from rune_mcp.watch.status import _pid_alive
from rune_mcp.watch.tail import WatchDB


def _finished_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_own_process_is_alive_and_a_finished_one_is_not() -> None:
    assert _pid_alive(os.getpid())
    assert not _pid_alive(_finished_pid())


def test_a_process_of_another_user_counts_as_running(monkeypatch: pytest.MonkeyPatch) -> None:
    # Probing another user's process is refused with EPERM: it exists all the same.
    def refused(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", refused)
    assert _pid_alive(os.getpid())


@pytest.mark.parametrize("alive", [True, False])
def test_status_shows_the_pid_only_while_it_runs(alive: bool) -> None:
    settings = load_settings()
    pid = os.getpid() if alive else _finished_pid()
    db = WatchDB(settings.home / STATE_DB, SESSIONS_SCHEMA)
    db.meta_set("watcher", json.dumps({"pid": pid, "mode": "watch", "observers": {}}))
    db.close()
    status = watch_status(settings)
    assert status["running"] is alive
    assert status["pid"] == (pid if alive else None)
