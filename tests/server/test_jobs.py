"""The job queue: deduplication, debounce, one worker across processes, retries, recovery."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.config import Settings
from rune_mcp.distill.queue import JobQueue, backoff_seconds
from rune_mcp.errors import BackendError, InputError, LibraryError, ParseError, UsageError
from server.conftest import generic_transcript


def _transcript(tmp_path: Path, name: str = "s.jsonl", body: str | None = None) -> Path:
    path = tmp_path / name
    path.write_text(generic_transcript(0) if body is None else body)
    return path


def _nothing_to_learn() -> str:
    """A session that parses but holds no action: training refuses it at once."""
    return json.dumps({"task": "say hello", "session_id": "quiet", "steps": [
        {"kind": "user", "text": "say hello"}, {"kind": "assistant", "text": "hello"}]})


def test_same_path_queued_once_and_debounced(settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(settings)
    path = _transcript(tmp_path)
    first = queue.enqueue(path=path, source="hook", delay=100)
    again = queue.enqueue(path=path, source="hook", delay=200)
    assert again.id == first.id
    assert again.not_before >= first.not_before + 99  # pushed back by the later turn
    now = queue.enqueue(path=path, source="hook")  # SessionEnd: ready at once
    assert now.id == first.id and now.not_before <= time.time()
    assert queue.counts()["queued"] == 1


def test_done_path_is_not_queued_again_unless_it_changed(settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(settings)
    path = _transcript(tmp_path)
    job = queue.enqueue(path=path)
    with sqlite3.connect(queue.db_path) as conn:
        conn.execute("UPDATE jobs SET state = 'done', adapter_id = 'a1' WHERE id = ?", (job.id,))
    assert queue.enqueue(path=path).id == job.id
    path.write_text(generic_transcript(1))
    assert queue.enqueue(path=path).id != job.id


def test_a_path_is_parsed_when_queued_and_requeueing_keeps_the_newest_content(
    settings: Settings, tmp_path: Path
) -> None:
    queue = JobQueue(settings)
    path = _transcript(tmp_path)
    first = queue.enqueue(path=path, source="hook", delay=100)
    assert first.trajectory_id and first.session_id == "generic-0"
    path.write_text(generic_transcript(6))
    again = queue.enqueue(path=path, source="hook", delay=100)
    assert again.id == first.id and again.trajectory_id != first.trajectory_id
    with sqlite3.connect(queue.db_path) as conn:
        stored = conn.execute("SELECT trajectory_json FROM jobs WHERE id = ?",
                              (first.id,)).fetchone()[0]
    assert "variant 6" in stored  # the job carries what was read, not a path to open later
    path.write_text("not a transcript\n")
    with pytest.raises(ParseError):
        queue.enqueue(path=path)  # refused when queued, not later by the worker


def test_a_job_without_its_trajectory_fails_without_opening_its_path(
    settings: Settings, tmp_path: Path
) -> None:
    """A row as an older Rune queued it (a path, nothing parsed): the worker refuses it."""
    queue = JobQueue(settings)
    job = queue.enqueue(path=_transcript(tmp_path))
    with sqlite3.connect(queue.db_path) as conn:
        conn.execute("UPDATE jobs SET trajectory_json = NULL WHERE id = ?", (job.id,))
    assert queue.work(nice=0) == 1
    failed = queue.get(job.id)
    assert failed.state == "failed" and failed.attempts == 1
    assert failed.error and "remember the session again" in failed.error


def test_text_is_parsed_redacted_and_deduplicated_by_trajectory(settings: Settings) -> None:
    queue = JobQueue(settings)
    secret = "AKIAIOSFODNN7EXAMPLE"
    text = generic_transcript(1).replace("3 passed", f"3 passed key={secret}")
    job = queue.enqueue(text=text, source="mcp")
    assert job.trajectory_id and job.session_id == "generic-1"
    assert queue.enqueue(text=text).id == job.id  # same trajectory, same job
    assert queue.enqueue(text=generic_transcript(2)).id != job.id
    raw = b"".join(p.read_bytes() for p in queue.db_path.parent.glob("jobs.sqlite3*"))
    assert secret.encode() not in raw  # only the redacted trajectory is stored


def test_enqueue_refuses_bad_input(settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(settings)
    with pytest.raises(UsageError):
        queue.enqueue()
    with pytest.raises(UsageError):
        queue.enqueue(path=tmp_path, text="x")
    with pytest.raises(InputError):
        queue.enqueue(path=tmp_path / "missing.jsonl")


def test_worker_runs_a_text_job_through_the_real_pipeline_up_to_reuse(
    settings: Settings, library_with_adapters: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job whose trajectory an earlier job already remembered is done without training."""
    queue = JobQueue(settings)
    first = queue.enqueue(text=generic_transcript(3))
    with sqlite3.connect(queue.db_path) as conn:
        conn.execute(
            "UPDATE jobs SET state = 'done', adapter_id = ?, result = ?, finished = ? "
            "WHERE id = ?",
            (library_with_adapters[0], json.dumps({"adapter_id": library_with_adapters[0]}),
             time.time(), first.id),
        )
    path = Path(settings.home) / "copy.json"
    path.write_text(generic_transcript(3))
    second = queue.enqueue(path=path, fmt="generic")
    assert queue.work(nice=0) == 1
    done = queue.get(second.id)
    assert done.state == "done" and done.reused is True
    assert done.adapter_id == library_with_adapters[0]
    assert done.trajectory_id == first.trajectory_id


