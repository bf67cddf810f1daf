"""Evolve jobs: the Evolution Operator run by the job queue's worker, and queued on its own.

An evolve job is a row of the queue (`rune_mcp.distill.queue`) of format `evolve`, keyed
`evolve:<project>`, holding the project in `path` and no transcript. The worker runs it like
any job, one at a time, at lowered priority, with its progress in the row; a worker killed
midway leaves it `running`, the next worker queues it again, and the run resumes from its
checkpoint (`rune_mcp.distill.evolvestate`). While one evolve job of a project waits in the
queue, queueing another returns it.

With `evolve_after_sessions` = N (0: off), remembering a session that brings a project's
single-session adapters for the base model to a multiple of N (and at least 2) queues an evolve
job for the project, so the project's composition follows its memory without anyone asking.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.distill.job import EVOLVE_FORMAT, Job
from rune_mcp.distill.queue import JobQueue
from rune_mcp.errors import InputError
from rune_mcp.library.lineage import parents_of

log = logging.getLogger(__name__)
KEY_PREFIX = "evolve:"


def enqueue_evolve(queue: JobQueue, project: str, source: str = "cli") -> Job:
    """Queue evolving `project` (its full path, as adapters record it); the job already
    waiting for it when there is one."""
    return queue.enqueue_keyed(KEY_PREFIX + project, fmt=EVOLVE_FORMAT, source=source,
                               path=project)


def due(settings: Settings, record: Any, library: Any = None) -> bool:
    """Whether storing `record` (a new adapter) makes its project due for evolving."""
    from rune_mcp.library import Library

    every = settings.evolve_after_sessions
    if every <= 0 or not record.project or parents_of(record):
        return False
    lib = library if library is not None else Library.open(settings)
    count = sum(1 for r in lib.list(project=record.project)
                if not parents_of(r) and r.base_fingerprint == record.base_fingerprint)
    return count >= 2 and count % every == 0


def enqueue_if_due(settings: Settings, record: Any, library: Any = None) -> Job | None:
    """Queue evolving `record`'s project when `due`; the job, or None."""
    if not due(settings, record, library):
        return None
    job = enqueue_evolve(JobQueue(settings), str(record.project), source="auto")
    log.info("queued evolving project %s (job %s)", record.project, job.id)
    return job


def run_evolve_job(settings: Settings, row: sqlite3.Row,
                   progress: Callable[[int, int, str], None]) -> dict[str, Any]:
    """Run the evolve job `row` (the worker's hook); its result for the job's row."""
    from rune_mcp.distill.evolve import evolve_project

    if not row["path"]:
        raise InputError(f"evolve job {row['id']} names no project; queue it again with "
                         "`rune evolve --queue --project P`.")
    result = evolve_project(settings, row["path"], progress=progress)
    return {"kind": "evolve", "adapter_id": result.stored, "reused": False, **result.to_dict()}
