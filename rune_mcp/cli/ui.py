"""`rune ui`: the local web dashboard (see rune_mcp.ui)."""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.errors import InputError

DEFAULT_BENCH = Path("docs") / "results"


def register(sub: Any) -> None:
    ui = sub.add_parser(
        "ui", help="open a local web dashboard of the memory, the jobs and the benchmarks",
        description="Serve a dashboard on 127.0.0.1: every adapter by project with its "
        "lessons, the job queue live, a recall playground, benchmark plots, and forgetting.",
    )
    # Its default port lives in rune_mcp.ui.app, which imports the web stack and the library:
    # only `rune ui` loads it.
    ui.fill = lambda: add_arguments(ui)


def add_arguments(ui: Any) -> None:
    from rune_mcp.ui.app import DEFAULT_PORT

    ui.add_argument("--port", type=int, default=DEFAULT_PORT,
                    help=f"port on 127.0.0.1 (default: {DEFAULT_PORT})")
    ui.add_argument("--token", help="require this token (default: the auth_token setting, "
                                    "RUNE_AUTH_TOKEN, when set)")
    ui.add_argument("--bench-json", type=Path, action="append", default=[], metavar="PATH",
                    help="a benchmark JSON file or a folder of them to plot (repeatable; "
                         "docs/results is read when present)")
    ui.set_defaults(func=ui_cmd)


def ui_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.logs import setup_logging
    from rune_mcp.ui import UiOptions, serve_ui

    if not 1 <= args.port <= 65535:
        raise InputError(f"--port must be between 1 and 65535, got {args.port}.")
    check_port_free(args.port)
    bench = list(args.bench_json)
    if DEFAULT_BENCH.is_dir() and DEFAULT_BENCH not in bench:
        bench.append(DEFAULT_BENCH)
    token = args.token or settings.auth_token
    options = UiOptions(port=args.port, token=token, bench_paths=bench)
    setup_logging(settings, debug=args.debug, to_file=True)
    address = f"http://127.0.0.1:{args.port}/" + (f"?token={token}" if token else "")
    print(f"Rune dashboard: {address} (Ctrl+C stops it)", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        serve_ui(settings, options)
    print("rune ui: stopped.", file=sys.stderr)
    return 0


def check_port_free(port: int) -> None:
    """Refuse at once, in a sentence, when the port is taken (uvicorn would log and exit)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise InputError(
                f"port {port} on 127.0.0.1 is not free ({exc.strerror}); pick another with "
                "--port."
            ) from exc