def test_permanent_failure_is_not_retried(settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(settings, backoff_s=0.01)
    path = _transcript(tmp_path, body=_nothing_to_learn())
    job = queue.enqueue(path=path, fmt="generic")
    assert queue.work(nice=0) == 1
    failed = queue.get(job.id)
    assert failed.state == "failed" and failed.attempts == 1
    assert failed.error and "\n" not in failed.error and "Traceback" not in failed.error


def test_transient_failure_is_retried_with_backoff(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def flaky(settings: Settings, traj: Any, method: Any = None, progress: Any = None) -> Any:
        calls.append(1)
        if len(calls) < 3:
            raise BackendError("the device is busy; try again.")
        progress(1, 1, "trained")
        from rune_mcp.distill.remember import RememberResult

        return RememberResult(
            adapter_id="f" * 64, trajectory_id=traj.id, lessons=2, examples=4, seconds=0.1,
            final_loss=0.3, method="lora", reused=False,
        )

    monkeypatch.setattr("rune_mcp.distill.remember.remember_trajectory", flaky)
    queue = JobQueue(settings, backoff_s=0.05)
    job = queue.enqueue(text=generic_transcript(4))
    assert queue.work(nice=0, max_sleep=0.05) == 3
    done = queue.get(job.id)
    assert done.state == "done" and done.attempts == 3 and done.adapter_id == "f" * 64
    assert done.result and done.result["lessons"] == 2
    assert backoff_seconds(1, 30) == 30 and backoff_seconds(3, 30) == 120
    assert backoff_seconds(30, 30) == 3600


def test_gives_up_after_max_attempts(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise LibraryError("the library is locked; try again.")

    monkeypatch.setattr("rune_mcp.distill.remember.remember_trajectory", broken)
    queue = JobQueue(settings, max_attempts=2, backoff_s=0.01)
    job = queue.enqueue(text=generic_transcript(5))
    assert queue.work(nice=0, max_sleep=0.02) == 2
    failed = queue.get(job.id)
    assert failed.state == "failed" and failed.error == "the library is locked; try again."
    assert queue.status()["recent_failures"][0]["id"] == job.id


def test_orphaned_running_job_is_requeued(settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(settings)
    job = queue.enqueue(path=_transcript(tmp_path, body=_nothing_to_learn()), fmt="generic")
    with sqlite3.connect(queue.db_path) as conn:
        conn.execute("UPDATE jobs SET state = 'running', attempts = 1 WHERE id = ?", (job.id,))
    assert queue.work(nice=0, once=True) == 1
    assert queue.get(job.id).attempts == 2  # taken again after the crash


def _hold_worker_lock(home: str, ready: Any, release: Any) -> None:
    from filelock import FileLock

    lock = FileLock(str(Path(home) / "jobs.worker.lock"))
    with lock:
        ready.set()
        release.wait(30)


def test_only_one_worker_per_library_across_processes(settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(settings)
    queue.enqueue(path=_transcript(tmp_path, body=_nothing_to_learn()), fmt="generic")
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    other = ctx.Process(target=_hold_worker_lock, args=(str(settings.home), ready, release))
    other.start()
    try:
        assert ready.wait(60)
        assert queue.work(nice=0) is None  # the other process is the worker
        assert queue.counts()["queued"] == 1
    finally:
        release.set()
        other.join(30)
    assert queue.work(nice=0) == 1


def test_a_keyed_job_without_a_transcript_is_queued_once_while_it_waits(
    settings: Settings,
) -> None:
    queue = JobQueue(settings)
    job = queue.enqueue_keyed("evolve:/src/harbor", fmt="evolve", source="cli",
                              path="/src/harbor")
    assert (job.state, job.kind, job.path, job.source) == ("queued", "evolve", "/src/harbor", "cli")
    assert job.not_before <= time.time()  # ready now
    with sqlite3.connect(queue.db_path) as conn:
        held = conn.execute("SELECT trajectory_json, session_id FROM jobs WHERE id = ?",
                            (job.id,)).fetchone()
    assert held == (None, None)
    assert queue.enqueue_keyed("evolve:/src/harbor", fmt="evolve", source="auto").id == job.id
    other = queue.enqueue_keyed("evolve:/src/quay", fmt="evolve", source="cli", path="/src/quay")
    assert other.id != job.id
    with sqlite3.connect(queue.db_path) as conn:  # a job already started no longer waits
        conn.execute("UPDATE jobs SET state = 'running' WHERE id = ?", (job.id,))
    again = queue.enqueue_keyed("evolve:/src/harbor", fmt="evolve", source="cli",
                                path="/src/harbor")
    assert again.id not in (job.id, other.id) and again.state == "queued"
    assert queue.counts()["queued"] == 2


def test_cancel_session_and_status(settings: Settings, tmp_path: Path) -> None:
    queue = JobQueue(settings)
    job = queue.enqueue(path=_transcript(tmp_path), session_id="s-1", delay=60)
    status = queue.status()
    assert status["counts"]["queued"] == 1 and status["queued"][0]["ready_in_s"] > 50
    assert status["queued"][0]["transcript"] == "s.jsonl"
    assert queue.cancel_session("s-1") == [job.id]
    assert queue.get(job.id).state == "failed"


def test_newer_schema_is_refused(settings: Settings) -> None:
    queue = JobQueue(settings)
    with sqlite3.connect(queue.db_path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(LibraryError, match="upgrade Rune"):
        JobQueue(settings)
