"""`rune evolve`: search compositions of a project's adapters, store the fittest as a merge."""

from __future__ import annotations

import argparse
from typing import Any

from rune_mcp.cli.output import emit_json, progress
from rune_mcp.config import Settings
from rune_mcp.errors import UsageError


def register(sub: Any) -> None:
    evolve = sub.add_parser(
        "evolve", help="search compositions of a project's adapters (CMA-ES over their scales, "
        "scored on their self-probes) and store the fittest as a merge")
    evolve.add_argument("--project", help="project path or folder name (default: this folder's, "
                        "or the library's only project)")
    evolve.add_argument("--budget-s", type=float, metavar="N",
                        help="seconds to search (default: the evolve_budget_s setting)")
    # the method names are checked when the command runs: importing the library to list
    # them here would load it for every command, `rune hook` included
    evolve.add_argument("--method", default="cat",
                        help="how the fittest composition is stored: cat (default; exactly the "
                        "sum that was scored) or another method of `rune adapters merge`, "
                        "scored again once stored")
    evolve.add_argument("--density", type=float,
                        help="share of entries kept by ties, dare_ties and dare_linear (0-1]")
    evolve.add_argument("--queue", action="store_true",
                        help="queue the search as a job for the worker instead of running it here")
    evolve.add_argument("--json", action="store_true", help="print JSON")
    evolve.set_defaults(func=evolve_cmd)


def evolve_cmd(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.library.lineage import METHODS

    if args.method not in METHODS:
        raise UsageError(f"--method {args.method!r} is not a merge method; choose among "
                         f"{', '.join(METHODS)}.")
    if args.budget_s is not None and not args.budget_s > 0:
        raise UsageError(f"--budget-s must be a positive number of seconds, got {args.budget_s}.")
    if args.queue:
        return _queue(args, settings)
    from rune_mcp.distill.evolve import evolve_project

    result = evolve_project(settings, args.project, args.budget_s, args.method, args.density,
                            progress=progress)
    if args.json:
        emit_json(result.to_dict())
        return 0
    best = result.best
    print(f"evolved project {result.project}: {result.generations} generations, "
          f"{result.evaluations} compositions scored in {result.seconds:.0f} s "
          f"({result.cpu_seconds:.0f} s of CPU; {result.status})")
    print(f"  best single adapter: fitness {result.best_single.score.fitness:.4f}")
    if best is not None:
        scales = ", ".join(f"{i[:12]}:{s:g}" for i, s in zip(result.adapters, best.scales,
                                                             strict=True))
        print(f"  fittest composition: fitness {best.score.fitness:.4f} (free "
              f"{best.score.free:.3f}, scored {best.score.scored:+.4f}, drift "
              f"{best.score.drift:+.4f}) at {scales}")
    if result.stored:
        print(f"  stored as {result.method} merge {result.stored}")
    if result.note:
        print(f"  {result.note}")
    return 0


def _queue(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.distill.evolve import resolve_project
    from rune_mcp.distill.evolvejob import enqueue_evolve
    from rune_mcp.distill.queue import JobQueue
    from rune_mcp.library import Library

    if args.budget_s is not None or args.method != "cat" or args.density is not None:
        raise UsageError("a queued evolve job searches with the settings (evolve_budget_s) and "
                         "stores a cat merge; drop --budget-s, --method and --density, or run "
                         "without --queue.")
    project = resolve_project(Library.open(settings), args.project)
    job = enqueue_evolve(JobQueue(settings), project)
    if args.json:
        emit_json(job.to_dict())
    else:
        print(f"queued job {job.id}: evolve {project} (`rune jobs work` runs it)")
    return 0
