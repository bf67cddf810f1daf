"""`rune watch` killed with SIGKILL again and again while agents write: it resumes from its
offsets, reads every line exactly once, and queues each session exactly once."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from rune_mcp.config import load_settings
from rune_mcp.distill.queue import JobQueue
from rune_mcp.watch import STATE_DB, watch_status
from rune_mcp.watch.tail import WatchDB
from watch.sessions import claude_lines

IDLE_S = 2.0


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "rune_mcp", "watch", "--no-train"],
            env=env, stdout=subprocess.DEVNULL, stderr=err,
        )


def _content_lines(path: Path) -> tuple[int, int]:
    lines = path.read_text(encoding="utf-8").splitlines()
    content = sum(json.loads(line).get("type") in ("user", "assistant") for line in lines)
    return len(lines), content


def test_sigkill_and_restart_lose_and_repeat_nothing(tmp_path: Path, rune_home: Path) -> None:
    claude = tmp_path / "claude"
    env = {
        **os.environ,
        "RUNE_CLAUDE_DIR": str(claude),
        "RUNE_CODEX_DIR": str(tmp_path / "codex"),
        "RUNE_CURSOR_DIR": str(tmp_path / "cursor"),
        "RUNE_CURSOR_STATE_DB": str(tmp_path / "cursor-db" / "state.vscdb"),
        "RUNE_IDLE_SECONDS": str(IDLE_S),
        "RUNE_WATCH_RESCAN_SECONDS": "0.5",
        "RUNE_MIN_SESSION_STEPS": "4",
    }
    log = tmp_path / "watch.log"
    rng = random.Random(9)
    # Sessions alternate between two projects, written one after the other (a session ends
    # when the next one in its project starts, or when it goes idle), until the watcher has
    # been killed at least five times while running.
    plan: list[tuple[str, str]] = []
    settings = load_settings(env)
    watcher = _start(env, log)
    kills = 0
    alive_since: float | None = None  # when the current watcher was seen in its loop
    kill_after = 0.0
    checked = 0.0
    try:
        while (len(plan) < 6 or kills < 5) and len(plan) < 60:
            project, name = f"-home-dev-p{len(plan) % 2}", f"s{len(plan):02d}"
            plan.append((project, name))
            path = claude / "projects" / project / f"{name}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            data = "".join(
                line + "\n"
                for line in claude_lines(f"task {name}", turns=40, session=name,
                                         cwd=f"/home/dev/{project}")
            ).encode()
            at = 0
            with path.open("ab", buffering=0) as handle:
                while at < len(data):
                    step = rng.randint(1, 512)
                    handle.write(data[at : at + step])
                    at += step
                    time.sleep(rng.random() * 0.02)
                    now = time.monotonic()
                    if alive_since is None and now - checked > 0.05:
                        checked = now
                        if watch_status(settings)["pid"] == watcher.pid:
                            alive_since, kill_after = now, rng.uniform(0.05, 0.8)
                    if alive_since is not None and now - alive_since > kill_after:
                        # Killed at a random moment while it reads and queues.
                        watcher.send_signal(signal.SIGKILL)
                        watcher.wait()
                        kills += 1
                        watcher = _start(env, log)
                        alive_since = None
        # Let the last sessions go idle and be queued, then stop cleanly.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if watch_status(settings)["sessions"].get("queued", 0) == len(plan):
                break
            time.sleep(0.2)
        watcher.send_signal(signal.SIGTERM)
        assert watcher.wait(timeout=20) == 0, log.read_text()
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert kills >= 5, f"the watcher was killed only {kills} times while running"

    db = WatchDB(rune_home / STATE_DB)
    rows = {Path(r["path"]).name: dict(r) for r in db.conn.execute("SELECT * FROM sessions")}
    assert sorted(rows) == sorted(f"{name}.jsonl" for _, name in plan)
    for project, name in plan:
        lines, content = _content_lines(claude / "projects" / project / f"{name}.jsonl")
        row = rows[f"{name}.jsonl"]
        assert (row["lines"], row["content"]) == (lines, content), name  # exactly once
        assert row["state"] == "queued", (name, row["reason"], log.read_text()[-3000:])
    jobs = JobQueue(load_settings(env)).recent(limit=100)
    assert sorted(Path(j.path or "").name for j in jobs) == sorted(rows)  # one job each
    assert {j.source for j in jobs} == {"watcher"}
    assert watch_status(load_settings(env))["running"] is False
