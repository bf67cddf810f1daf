"""Server commands: `rune serve`, `rune hook`, `rune install`, `rune uninstall`, `rune status`,
`rune jobs ...`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rune_mcp.cli.output import command, emit_json, table
from rune_mcp.config import Settings

if TYPE_CHECKING:
    from rune_mcp.agents import Agent


def register(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the MCP server (stdio; --http for streamable HTTP)")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    serve.add_argument("--host", help="HTTP bind address (default: http_host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (default: http_port, 8765)")
    serve.add_argument(
        "--root", action="append", type=Path, default=[],
        help="a workspace folder whose transcripts tools may read (repeatable)",
    )
    serve.set_defaults(func=serve_cmd)

    # The agents (their names are the choices) load only for the commands that take one.
    hook = sub.add_parser("hook", help="queue a finished session (called by an agent's hooks)")
    hook.fill = lambda: _hook_arguments(hook)
    hook.set_defaults(func=hook_cmd)
    for verb in ("install", "uninstall"):
        p = sub.add_parser(verb, help=f"{verb} Rune's MCP server and hooks in an editor")
        p.fill = lambda p=p, verb=verb: _install_targets(p, verb)

    status = command(sub, "status", status_cmd, "library size, job queue, base model", json=True)
    status.add_argument("--watch", action="store_true",
                        help="a live view of the queue and the watcher, until Ctrl-C")

    jobs = sub.add_parser("jobs", help="the queue of sessions waiting to be distilled")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    ls = jobs_sub.add_parser("ls", help="recent jobs, newest first")
    ls.add_argument("--state", choices=["queued", "running", "done", "failed"])
    ls.add_argument("--limit", type=int, default=20)
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(func=jobs_ls_cmd)
    add = jobs_sub.add_parser("add", help="queue a transcript file")
    add.add_argument("path", type=Path)
    add.add_argument("--format", default="auto", dest="fmt")
    add.set_defaults(func=jobs_add_cmd)
    work = jobs_sub.add_parser("work", help="run queued jobs (one worker per library)")
    work.add_argument("--once", action="store_true", help="run at most one ready job")
    work.set_defaults(func=jobs_work_cmd)


def serve_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.logs import setup_logging
    from rune_mcp.server import serve

    setup_logging(settings, debug=args.debug, to_file=True)
    return serve(settings, http=args.http, host=args.host, port=args.port, roots=args.root)


def hook_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp import note
    from rune_mcp.agents.base import read_event
    from rune_mcp.logs import setup_logging

    setup_logging(settings, debug=args.debug, to_file=True)
    # `server.hooks.run_hook`, taken apart: a session-start note is answered before the
    # server package (whose MCP SDK takes most of a second to import) is loaded, because the
    # agent waits for it before the session opens.
    event = read_event(sys.stdin)
    if note.is_start(args.agent, event):
        return note.answer_start(args.agent, event, settings, sys.stdout)
    from rune_mcp.server.hooks import queue_event

    return queue_event(args.agent, event, settings)


def _hook_arguments(hook: argparse.ArgumentParser) -> None:
    from rune_mcp import agents

    hook.add_argument(
        "agent", choices=[a.name for a in agents.with_hooks()], help="which agent calls"
    )


def _install_targets(parser: argparse.ArgumentParser, verb: str) -> None:
    from rune_mcp import agents

    target = parser.add_subparsers(dest="target", metavar="EDITOR", required=True)
    for agent in agents.with_installer():
        _install_target(target, agent, verb)


def _install_target(target: Any, agent: Agent, verb: str) -> None:
    """`rune install <agent>`: the agent's scopes (its default first) and, when it has a CLI
    that could register the server itself, `--no-cli`."""
    inst = agent.installer
    if inst is None:
        return
    cmd = target.add_parser(agent.name, help=agent.title)
    cmd.add_argument("--scope", choices=list(inst.scopes), default=inst.scopes[0])
    cmd.add_argument("--project", type=Path, help="project folder (default: current)")
    if inst.cli_help:
        cmd.add_argument("--no-cli", action="store_true", help=inst.cli_help)
    cmd.set_defaults(func=install_cmd, verb=verb)


def install_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.server import install

    use_cli = False if getattr(args, "no_cli", False) else None
    fn = install.install if args.verb == "install" else install.uninstall
    for line in fn(settings, args.target, scope=args.scope, project=args.project,
                   use_cli=use_cli):
        print(line)
    return 0


def status_cmd(args: argparse.Namespace, settings: Settings) -> int:
    if args.watch:
        from rune_mcp.cli.live import watch_live
        from rune_mcp.errors import UsageError

        if args.json:
            raise UsageError("--watch is a live view for people; use --json alone in scripts.")
        return watch_live(settings)
    from rune_mcp.capture.control import capture_state, capture_text
    from rune_mcp.cli.watch import watch_status_text
    from rune_mcp.server import Rune, status_text
    from rune_mcp.watch import watch_status

    status = Rune(settings, start_worker=False).status()
    watcher = watch_status(settings)
    capture = capture_state(settings)
    if args.json:
        emit_json({**status.model_dump(mode="json"), "watcher": watcher, "capture": capture})
        return 0
    print(status_text(status))
    print(capture_text(capture))
    rows = status.running + status.queued + status.recent_failures
    if rows:
        print(table(rows, ["id", "state", "source", "transcript", "attempts", "message", "error"]))
    print(watch_status_text(watcher))
    return 0


def jobs_ls_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.distill.queue import JobQueue

    jobs = JobQueue(settings).recent(state=args.state, limit=args.limit)
    if args.json:
        emit_json([j.to_dict() for j in jobs])
        return 0
    rows = [
        {
            "id": j.id, "state": j.state, "source": j.source,
            "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(j.created)),
            "transcript": Path(j.path).name if j.path else "(text)",
            "adapter": (j.adapter_id or "")[:12], "error": j.error,
        }
        for j in jobs
    ]
    print(table(rows, ["id", "state", "source", "created", "transcript", "adapter", "error"]))
    return 0


def jobs_add_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.distill.queue import JobQueue

    job = JobQueue(settings).enqueue(path=args.path, fmt=args.fmt, source="cli")
    print(f"job {job.id}: {job.state}")
    return 0


def jobs_work_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.distill.queue import JobQueue
    from rune_mcp.logs import setup_logging

    setup_logging(settings, debug=args.debug, to_file=True)
    ran = JobQueue(settings).work(once=args.once)
    if ran is None:
        print("another Rune process is the worker for this library; it will run the jobs.")
    else:
        print(f"ran {ran} job(s).")
    return 0
