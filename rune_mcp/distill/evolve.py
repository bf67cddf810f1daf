"""The Evolution Operator: search compositions of a project's adapters by measured fitness.

`evolve_project` takes the project's single-session adapters for the loaded base model and
searches, with CMA-ES (the `cma` package, as LoraHub searches LoRA coefficients), one scale
per adapter: a candidate vector `x` applies adapter i at `clip(x_i, 0, MAX_SCALE)`, so a
negative coordinate leaves the adapter out and the search covers subsets too. Each candidate
is applied as a run-time composition, which llama.cpp sums with its scales exactly, and scored
by `rune_mcp.distill.fitness` on the self-probes of all the project's sessions (every
candidate on the same probes, so that leaving a session out costs what it should).

Each adapter alone at scale 1 is scored first. The bar is the better of the fittest of them
and *routing*, every session's probes answered by its own adapter (`fitness.routed`, from the
same scores): that is what recall gives without a merge, and a merge that replaces it must
do better (measured: merges that beat the best single adapter still lost to recall on the
benchmark, docs/results.md). When the fittest composition of two or more adapters beats the
bar by `MIN_GAIN`, it and the bar are scored once more on the self-probes the search did not
ask (`fitness.held_back`: a session holds more than `evolve_probes`): a winner picked among
dozens of candidates on a few probes is partly picked for luck. Only a composition that beats
the bar there too, by the same `MIN_GAIN`, is stored as a merge
(`rune_mcp.distill.merge`) of all the searched adapters with their scales as weights (a left
out adapter has weight 0, so the merge covers every session of the project and `adapter=
"project"` picks it; forgetting any of them forgets the merge too). The default merge method,
`cat`, is exactly the run-time sum that was scored; another method makes a different adapter,
so its own fitness is measured after storing, and it is kept only if it also beats the bar.
Its manifest records the parents, the weights and the fitness it was selected with, and it is
indexed by its parents' tasks.

The search is checkpointed after every generation (`rune_mcp.distill.evolvestate`); a run
that is stopped, killed, or out of budget resumes from there when started again, and ends as
an uninterrupted run would. Only the library write at the end takes the library lock, so
recall is never blocked; requests to the shared backend take turns with the search's.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from rune_mcp.config import Settings
from rune_mcp.distill.evolvestate import (
    Checkpoint,
    Generation,
    checkpoint_path,
    load_checkpoint,
    save_checkpoint,
)
from rune_mcp.distill.fitness import (
    Fitness,
    Score,
    Weights,
    held_back,
    routed,
    scoring_kind,
    session_probes,
)
from rune_mcp.errors import UsageError
from rune_mcp.library.lineage import EQUAL_RANK_METHODS, check_recipe, parents_of
from rune_mcp.library.records import AdapterRecord
from rune_mcp.runtime.base import AdapterSpec, Backend

log = logging.getLogger(__name__)
Progress = Callable[[int, int, str], None]
MAX_SCALE = 1.5
X0 = 0.5  # every adapter at half strength: the middle of the range
SIGMA0 = 0.35  # two sigmas reach from leaving an adapter out to a little above full strength
MIN_GAIN = 0.01  # fitness a composition must gain over the best single adapter to be stored
SCALE_DIGITS = 4


@dataclass
class Candidate:
    """A set of scales, one per searched adapter, and its score."""

    scales: list[float]
    score: Score

    @property
    def used(self) -> int:
        return sum(1 for s in self.scales if s > 0)

    def to_dict(self, ids: Sequence[str]) -> dict[str, Any]:
        return {"adapters": [{"adapter_id": i, "scale": s}
                             for i, s in zip(ids, self.scales, strict=True)],
                **self.score.to_dict()}


@dataclass
class EvolveResult:
    """What a run found and did."""

    project: str
    adapters: list[str]
    best_single: Candidate
    best: Candidate | None  # None: no composition of two or more was scored
    status: str  # done | budget | stopped
    generations: int
    evaluations: int
    seconds: float
    cpu_seconds: float = 0.0  # this process's CPU time (all its threads): wall time less load
    stored: str | None = None  # the merge's id
    method: str = "cat"
    stored_fitness: float | None = None
    note: str = ""
    singles: list[Candidate] = field(default_factory=list)
    confirm: dict[str, Any] | None = None  # the scores on the held-back probes
    routed: Score | None = None  # each session under its own adapter

    @property
    def bar(self) -> float:
        """The fitness a composition must beat: the best single adapter's or routing's."""
        return max(self.best_single.score.fitness,
                   self.routed.fitness if self.routed is not None else -math.inf)

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "adapters": self.adapters, "status": self.status,
                "generations": self.generations, "evaluations": self.evaluations,
                "seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2),
                "method": self.method,
                "best_single": self.best_single.to_dict(self.adapters),
                "best": None if self.best is None else self.best.to_dict(self.adapters),
                "stored": self.stored,
                "stored_fitness": self.stored_fitness, "note": self.note,
                "confirm": self.confirm,
                "routed": None if self.routed is None else self.routed.to_dict(),
                "singles": [c.to_dict(self.adapters) for c in self.singles]}


@dataclass
class _Run:
    """One evolve run's fixed parts."""

    settings: Settings
    lib: Any
    project: str
    records: list[AdapterRecord]
    fitness: Fitness
    checkpoint: Checkpoint
    path: Path
    progress: Progress | None
    start: float
    budget_s: float
    cpu_start: float = field(default_factory=time.process_time)
    evaluations: int = 0
    total: int = 0  # evaluations a full search makes, for progress

    @property
    def ids(self) -> list[str]:
        return [r.adapter_id for r in self.records]

    def out_of_time(self) -> bool:
        return time.monotonic() - self.start > self.budget_s

    def score(self, scales: list[float]) -> Score:
        """The score of `scales`, from the checkpoint when it was scored before."""
        key = scales_key(scales)
        if key not in self.checkpoint.evaluated:
            target = [(AdapterSpec.from_record(r), s) for r, s in zip(self.records, scales, strict=True)]
            self.checkpoint.evaluated[key] = self.fitness.score(target).to_dict()
            self.evaluations += 1
            save_checkpoint(self.path, self.checkpoint)  # a kill loses one evaluation at most
        return Score.from_dict(self.checkpoint.evaluated[key])

    def say(self, step: int, total: int, message: str) -> None:
        log.info("evolve %s: %s", self.project, message)
        if self.progress is not None:
            self.progress(step, total, message)


