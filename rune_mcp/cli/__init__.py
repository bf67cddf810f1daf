"""The `rune` command line.

Each area of Rune registers its own subcommands from a module of this package
(`register(subparsers)`), so the CLI grows in the same order as the data flows. A handler
takes the parsed arguments and the settings and returns an exit code; a `RuneError` becomes
`rune: <sentence>` with exit 1 (2 for usage), and a traceback appears only with `--debug`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from rune_mcp import __version__
from rune_mcp.errors import RuneError, UsageError

# In data-flow order; a module that is not there yet simply adds no commands.
COMMAND_MODULES = (
    "core", "capture", "library", "distill", "evolve", "hyper", "runtime", "server", "watch",
    "bench", "ui",
)


class _Parser(argparse.ArgumentParser):
    """Errors as `rune: <sentence>`; and `fill`, when set, adds the parser's own arguments the
    first time it parses or prints help, so a command whose options live in heavy modules
    (`rune bench`) costs nothing to the commands that do not run it."""

    fill: Callable[[], None] | None = None

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"rune: {message}", file=sys.stderr)
        raise SystemExit(2)

    def parse_known_args(self, *args: Any, **kwargs: Any) -> Any:
        self._fill()
        return super().parse_known_args(*args, **kwargs)

    def format_usage(self) -> str:
        self._fill()
        return super().format_usage()

    def format_help(self) -> str:
        self._fill()
        return super().format_help()

    def _fill(self) -> None:
        fill, self.fill = self.fill, None
        if fill is not None:
            fill()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rune", description="Memory for coding agents, stored in LoRA weights.")
    parser.add_argument("--version", action="version", version=f"rune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        module_name = f"{__name__}.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        from rune_mcp.config import load_settings
        from rune_mcp.logs import setup_logging

        settings = load_settings()
        setup_logging(settings, debug=args.debug)
        return int(args.func(args, settings))
    except RuneError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"rune: {exc}", file=sys.stderr)
        return exc.exit_code if not isinstance(exc, UsageError) else 2
    except KeyboardInterrupt:
        print("rune: interrupted.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug: say so in one line unless asked for the traceback
        if args.debug:
            traceback.print_exc()
        print(f"rune: internal error ({type(exc).__name__}: {exc}); rerun with --debug "
              "and report it.", file=sys.stderr)
        return 1
