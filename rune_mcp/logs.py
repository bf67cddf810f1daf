"""Logging setup: stderr always, plus a log file under RUNE_HOME for long-running commands.

Nothing is ever logged to stdout: `rune serve` speaks JSON-RPC there.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys

from rune_mcp.config import Settings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(settings: Settings, debug: bool = False, to_file: bool = False) -> None:
    """Route the `rune_mcp` logger to stderr (and `RUNE_HOME/logs/rune.log` when asked)."""
    level = logging.DEBUG if debug else getattr(logging, settings.log_level)
    logger = logging.getLogger("rune_mcp")
    logger.setLevel(level)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(logging.Formatter(FORMAT))
    stderr.setLevel(level if debug else max(level, logging.WARNING))
    logger.addHandler(stderr)
    if to_file:
        folder = settings.home / "logs"
        folder.mkdir(parents=True, exist_ok=True)
        handler = logging.handlers.RotatingFileHandler(
            folder / "rune.log", maxBytes=5_000_000, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(logging.Formatter(FORMAT))
        handler.setLevel(level)
        logger.addHandler(handler)
