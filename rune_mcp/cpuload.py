"""How many cores other processes leave idle, on Linux, macOS and Windows alike.

The eager embedding path sizes its PyTorch thread pool by this, and the llama.cpp backend its
threads when it starts (`backend_threads`): threads that wait for each other on busy cores
are slower than fewer threads (docs/library.md#performance, docs/runtime.md). The machine's
busy CPU time comes from psutil, or from `/proc/stat` where psutil is missing; where neither
answers, the load average stands in.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rune_mcp.config import Settings

Sample = tuple[float, float, float]  # monotonic s, machine busy CPU s, this process's CPU s
# Time a core spent doing nothing, and guest time (already counted in user and nice).
_NOT_BUSY = frozenset({"idle", "iowait", "guest", "guest_nice"})
SETTLE_S = 0.1  # the shortest window a settled answer is read over (CPU clocks tick in 10 ms)


class CpuWatch:
    """Cores left idle by other processes: the machine's busy CPU time less this process's own,
    between two samples.

    The 1-minute load average lags: right after a busy minute it still reports the load that
    has gone, and a query would get one thread on an idle machine. Two samples of the
    machine's busy time, less what this process used between them, say what other processes
    use now. Until there are two samples (or where busy time cannot be read) the load
    average, less this process's own share, is the estimate.
    """

    MIN_INTERVAL_S = 0.2  # shorter windows are noise; the last answer stands meanwhile

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: Sample | None = None
        self._answer: int | None = None

    def idle_cores(self) -> int:
        cores = os.cpu_count() or 1
        sample = busy_sample()
        with self._lock:
            last = self._last
            if sample is None or last is None:
                self._last = sample
                others = max(0.0, load_average() - 1.0)  # no window yet: the slow estimate
                return max(1, int(cores - others + 0.5))
            if sample[0] - last[0] >= self.MIN_INTERVAL_S or self._answer is None:
                wall, busy, own = (now - then for now, then in zip(sample, last, strict=True))
                others = max(0.0, (busy - own) / max(wall, 1e-3))
                self._answer = max(1, int(cores - others + 0.5))
                self._last = sample
            return self._answer

    def settled_idle_cores(self) -> int:
        """`idle_cores` read over a window of at least `SETTLE_S`, never from the load average
        alone: without an earlier sample, or with one younger than that, it takes one and waits
        out the rest of the window."""
        with self._lock:
            last = self._last
        if last is None:
            self.idle_cores()  # the first sample (None where busy time cannot be read)
            with self._lock:
                last = self._last
        if last is not None:
            wait = SETTLE_S - (time.monotonic() - last[0])
            if wait > 0:
                time.sleep(wait)
        return self.idle_cores()


def backend_threads(settings: Settings, idle: Callable[[], int] | None = None) -> int:
    """The threads a backend starts with. `threads` set in the environment, `rune.toml` or an
    override is used as given; the default (every core) becomes the cores other processes
    leave idle now, at least 1: on a shared CPU a thread beyond them spins at every barrier
    while another is descheduled. `idle` counts those cores (default: `CPU_WATCH`)."""
    if settings.sources.get("threads", "default") != "default":
        return settings.threads
    cores = (idle or CPU_WATCH.settled_idle_cores)()
    return max(1, min(settings.threads, cores))


def busy_sample() -> Sample | None:
    """(monotonic seconds, machine busy CPU seconds, this process's CPU seconds), or None."""
    busy = _psutil_busy()
    if busy is None:
        busy = _proc_stat_busy()
    if busy is None:
        return None
    own = os.times()
    return time.monotonic(), busy, own.user + own.system


def load_average() -> float:
    """The 1-minute load average (psutil emulates it on Windows); 0.0 where none is known."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        pass
    psutil = _psutil()
    try:
        return float(psutil.getloadavg()[0]) if psutil is not None else 0.0
    except (AttributeError, OSError):
        return 0.0


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def _psutil_busy() -> float | None:
    psutil = _psutil()
    if psutil is None:
        return None
    try:
        times = psutil.cpu_times()._asdict()
    except (OSError, RuntimeError, psutil.Error):
        return None
    return float(sum(v for k, v in times.items() if k not in _NOT_BUSY))


def _proc_stat_busy() -> float | None:
    """Busy seconds from the first line of /proc/stat (Linux without psutil)."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 8:
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (sum(ticks) - idle) / hz


CPU_WATCH = CpuWatch()
