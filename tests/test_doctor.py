"""Damaged state files: the job queue and the watcher's state heal on open or through
`rune doctor --repair`, moved aside (never deleted), with every readable job kept."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from server.conftest import generic_transcript

from rune_mcp import doctor
from rune_mcp.cli import main
from rune_mcp.config import Settings, load_settings
from rune_mcp.distill.job import queue_file
from rune_mcp.distill.queue import JobQueue
from rune_mcp.heal import diagnose, heal
from rune_mcp.quarantine import quarantined
from rune_mcp.server import Rune
from rune_mcp.sqlite import StateDamaged
from rune_mcp.watch.sessions import SESSIONS_SCHEMA
from rune_mcp.watch.status import watch_status
from rune_mcp.watch.tail import STATE_DB, Tailer, WatchDB

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rune doctor` without its slow environment checks (torch, the base model ...)."""
    monkeypatch.setattr(doctor, "environment", lambda settings: [])


def _queue_with_jobs(settings: Settings, n: int, copies: int = 0) -> tuple[JobQueue, set[str]]:
    """A queue holding `n` text jobs, plus `copies` copies of the first (several pages)."""
    queue = JobQueue(settings)
    ids = {queue.enqueue(text=generic_transcript(i), source="cli").id for i in range(n)}
    if copies:
        with contextlib.closing(sqlite3.connect(queue.db_path)) as conn, conn:
            conn.execute(
                "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) "
                "INSERT INTO jobs (id, key, state, source, fmt, trajectory_json, max_attempts, "
                "not_before, created, updated) SELECT printf('copy%08d', i), 'copy:' || i, "
                "'queued', 'cli', 'auto', (SELECT trajectory_json FROM jobs LIMIT 1), 3, 0, "
                "i, i FROM k", (copies,),
            )
            ids |= {r[0] for r in conn.execute("SELECT id FROM jobs WHERE key LIKE 'copy:%'")}
    _checkpoint(queue.db_path)
    return queue, ids