def evolve_project(
    settings: Settings,
    project: str | None = None,
    budget_s: float | None = None,
    method: str = "cat",
    density: float | None = None,
    progress: Progress | None = None,
    backend: Backend | None = None,
    library: Any = None,
    should_stop: Callable[[], bool] | None = None,
) -> EvolveResult:
    """Search compositions of `project`'s adapters and store the fittest as a merge when it
    beats the best single adapter (see the module docstring). `should_stop` is asked after
    every generation; a run stopped by it keeps its checkpoint and stores nothing."""
    from rune_mcp.library import Library

    lib = library if library is not None else Library.open(settings)
    name = resolve_project(lib, project)
    fingerprint = backend.fingerprint if backend is not None else lib.base_fingerprint()
    records = project_adapters(lib, name, fingerprint)
    check_merge(method, density, records)
    backend = backend or _backend(settings)  # loaded only for a search that can run
    path = checkpoint_path(settings, name, fingerprint)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{path}.lock", timeout=0)  # one search of a project at a time
    try:
        lock.acquire()
    except Timeout:
        raise UsageError(f"project {name} is being evolved by another Rune process now; its "
                         "result will be in the library when it ends.") from None
    try:
        run = _start(settings, lib, backend, name, records, progress, budget_s)
        return _search(run, method, density, should_stop)
    finally:
        lock.release()


def check_merge(method: str, density: float | None, records: Sequence[AdapterRecord]) -> None:
    """Refuse, before searching, a merge the search's result could not be stored as."""
    from rune_mcp.distill.merge import peft_rank

    check_recipe(method, [1.0] * len(records), density, len(records))
    ranks = sorted({peft_rank(r) for r in records})
    if method in EQUAL_RANK_METHODS and len(ranks) > 1:
        raise UsageError(f"the {method} merge needs adapters of one rank, and this project's "
                         f"have ranks {', '.join(map(str, ranks))}; use --method cat or svd.")


def _backend(settings: Settings) -> Backend:
    from rune_mcp.runtime import get_backend

    return get_backend(settings, scoring_kind(settings))


def resolve_project(lib: Any, project: str | None) -> str:
    """The project to evolve: the one named (its path or folder name), else the current
    folder's, else the library's only project."""
    known: list[str] = sorted({str(r.project) for r in lib.list() if r.project})
    if project:
        found = [p for p in known if project in (p, _name(p))]
        if not found:
            raise UsageError(f"no adapter of project {project!r} is in the library; "
                             "`rune adapters ls` lists the projects.")
        if len(found) > 1:
            raise UsageError(f"{project!r} names {len(found)} projects ({', '.join(found)}); "
                             "give the project's full path.")
        return found[0]
    here = str(Path.cwd())
    if here in known:
        return here
    if len(known) == 1:
        return known[0]
    listing = ", ".join(known) if known else "none"
    raise UsageError(f"give --project: the library holds adapters of {len(known)} projects "
                     f"({listing}), and none of them is this folder.")


