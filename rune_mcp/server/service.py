"""The services behind Rune's tools: library, queue and runtime for one server process.

Each is opened on first use, so that `rune serve` starts fast and a tool that needs only the
queue never loads Chroma or the base model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from rune_mcp import __version__
from rune_mcp.config import Settings
from rune_mcp.distill.queue import STATES, JobQueue, start_worker_thread
from rune_mcp.errors import RuneError
from rune_mcp.quarantine import quarantined
from rune_mcp.server.models import StatusResult

log = logging.getLogger(__name__)

# What the status shows of a queue it cannot read.
_NO_QUEUE: dict[str, Any] = {
    "counts": dict.fromkeys(STATES, 0),
    "running": [], "queued": [], "recent_failures": [], "worker": {"active": False},
}


class Rune:
    """Library, queue and runtime for one server process, each opened on first use."""

    def __init__(
        self, settings: Settings, roots: Sequence[Path] = (), start_worker: bool = True
    ) -> None:
        self.settings = settings
        self.roots = [Path(r).expanduser().resolve() for r in roots]
        self.start_worker = start_worker
        self._queue: JobQueue | None = None
        self._library: Any = None
        self._lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._base: dict[str, Any] | None = None
        self._base_lock = threading.Lock()
        self.run_lock = anyio.Lock()

    def base_model(self) -> dict[str, Any]:
        """The base model's description, read once: it hashes and parses a GGUF file."""
        with self._base_lock:  # concurrent first calls would each parse the whole file
            if self._base is None:
                from rune_mcp.basemodel import resolve_base

                info = resolve_base(self.settings)
                self._base = {"name": info.name, "architecture": info.architecture,
                              "fingerprint": info.fingerprint[:16], "embedded": info.embedded}
            return self._base

    def queue(self) -> JobQueue:
        with self._lock:
            if self._queue is None:
                self._queue = JobQueue(self.settings)
            return self._queue

    def library(self) -> Any:
        with self._lock:
            if self._library is None:
                from rune_mcp.library import Library

                self._library = Library.open(self.settings)
            return self._library

    def has_queued(self) -> bool:
        """Whether jobs wait in the queue; a queue that cannot be read says no (and why, in
        the log), so that `rune serve` still starts and `memory_status` names the problem."""
        try:
            return bool(self.queue().counts()["queued"])
        except RuneError as exc:
            log.warning("%s", exc)
            return False

    def kick_worker(self) -> None:
        """Start a worker thread unless one is alive here (another process may hold the lock,
        in which case the thread exits at once and that process takes the job)."""
        if not self.start_worker:
            return
        with self._lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = start_worker_thread(self.settings)

    def status(self) -> StatusResult:
        """Library size, jobs, base model and backend; a part that fails is reported, not
        raised, so that status still answers when the library or the model is broken."""
        problems: list[str] = []
        try:
            queue = self.queue().status()
        except RuneError as exc:  # a damaged queue must not silence the rest of the status
            problems.append(str(exc))
            queue = _NO_QUEUE
        adapters: int | None = None
        damaged = 0
        try:
            found = self.library().inventory()
            adapters, damaged = len(found.records), len(found.damaged)
            if damaged:
                problems.append(damage_sentence(found.damaged))
        except RuneError as exc:
            problems.append(str(exc))
        base: dict[str, Any] | None = None
        try:
            base = self.base_model()
        except RuneError as exc:
            problems.append(str(exc))
        problems += [moved.sentence() for moved in quarantined(self.settings.home)]
        return StatusResult(
            version=__version__,
            adapters=adapters,
            jobs=queue["counts"],
            running=queue["running"],
            queued=queue["queued"],
            recent_failures=queue["recent_failures"],
            worker_active=queue["worker"]["active"],
            base_model=base,
            backend=self.settings.backend,
            problems=problems,
            damaged_adapters=damaged,
        )


def damage_sentence(damaged: Sequence[Any]) -> str:
    """`2 adapters are damaged and not used (0123456789ab, ...); ...`: one sentence."""
    ids = ", ".join(d.adapter_id[:12] for d in damaged[:5]) + (", ..." if len(damaged) > 5 else "")
    count = "1 adapter is" if len(damaged) == 1 else f"{len(damaged)} adapters are"
    return (
        f"{count} damaged and not used ({ids}); `rune adapters verify` shows the problems and "
        "`rune adapters rm ID` removes one."
    )


def status_text(status: StatusResult) -> str:
    """The status as a few lines for a person: counts first, then running jobs and problems."""
    jobs = status.jobs
    base = status.base_model["name"] if status.base_model else "unavailable"
    damaged = f" ({status.damaged_adapters} damaged)" if status.damaged_adapters else ""
    lines = [
        f"Rune {status.version}: {status.adapters if status.adapters is not None else '?'} "
        f"adapter(s){damaged}; jobs queued {jobs['queued']}, running {jobs['running']}, "
        f"done {jobs['done']}, failed {jobs['failed']}; base model {base}; "
        f"backend {status.backend}.",
    ]
    for job in status.running:
        lines.append(f"running {job['id']}: {job.get('message') or ''}")
    lines += [f"problem: {p}" for p in status.problems]
    return "\n".join(lines)


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Blocking library work off the event loop, so one slow call never stalls the others."""
    return await anyio.to_thread.run_sync(fn)
