"""`rune watch`: remember finished agent sessions without being asked."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType
from typing import Any

from rune_mcp.cli.output import emit_json, table
from rune_mcp.config import Settings
from rune_mcp.errors import UsageError


def register(sub: Any) -> None:
    watch = sub.add_parser(
        "watch",
        help="follow agents' transcript folders and remember each finished session",
        description="Watch Claude Code, Codex, Cursor and Aider transcripts; every session "
        "that has been idle for the idle timeout (or was followed by a new session in the "
        "same project) is queued once and distilled into an adapter.",
    )
    watch.add_argument(
        "--once", action="store_true",
        help="scan once, queue what is finished, run the queue, and exit (for cron)",
    )
    watch.add_argument(
        "--idle-seconds", type=float, metavar="N",
        help="a transcript idle this long is a finished session (default: setting idle_seconds)",
    )
    watch.add_argument(
        "--no-train", action="store_true",
        help="only queue sessions; leave training to another worker (`rune jobs work`)",
    )
    watch.add_argument("--json", action="store_true", help="print the --once summary as JSON")
    watch.set_defaults(func=watch_cmd)


def _settings(args: argparse.Namespace, settings: Settings) -> Settings:
    if args.idle_seconds is None:
        return settings
    if args.idle_seconds <= 0:
        raise UsageError("--idle-seconds must be a positive number of seconds.")
    return settings.with_overrides(idle_seconds=args.idle_seconds)


def _foreground_logs(settings: Settings, debug: bool) -> None:
    """INFO lines on stderr (what was queued and why), and the same in RUNE_HOME/logs."""
    from rune_mcp.logs import setup_logging

    setup_logging(settings, debug=debug, to_file=True)
    level = logging.DEBUG if debug else getattr(logging, settings.log_level)
    for handler in logging.getLogger("rune_mcp").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
            handler.setLevel(level)


def watch_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.watch import Watcher

    settings = _settings(args, settings)
    _foreground_logs(settings, args.debug)
    watcher = Watcher(settings, train=not args.no_train)
    try:
        if args.once:
            summary = watcher.once()
            if args.json:
                emit_json(summary)
            else:
                print(f"read {summary['files_read']} changed transcript(s), queued "
                      f"{summary['queued']} finished session(s).")
            return 0
        log = logging.getLogger("rune_mcp.watch")
        for root in watcher.sources:
            log.info("watching %s (%s)%s", root.root, root.agent,
                     "" if root.root.is_dir() else ": not there yet, checked at each scan")

        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("stopping (signal %d)", signum)
            watcher.stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        watcher.run()
        return 0
    finally:
        watcher.close()


def watch_status_text(status: dict[str, Any]) -> str:
    """The watcher part of `rune status`, for people."""
    state = f"running (pid {status['pid']})" if status["running"] else "not running"
    lines = [f"watcher: {state}; {status['files']} transcript(s) followed, "
             f"{status['bytes_pending']} byte(s) not yet read"]
    lines.append(table(status["roots"], ["agent", "path", "exists", "mode"], width=70))
    if status["sessions"]:
        counts = ", ".join(f"{n} {state}" for state, n in sorted(status["sessions"].items()))
        lines.append(f"sessions: {counts}")
    if status["recent_sessions"]:
        lines.append(table(status["recent_sessions"],
                           ["transcript", "agent", "state", "reason", "job_id"], width=50))
    if status.get("error"):
        lines.append(f"problem: {status['error']}")
    return "\n".join(lines)
