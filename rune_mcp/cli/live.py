"""`rune status --watch`: a live terminal view of the job queue and the watcher.

`render` turns one status snapshot (what `rune status --json` prints) into a rich renderable:
the library and worker on one line, each running job with a progress bar for its training
steps, the queue and recent failures, and the watcher with a bar per transcript it has not
read to the end. `watch_live` redraws it every second until Ctrl-C. Rendering is a pure
function of the snapshot, so it is tested on a made-up status without a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError

if TYPE_CHECKING:
    from rune_mcp.server.models import StatusResult

Snapshot = tuple["StatusResult", dict[str, Any]]  # the queue's and the watcher's status
_BAR = 30


def gatherer(settings: Settings) -> Callable[[], Snapshot]:
    """A function returning a fresh snapshot each call (the services are opened once)."""
    from rune_mcp.server import Rune
    from rune_mcp.watch import watch_status

    rune = Rune(settings, start_worker=False)
    return lambda: (rune.status(), watch_status(settings))


def watch_live(
    settings: Settings,
    interval: float = 1.0,
    console: Console | None = None,
    gather: Callable[[], Snapshot] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Redraw the view every `interval` seconds until Ctrl-C; return the exit code (0)."""
    console = console or Console()
    if not console.is_terminal:
        raise UsageError("`rune status --watch` needs a terminal; use `rune status --json` "
                         "in scripts.")
    gather = gather or gatherer(settings)
    try:
        with Live(render(*gather()), console=console, auto_refresh=False,
                  transient=False) as live:
            while True:
                sleep(interval)
                live.update(render(*gather()), refresh=True)
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how this view ends


def render(
    status: StatusResult, watcher: dict[str, Any], now: float | None = None
) -> RenderableType:
    """The whole view for one snapshot (what `rune status --json` prints, in two parts)."""
    stamp = time.strftime("%H:%M:%S", time.localtime(now if now is not None else time.time()))
    parts: list[RenderableType] = [_headline(status)]
    parts += [Text(f"problem: {p}", style="bold red") for p in status.problems]
    parts.append(_jobs_panel(status))
    parts.append(_watcher_panel(watcher))
    parts.append(Text(f"{stamp}  refreshing every second; Ctrl-C stops", style="dim"))
    return Group(*parts)


def _headline(status: StatusResult) -> Text:
    adapters = "?" if status.adapters is None else str(status.adapters)
    base = status.base_model["name"] if status.base_model else "unavailable"
    worker = "worker active" if status.worker_active else "no worker running"
    line = Text(f"Rune {status.version}", style="bold")
    line.append(f"  {adapters} adapters  base {base}  backend {status.backend}  ")
    line.append(worker, style="green" if status.worker_active else "yellow")
    return line


def _jobs_panel(status: StatusResult) -> Panel:
    jobs = status.jobs
    counts = "  ".join(f"{state} {jobs.get(state, 0)}"
                       for state in ("queued", "running", "done", "failed"))
    parts: list[RenderableType] = [Text(counts)]
    if status.running:
        parts.append(_running_table(status.running))
    if status.queued:
        table = Table("queued", "transcript", "source", "attempts", "ready in", box=None)
        for job in status.queued:
            ready = float(job.get("ready_in_s") or 0)
            table.add_row(str(job["id"]), _name(job.get("transcript")), str(job.get("source")),
                          str(job.get("attempts", 0)), f"{ready:.0f} s" if ready else "now")
        parts.append(table)
    if status.recent_failures:
        table = Table("failed", "transcript", "error", box=None)
        for job in status.recent_failures:
            table.add_row(str(job["id"]), _name(job.get("transcript")),
                          Text(str(job.get("error") or ""), style="red"))
        parts.append(table)
    return Panel(Group(*parts), title="jobs", title_align="left")


def _running_table(running: list[dict[str, Any]]) -> Table:
    table = Table("running", "transcript", "progress", "", "message", box=None)
    for job in running:
        bar, label = _job_bar(job.get("progress"))
        table.add_row(str(job["id"]), _name(job.get("transcript")), bar, label,
                      str(job.get("message") or ""))
    return table


def _job_bar(progress: dict[str, Any] | None) -> tuple[ProgressBar, str]:
    """A bar of training steps; a pulsing one while the job is in a phase without steps."""
    if not progress or not progress.get("total"):
        return ProgressBar(total=None, width=_BAR, pulse=True), "working"
    total, step = int(progress["total"]), int(progress.get("step") or 0)
    percent = 100 * step // total if total else 0
    return ProgressBar(total=total, completed=step, width=_BAR), f"{step}/{total} {percent}%"


def _watcher_panel(watcher: dict[str, Any]) -> Panel:
    state = f"running (pid {watcher['pid']})" if watcher.get("running") else "not running"
    head = Text(f"{state}; {watcher.get('files', 0)} transcripts followed, "
                f"{_size(int(watcher.get('bytes_pending') or 0))} not yet read")
    if not watcher.get("running"):
        head.append("  (`rune watch` starts it)", style="dim")
    parts: list[RenderableType] = [head]
    if watcher.get("error"):
        parts.append(Text(str(watcher["error"]), style="red"))
    behind = [o for o in watcher.get("offsets", []) if int(o["size"]) > int(o["offset"])]
    if behind:
        table = Table("reading", "progress", "", box=None)
        for entry in behind:
            offset, size = int(entry["offset"]), int(entry["size"])
            table.add_row(_name(entry["path"]), ProgressBar(total=size, completed=offset, width=_BAR),
                          f"{_size(offset)} / {_size(size)}")
        parts.append(table)
    if watcher.get("roots"):
        table = Table("agent", "folder", "mode", box=None)
        for root in watcher["roots"]:
            mode = root.get("mode") or ("not watched" if root.get("exists") else "missing")
            table.add_row(str(root["agent"]), str(root["path"]), str(mode))
        parts.append(table)
    if watcher.get("sessions"):
        parts.append(Text("sessions: " + ", ".join(
            f"{n} {s}" for s, n in sorted(watcher["sessions"].items()))))
    return Panel(Group(*parts), title="watcher", title_align="left")


def _name(path: Any) -> str:
    return Path(str(path)).name if path else "(text)"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"
