"""`rune serve`: the MCP server through which Claude Code, Cursor and other agents use Rune.

The server must start fast (each editor window starts its own), never block an agent on a
long training (remembering only queues a job; one worker per library trains), and treat
every argument as untrusted: paths are checked by `rune_mcp.server.safety`, and every foreseeable
failure comes back as an `isError` result of one sentence, with no traceback and no internal
path. Heavy modules (torch, llama.cpp, Chroma) are imported only when a tool needs them.

stdout carries nothing but JSON-RPC: the SDK diverts file descriptor 1 to stderr while it
serves, and Rune logs to stderr and `RUNE_HOME/logs/rune.log`.

The package follows one request's path: `tools` and `resources` check the arguments and
answer; `service` holds the library, queue and runtime behind them; `models` is what they
return; `stdio` and `http` are the transports and their guards (`linecheck` screens stdio
lines); `app` assembles the server. `hooks` and `install` serve `rune hook` and
`rune install`, which must not load the MCP SDK: this module imports nothing itself, and the
names below load their module on first use (`from rune_mcp.server import build_server`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rune_mcp.server.app import RuneServer, build_server, serve
    from rune_mcp.server.http import BearerTokenMiddleware, http_app
    from rune_mcp.server.models import (
        AdapterHit,
        AdapterList,
        AdapterSummary,
        ForgetResult,
        JobInfo,
        RecallResult,
        RunResult,
        StatusResult,
    )
    from rune_mcp.server.service import Rune, status_text

# Each public name, and the module of this package that defines it.
_HOMES = {
    "RuneServer": "app", "build_server": "app", "serve": "app",
    "BearerTokenMiddleware": "http", "http_app": "http",
    "AdapterHit": "models", "AdapterList": "models", "AdapterSummary": "models",
    "ForgetResult": "models", "JobInfo": "models", "RecallResult": "models",
    "RunResult": "models", "StatusResult": "models",
    "Rune": "service", "status_text": "service",
}

__all__ = [
    "AdapterHit",
    "AdapterList",
    "AdapterSummary",
    "BearerTokenMiddleware",
    "ForgetResult",
    "JobInfo",
    "RecallResult",
    "RunResult",
    "Rune",
    "RuneServer",
    "StatusResult",
    "build_server",
    "http_app",
    "serve",
    "status_text",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