def _name(project: str) -> str:
    return project.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def project_adapters(lib: Any, project: str, fingerprint: str) -> list[AdapterRecord]:
    """The project's single-session adapters for the base `fingerprint`, oldest first and
    verified; refused in one sentence when fewer than two."""
    singles = [r for r in lib.list(project=project) if not parents_of(r)]
    mine = [r for r in singles if r.base_fingerprint == fingerprint]
    if len(mine) < 2:
        others = len(singles) - len(mine)
        alien = (f" ({others} more trained for another base model, which never compose with "
                 "the loaded one)") if others else ""
        raise UsageError(f"project {_name(project)} has {len(mine)} adapter"
                         f"{'' if len(mine) == 1 else 's'} for the loaded base model{alien}; "
                         "evolving a composition needs at least 2: remember more of its "
                         "sessions first.")
    mine.sort(key=lambda r: (r.created_at, r.adapter_id))
    return [lib.get(r.adapter_id) for r in mine]


def search_config(settings: Settings, count: int) -> dict[str, Any]:
    """Everything the search's results depend on, but the generation limit and the budget
    (a resumed run may be given more of both)."""
    return {"weights": Weights.of(settings).to_dict(), "popsize": popsize(count), "x0": X0,
            "sigma0": SIGMA0, "max_scale": MAX_SCALE, "seed": settings.seed,
            "digits": SCALE_DIGITS}


def popsize(count: int) -> int:
    """CMA-ES's default population for `count` dimensions: 4 + 3 ln n."""
    return 4 + int(3 * math.log(count))


def _start(settings: Settings, lib: Any, backend: Backend, project: str,
           records: list[AdapterRecord], progress: Progress | None,
           budget_s: float | None) -> _Run:
    ids = [r.adapter_id for r in records]
    fitness = Fitness(settings, backend, session_probes(lib, ids))
    fresh = Checkpoint(project=project, base_fingerprint=backend.fingerprint, adapters=ids,
                       config=search_config(settings, len(ids)))
    path = checkpoint_path(settings, project, backend.fingerprint)
    checkpoint = load_checkpoint(path, fresh)
    return _Run(settings, lib, project, records, fitness, checkpoint, path, progress,
                time.monotonic(), settings.evolve_budget_s if budget_s is None else budget_s)


def to_scales(x: Sequence[float]) -> list[float]:
    """A CMA-ES point as scales: `[-0.2, 0.73, 2.0]` -> `[0.0, 0.73, 1.5]`."""
    return [round(min(MAX_SCALE, max(0.0, float(v))), SCALE_DIGITS) for v in x]


def scales_key(scales: Sequence[float]) -> str:
    return ",".join(f"{s:.{SCALE_DIGITS}f}" for s in scales)


def _search(run: _Run, method: str, density: float | None,
            should_stop: Callable[[], bool] | None) -> EvolveResult:
    import cma
    import numpy as np

    count = len(run.ids)
    generations = run.settings.evolve_generations
    size = popsize(count)
    total = run.total = count + size * generations
    singles = [Candidate(s, run.score(s)) for s in _unit_vectors(count)]
    best_single = max(singles, key=lambda c: c.score.fitness)
    run.say(count, total, f"best single adapter {run.ids[singles.index(best_single)][:12]}: "
            f"fitness {best_single.score.fitness:.4f}")
    rng = np.random.default_rng(run.settings.seed)
    es = cma.CMAEvolutionStrategy([X0] * count, SIGMA0, {
        "popsize": size, "randn": lambda *shape: rng.standard_normal(shape), "seed": np.nan,
        "verbose": -9, "verb_log": 0, "verb_disp": 0})
    _replay(es, run.checkpoint.generations)
    status = "done"
    while len(run.checkpoint.generations) < generations and not es.stop():
        if run.out_of_time():
            status = "budget"
            break
        asked = es.ask()
        scores = []
        for x in asked:
            if run.out_of_time():
                break
            scores.append(run.score(to_scales(x)).fitness)
        if len(scores) < len(asked):
            status = "budget"
            break
        es.tell(asked, [-f for f in scores])
        run.checkpoint.generations.append(
            Generation(x=[[float(v) for v in x] for x in asked], fitness=scores))
        save_checkpoint(run.path, run.checkpoint)
        done = len(run.checkpoint.generations)
        run.say(count + done * size, total, f"generation {done}/{generations}: best fitness "
                f"{max(scores):.4f}")
        if should_stop is not None and should_stop():
            status = "stopped"
            break
    save_checkpoint(run.path, run.checkpoint)
    return _finish(run, singles, best_single, status, method, density)


def _unit_vectors(count: int) -> list[list[float]]:
    return [[1.0 if i == j else 0.0 for j in range(count)] for i in range(count)]


def _replay(es: Any, generations: Sequence[Generation]) -> None:
    """Tell the optimiser what a checkpoint records, asking first, as the first run did."""
    import numpy as np

    for generation in generations:
        asked = es.ask()
        if not np.allclose(np.asarray(asked), np.asarray(generation.x), rtol=0, atol=1e-9):
            raise UsageError("the evolve checkpoint does not replay (it was written by another "
                             "version of the optimiser); delete it to search afresh.")
        es.tell(asked, [-f for f in generation.fitness])