def _sql(path: Path, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(statement)


def _checkpoint(path: Path) -> None:
    """Everything into the main file, no WAL left: the file alone is the database."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.close()


def _ids(queue: JobQueue) -> set[str]:
    with queue.connect() as conn:
        return {r["id"] for r in conn.execute("SELECT id FROM jobs")}


def _only_quarantined(settings: Settings, name: str = "jobs.sqlite3") -> Any:
    moved = quarantined(settings.home)
    assert len(moved) == 1, moved
    assert moved[0].path.name.startswith(f"{name}.damaged-")
    assert moved[0].path.name[len(name) + 9:].endswith("Z")  # a UTC timestamp
    return moved[0]


# --- the job queue --------------------------------------------------------------------


def test_queue_that_is_not_a_database_is_moved_aside_on_open(settings: Settings) -> None:
    path = settings.home / "jobs.sqlite3"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"these bytes are no database " * 20)
    queue = JobQueue(settings)
    assert queue.counts()["queued"] == 0
    job = queue.enqueue(text=generic_transcript(1))
    assert queue.get(job.id).state == "queued"
    moved = _only_quarantined(settings)
    assert moved.path.read_bytes() == b"these bytes are no database " * 20  # kept as it was
    assert "file is not a database" in moved.reason
    assert "lost" in moved.outcome and "rune jobs add" in moved.outcome


def test_queue_with_wrong_columns_keeps_every_job(settings: Settings) -> None:
    queue, ids = _queue_with_jobs(settings, 3)
    _sql(queue.db_path, "ALTER TABLE jobs DROP COLUMN progress_message")
    healed = JobQueue(settings)
    assert _ids(healed) == ids
    assert all(healed.get(i).trajectory_id for i in ids)
    moved = _only_quarantined(settings)
    assert "table jobs has no column progress_message" in moved.reason
    assert moved.outcome == "all 3 jobs it held were copied into a new file"


def test_truncated_queue_keeps_the_jobs_it_still_holds(settings: Settings) -> None:
    queue, ids = _queue_with_jobs(settings, 2, copies=400)
    data = queue.db_path.read_bytes()
    queue.db_path.write_bytes(data[: len(data) // 2])
    healed = JobQueue(settings)
    kept = _ids(healed)
    assert kept < ids and len(kept) > 50  # the first half's rows, not the rest
    moved = _only_quarantined(settings)
    assert f"{len(kept)} jobs were copied" in moved.outcome and "lost" in moved.outcome
    assert moved.path.stat().st_size == len(data) // 2  # the damaged copy is left untouched


def test_directory_where_the_queue_should_be(settings: Settings) -> None:
    path = settings.home / "jobs.sqlite3"
    (path / "inside").mkdir(parents=True)
    queue = JobQueue(settings)
    queue.enqueue(text=generic_transcript(1))
    moved = _only_quarantined(settings)
    assert moved.path.is_dir() and (moved.path / "inside").is_dir()
    assert "a directory stands where the database file should be" in moved.reason


def _spoil_middle_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    middle = (len(data) // page // 2) * page
    data[middle : middle + page] = b"\xa5" * page
    path.write_bytes(bytes(data))


def test_damage_met_after_opening_is_named_and_repaired_by_the_doctor(
    settings: Settings, no_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    queue, ids = _queue_with_jobs(settings, 2, copies=400)
    _spoil_middle_page(queue.db_path)
    opened = JobQueue(settings)  # the schema page is fine: opening alone cannot tell
    with pytest.raises(StateDamaged, match="rune doctor --repair"):
        opened.recent(limit=1000)
    status = Rune(settings, start_worker=False).status()  # still answers
    assert any("is damaged" in p and "rune doctor --repair" in p for p in status.problems)

    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] job queue: the job queue" in out and "is damaged" in out

    assert main(["doctor", "--repair", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and len(report["repaired"]) == 1
    assert [q["path"] for q in report["quarantined"]] == [str(_only_quarantined(settings).path)]
    kept = _ids(JobQueue(settings))
    assert 0 < len(kept) < len(ids) and kept <= ids
    assert JobQueue(settings).recent(limit=1000)  # whole again
    assert diagnose(queue_file(queue.db_path)) is None


def test_two_healers_move_the_file_once(settings: Settings) -> None:
    """The second process to take the lock finds the fresh file healthy and leaves it."""
    path = settings.home / "jobs.sqlite3"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"garbage" * 100)
    state = queue_file(path)
    assert heal(state) is not None
    JobQueue(settings).enqueue(text=generic_transcript(1))
    assert heal(state) is None  # healthy now: nothing moved, the new job stays
    assert len(quarantined(settings.home)) == 1 and JobQueue(settings).counts()["queued"] == 1


def _open_and_enqueue(home: str, n: int, barrier: Any) -> None:
    os.environ["RUNE_HOME"] = home
    settings = load_settings()
    barrier.wait(timeout=120)
    JobQueue(settings).enqueue(text=generic_transcript(100 + n), source="cli")


def test_processes_opening_a_damaged_queue_at_once_lose_nothing(settings: Settings) -> None:
    queue, ids = _queue_with_jobs(settings, 3)
    _sql(queue.db_path, "ALTER TABLE jobs DROP COLUMN error")  # damaged, all rows readable
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_open_and_enqueue, args=(str(settings.home), n, barrier))
             for n in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(180)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    _only_quarantined(settings)  # moved once, by whichever got the lock first
    kept = JobQueue(settings).recent(limit=100)
    assert ids <= {j.id for j in kept} and len(kept) == 3 + 4


# --- the watcher's state ----------------------------------------------------------------


def test_watcher_state_that_is_not_a_database_starts_afresh(
    settings: Settings, tmp_path: Path
) -> None:
    path = settings.home / STATE_DB
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00not sqlite\x00" * 50)
    assert "is damaged" in watch_status(settings)["error"]
    transcript = tmp_path / "t.jsonl"
    transcript.write_text('{"a": 1}\n{"b": 2}\n')
    db = WatchDB(path, SESSIONS_SCHEMA)
    try:
        lines: list[bytes] = []
        assert Tailer(db).poll(transcript, lambda chunk, tx: lines.extend(chunk.lines)) == 2
        assert lines == [b'{"a": 1}', b'{"b": 2}']  # read again from the start
    finally:
        db.close()
    moved = _only_quarantined(settings, "state.sqlite3")
    assert "reads every transcript in its folders again" in moved.outcome


def test_watcher_state_with_wrong_columns_or_a_directory(settings: Settings) -> None:
    path = settings.home / STATE_DB
    path.parent.mkdir(parents=True)
    _sql(path, "CREATE TABLE files (id INTEGER PRIMARY KEY, path TEXT)")
    WatchDB(path, SESSIONS_SCHEMA).close()
    path.unlink()
    path.mkdir()
    WatchDB(path, SESSIONS_SCHEMA).close()
    reasons = sorted(q.reason for q in quarantined(settings.home))
    assert len(reasons) == 2
    assert any("table files has no column dev" in r for r in reasons)
    assert any("a directory stands" in r for r in reasons)


def test_doctor_names_a_damaged_watcher_state_and_repairs_it(
    settings: Settings, no_environment: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = settings.home / STATE_DB
    WatchDB(path, SESSIONS_SCHEMA).close()
    _checkpoint(path)
    path.write_bytes(path.read_bytes()[:1024])  # truncated inside its first page
    assert main(["doctor", "--json"]) == 1
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert not checks["watcher state"]["ok"] and "is damaged" in checks["watcher state"]["detail"]
    assert checks["job queue"]["ok"] and checks["adapter index"]["ok"]
    assert main(["doctor", "--repair"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("repaired: the watcher state") and "[warn] quarantined:" in out
    assert main(["doctor", "--repair"]) == 0  # nothing left to do
    assert "nothing to repair." in capsys.readouterr().out


# --- status and serve -------------------------------------------------------------------


def test_status_names_every_quarantined_file(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("jobs.sqlite3", str(STATE_DB)):
        (settings.home / name).parent.mkdir(parents=True, exist_ok=True)
        (settings.home / name).write_bytes(b"junk" * 64)
    JobQueue(settings)
    WatchDB(settings.home / STATE_DB, SESSIONS_SCHEMA).close()
    moved = [str(q.path) for q in quarantined(settings.home)]
    assert len(moved) == 2
    assert main(["status", "--json"]) == 0
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert all(any(m in p for p in problems) for m in moved)
    assert main(["status"]) == 0
    text = capsys.readouterr().out
    assert all(f"moved aside to {m}" in text for m in moved)


def _call_memory_status(settings: Settings, cwd: Path) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNE_")}
    env.update(RUNE_HOME=str(settings.home), RUNE_CACHE_DIR=str(settings.cache_dir),
               PYTHONPATH=str(REPO))
    init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "test", "version": "1"}}}
    lines = [init, {"jsonrpc": "2.0", "method": "notifications/initialized"},
             {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
              "params": {"name": "memory_status", "arguments": {}}}]
    stdin = b"".join(json.dumps(m).encode() + b"\n" for m in lines)
    log = cwd / "serve-stderr.log"
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "rune_mcp", "serve"],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                env=env, cwd=cwd)
    assert proc.stdin and proc.stdout
    proc.stdin.write(stdin)
    proc.stdin.flush()
    watchdog = threading.Timer(180, proc.kill)  # a hung server fails the test, never hangs it
    watchdog.start()
    try:
        while True:  # every stdout line is a JSON-RPC message; the answer to id 1 ends it
            raw = proc.stdout.readline()
            assert raw, f"rune serve stopped early: {log.read_text()[-2000:]}"
            message = json.loads(raw)
            if message.get("id") == 1:
                return dict(message["result"])
    finally:
        watchdog.cancel()
        proc.stdin.close()
        proc.wait(60)
        proc.stdout.close()
        assert proc.returncode == 0, log.read_text()[-2000:]


@pytest.mark.parametrize("damage", ["not a database", "damaged page"])
def test_serve_answers_memory_status_with_a_damaged_queue(
    settings: Settings, tmp_path: Path, damage: str
) -> None:
    path = settings.home / "jobs.sqlite3"
    if damage == "not a database":
        path.parent.mkdir(parents=True)
        path.write_bytes(b"garbage" * 500)
    else:
        _queue_with_jobs(settings, 1, copies=400)
        _spoil_middle_page(path)
    result = _call_memory_status(settings, tmp_path)
    assert not result.get("isError"), result
    problems = result["structuredContent"]["problems"]
    wanted = "moved aside to" if damage == "not a database" else "rune doctor --repair"
    assert any(wanted in p for p in problems), problems
