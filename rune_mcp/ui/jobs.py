"""The job queue page and its live updates: server-sent events carrying the table itself.

The stream sends the same server-rendered table the page starts with whenever the queue
changes (checked every `poll` seconds), so the browser only swaps it in: one renderer, no
client-side templating. A stream ends after `duration` seconds and EventSource reconnects,
so a forgotten tab never holds a connection for days.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from rune_mcp.config import Settings
from rune_mcp.distill.queue import Job, JobQueue
from rune_mcp.ui.html import Markup, el, join
from rune_mcp.ui.layout import adapter_link, notice, page, prose, when_epoch

LIMIT = 100
KEEPALIVE_S = 15.0


def snapshot(settings: Settings) -> tuple[dict[str, Any], list[Job]]:
    """The queue's status (counts, worker) and its most recent jobs."""
    queue = JobQueue(settings)
    return queue.status(), queue.recent(limit=LIMIT)


def progress_cell(job: Job) -> Markup:
    step, total = job.progress_step, job.progress_total
    bar: object = ""
    if job.state == "running" and total:
        bar = el("progress", f"{step}/{total}", value=step or 0, max=total)
    label = f"{step}/{total}" if total else ""
    return join([bar, " ", el("span", label, class_="muted") if label else "",
                 el("div", job.progress_message or "", class_="message")])


def outcome_cell(job: Job) -> Markup:
    if job.state == "done" and job.adapter_id:
        reused = " (already remembered)" if job.reused else ""
        return join(["adapter ", adapter_link(job.adapter_id), reused])
    if job.state == "failed":
        return el("span", job.error or "failed without a reason recorded.", class_="error")
    if job.state == "queued":
        wait = job.not_before - time.time()
        if wait > 0.5:
            return el("span", f"ready in {wait:.0f} s", class_="muted")
        return el("span", "waiting for the worker", class_="muted")
    return Markup("")


def job_row(job: Job) -> Markup:
    transcript = Path(job.path).name if job.path else "(text)"
    return el("tr",
              el("td", el("code", job.id)),
              el("td", el("span", job.state, class_=f"state {job.state}")),
              el("td", job.source),
              el("td", transcript, title=job.path or ""),
              el("td", el("code", (job.session_id or "-")[:24])),
              el("td", when_epoch(job.created)),
              el("td", f"{job.attempts}/{job.max_attempts}"),
              el("td", progress_cell(job), class_="progress"),
              el("td", outcome_cell(job)),
              id=f"job-{job.id}", data_state=job.state)


def fragment(status: dict[str, Any], jobs: list[Job]) -> Markup:
    """The counts line and the table: what the page starts with and each event replaces."""
    counts = status["counts"]
    worker = status["worker"]
    working = (f"a worker is running (pid {worker.get('pid')})" if worker.get("active")
               else "no worker is running; `rune jobs work` or `rune serve` starts one")
    line = el("p", join([el("span", f"{counts.get(s, 0)} {s}", class_=f"state {s}")
                         for s in ("queued", "running", "done", "failed")], " "),
              " · ", prose(working), class_="counts")
    if not jobs:
        return join([line, notice("No jobs yet: `rune jobs add PATH`, an agent's hook or the "
                                  "watcher queues finished sessions here.")])
    head = ["job", "state", "source", "transcript", "session", "created", "attempts",
            "progress", "outcome"]
    table = el("table", el("thead", el("tr", [el("th", h) for h in head])),
               el("tbody", [job_row(j) for j in jobs]), class_="jobs")
    return join([line, table])


def jobs_page(status: dict[str, Any], jobs: list[Job]) -> str:
    live = el("p", el("span", "connecting…", id="live", class_="live"), class_="muted")
    return page("Jobs", "jobs", live,
                el("div", fragment(status, jobs), id="jobs", data_stream="/jobs/events"),
                scripts=("jobs.js",))


def event(name: str, data: dict[str, Any]) -> str:
    """One server-sent event; JSON keeps the HTML on a single `data:` line."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(
    settings: Settings, disconnected: Callable[[], Any], *, poll: float, duration: float
) -> AsyncIterator[str]:
    """`jobs` events (the first at once, then on each change) until `duration` has passed
    or the client went away; a comment now and then keeps proxies from closing the line."""
    yield "retry: 2000\n\n"
    last = ""
    started = quiet = time.monotonic()
    while True:
        status, jobs = await anyio.to_thread.run_sync(lambda: snapshot(settings))
        html = str(fragment(status, jobs))
        now = time.monotonic()
        if html != last:
            last = html
            quiet = now
            yield event("jobs", {"html": html, "counts": status["counts"]})
        elif now - quiet >= KEEPALIVE_S:
            quiet = now
            yield ": keepalive\n\n"
        if now - started >= duration or await disconnected():
            return
        await anyio.sleep(poll)