def _best(run: _Run) -> Candidate | None:
    """The fittest composition of two or more adapters scored so far (first found wins ties)."""
    found: list[Candidate] = []
    for key, data in run.checkpoint.evaluated.items():
        scales = [float(s) for s in key.split(",")]
        if sum(1 for s in scales if s > 0) >= 2:
            found.append(Candidate(scales, Score.from_dict(data)))
    return max(found, key=lambda c: c.score.fitness) if found else None


def _finish(run: _Run, singles: list[Candidate], best_single: Candidate, status: str,
            method: str, density: float | None) -> EvolveResult:
    best = _best(run)
    result = EvolveResult(run.project, run.ids, best_single, best, status,
                          len(run.checkpoint.generations), run.evaluations,
                          time.monotonic() - run.start, time.process_time() - run.cpu_start,
                          method=method, singles=singles,
                          routed=routed({i: c.score for i, c in zip(run.ids, singles, strict=True)},
                                        run.fitness.weights))
    if status == "stopped":
        result.note = "stopped; run again to resume from the checkpoint."
        return result
    if best is None or best.score.fitness < result.bar + MIN_GAIN:
        result.note = (f"no composition beat the best single adapter (fitness "
                       f"{best_single.score.fitness:.4f}) or routing each session to its own "
                       f"adapter ({_fit(result.routed)}) by {MIN_GAIN}; nothing was stored.")
        return result
    if not _confirmed(run, result):
        return result
    _store(run, result, method, density)
    return result


def _confirmed(run: _Run, result: EvolveResult) -> bool:
    """Whether the fittest composition also beats the bar (the best single adapter and
    routing) on the held-back self-probes (see the module docstring); True, with a note,
    when there are none."""
    assert result.best is not None
    rest = held_back(session_probes(run.lib, run.ids), run.fitness.weights.probes)
    if not rest:
        result.note = ("no self-probes were left over to confirm the gain on (every session "
                       "holds at most evolve_probes); stored on the search's probes alone.")
        return True
    check = Fitness(run.settings, run.fitness.backend, rest, run.fitness.weights)
    scores = {name: check.score(_target(run, c.scales))
              for name, c in (("best", result.best), ("best_single", result.best_single))}
    own = {r.adapter_id: _target(run, [1.0 if r is o else 0.0 for o in run.records])
           for r in run.records}  # each adapter alone, for its own session's probes
    scores["routed"] = check.score_routed(own)
    result.confirm = {name: score.to_dict() for name, score in scores.items()}
    bar = max(scores["best_single"].fitness, scores["routed"].fitness)
    return confirm_gain(result, scores["best"].fitness, bar)


def _target(run: _Run, scales: Sequence[float]) -> list[tuple[AdapterSpec, float]]:
    return [(AdapterSpec.from_record(r), s) for r, s in zip(run.records, scales, strict=True)]


def _fit(score: Score | None) -> str:
    return "-" if score is None else f"{score.fitness:.4f}"


def confirm_gain(result: EvolveResult, best: float, bar: float) -> bool:
    """The verdict of `_confirmed` on the held-back fitness of the composition and of the
    bar (the better of the best single adapter and routing), noted on `result`."""
    if best >= bar + MIN_GAIN:
        return True
    assert result.best is not None
    result.note = (f"the fittest composition beat the best single adapter and routing on the "
                   f"search's probes ({result.best.score.fitness:.4f} against "
                   f"{result.bar:.4f}) but not on the held-back ones "
                   f"({best:.4f} against {bar:.4f}); nothing was stored.")
    return False


def _store(run: _Run, result: EvolveResult, method: str, density: float | None) -> None:
    from rune_mcp.distill.merge import merge_adapters

    best = result.best
    assert best is not None
    run.say(run.total, run.total, f"storing the fittest composition as a {method} merge")
    merged = merge_adapters(run.settings, run.ids, method, best.scales, density,
                            fitness=round(best.score.fitness, 6), library=run.lib)
    result.stored = merged.record.adapter_id
    if method == "cat":  # exactly the sum that was scored
        result.stored_fitness = best.score.fitness
        return
    own = run.fitness.score([(AdapterSpec.from_record(run.lib.get(result.stored)), 1.0)])
    result.stored_fitness = own.fitness
    if own.fitness < result.bar + MIN_GAIN:
        run.lib.remove(result.stored)
        result.note = (f"the {method} merge of the fittest scales scored {own.fitness:.4f}, "
                       f"not above the bar of the best single adapter and routing, "
                       f"{result.bar:.4f}; it was not kept.")
        result.stored = None
