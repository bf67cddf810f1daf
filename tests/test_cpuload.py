"""Idle cores: other processes' CPU time counts, this process's does not, on any platform."""

from __future__ import annotations

import os
import sys
import time

import pytest

from rune_mcp import cpuload


def test_cpu_watch_counts_other_processes_not_this_one(monkeypatch: pytest.MonkeyPatch) -> None:
    samples = iter([
        (0.0, 100.0, 10.0),
        (1.0, 101.0, 11.0),  # one core busy, all of it this process: both cores are free
        (1.1, 101.2, 11.1),  # too soon after: the last answer stands
        (2.0, 102.0, 11.0),  # one core busy with another process: one core left
        (3.0, 104.0, 11.0),  # both busy with others: still one thread, never zero
    ])
    monkeypatch.setattr(cpuload, "busy_sample", lambda: next(samples))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (5.0, 5.0, 5.0))
    watch = cpuload.CpuWatch()
    assert watch.idle_cores() == 1  # no window yet: the load average says busy
    assert [watch.idle_cores() for _ in range(4)] == [2, 2, 1, 1]


def test_without_busy_time_the_load_average_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpuload, "busy_sample", lambda: None)
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert cpuload.CpuWatch().idle_cores() == 3  # one other process's worth of load


def test_busy_sample_reads_this_machine() -> None:
    first = cpuload.busy_sample()
    assert first is not None  # psutil reads busy time on Linux, macOS and Windows
    # Spend CPU time of our own until the clock (10 ms ticks on Linux) has seen it, at most 5 s:
    # a fixed amount of work can fall inside one tick on a fast or busy machine.
    start = os.times()
    while (os.times().user + os.times().system) - (start.user + start.system) < 0.05:
        if time.monotonic() - first[0] > 5.0:
            break
        sum(i * i for i in range(50_000))
    second = cpuload.busy_sample()
    assert second is not None and second[0] > first[0] and second[2] > first[2]
    assert second[1] >= first[1]


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc/stat")
def test_without_psutil_linux_reads_proc_stat(monkeypatch: pytest.MonkeyPatch) -> None:
    with_psutil = cpuload._psutil_busy()
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` now fails
    assert cpuload._psutil_busy() is None
    from_proc = cpuload.busy_sample()
    assert from_proc is not None and with_psutil is not None
    assert abs(from_proc[1] - with_psutil) < 5.0 * (os.cpu_count() or 1)  # the same clock


def test_without_psutil_or_proc_the_estimate_still_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psutil", None)
    monkeypatch.setattr(cpuload, "_proc_stat_busy", lambda: None)
    monkeypatch.delattr(os, "getloadavg")  # as on Windows
    assert cpuload.busy_sample() is None and cpuload.load_average() == 0.0
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert cpuload.CpuWatch().idle_cores() == 2


def test_backend_threads_default_follows_the_idle_cores() -> None:
    from rune_mcp.config import load_settings

    default = load_settings({})
    assert default.sources["threads"] == "default"
    every = default.threads
    assert cpuload.backend_threads(default, idle=lambda: 1) == 1  # one core busy elsewhere
    assert cpuload.backend_threads(default, idle=lambda: 0) == 1  # never zero
    assert cpuload.backend_threads(default, idle=lambda: every + 4) == every  # never more


def test_backend_threads_set_by_the_user_are_used_as_given() -> None:
    from rune_mcp.config import load_settings

    def not_asked() -> int:
        raise AssertionError("a set thread count needs no CPU reading")

    env = load_settings({"RUNE_THREADS": "3"})
    assert cpuload.backend_threads(env, idle=not_asked) == 3
    assert cpuload.backend_threads(env.with_overrides(threads=2), idle=not_asked) == 2


def test_settled_idle_cores_waits_for_a_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    slept: list[float] = []
    # Another process keeps one of two cores busy: 0.1 busy CPU s per 0.1 s, none of it ours.
    monkeypatch.setattr(cpuload, "busy_sample", lambda: (clock[0], 50.0 + clock[0], 7.0))
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    monkeypatch.setattr(time, "sleep", sleep)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # lagging: says idle
    watch = cpuload.CpuWatch()
    assert watch.settled_idle_cores() == 1  # not the load average's 2
    assert slept == [cpuload.SETTLE_S]
    clock[0] += 1.0
    assert watch.settled_idle_cores() == 1 and len(slept) == 1  # an old sample: no wait
