"""The composition conditions of `rune bench memory`: a project's adapters applied together.

Not in the default set (`--conditions` names them):

- `best_single`: the single-session adapter recall ranks first for the probe's task, with no
  similarity threshold (always one adapter) and stored merges passed over: the best one
  adapter can do when recall chooses it, the bar a composition has to clear;
- `project_sum`: every adapter of the probe's project in the run, applied at run time, each at
  scale 1/n. That is what `adapter="project"` applies when no stored merge covers the project,
  and its summed update is one adapter's size, so its general drift compares with a single
  adapter's; scale 1 each (n times the update) is one of the points `evolved` searches;
- `project_ties`: the project's adapters merged by TIES (`rune_mcp.distill.merge`, PEFT's
  `add_weighted_adapter`, density `TIES_DENSITY`) and stored in the run's library, weights 1
  each: TIES already averages the entries whose signs agree, so weights summing to 1 would
  shrink the merged update n-fold a second time;
- `evolved`: `rune evolve`'s search for the project (`rune_mcp.distill.evolve`, CMA-ES over the
  adapters' scales on their self-probes, `cat` merge), its `evolve_generations` in full (or
  within `--evolve-budget-s` seconds per project when given), answered with the merge it
  stored or, when it stored none, as `best_single` answers (recall's single adapter for the
  probe's task): what the operator leaves a user with.

The project of a knowledge probe is its source session's; a control probe is given one of the
run's projects by a digest of its id, so the cost of each composition to general knowledge
shows. A project with one adapter in the run composes to that adapter. The merges are made
the first time a condition needs them, after the other conditions are scored: a stored merge
is indexed by its parents' tasks and would change what `recalled_adapter` and `rag` retrieve.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError

if TYPE_CHECKING:
    from rune_mcp.distill.probes import Probe
    from rune_mcp.runtime.base import Backend

COMPOSE_CONDITIONS = ("best_single", "project_sum", "project_ties", "evolved")
TIES_DENSITY = 0.5
# a --quick run searches one generation with short answers and a short drift text
QUICK_EVOLVE: dict[str, Any] = {"evolve_generations": 1, "evolve_answer_tokens": 16,
                                "evolve_drift_tokens": 128}
RECALL_K = 100  # the most hits recall returns: enough to pass every merge of a run


class Compositions:
    """What each composition condition applies to a probe, built once per run.

    `sessions` maps each remembered session's name to its adapter id, in session order."""

    def __init__(self, settings: Settings, lib: Any, backend: Backend, sessions: dict[str, str],
                 evolve_budget_s: float, say: Callable[[str], None]) -> None:
        self.settings, self.lib, self.backend, self.say = settings, lib, backend, say
        self.sessions = dict(sessions)
        self.evolve_budget_s = evolve_budget_s
        self.projects: dict[str, list[str]] = {}
        for adapter_id in self.sessions.values():
            project = lib.get(adapter_id).project
            self.projects.setdefault(str(project), []).append(adapter_id)
        self._ties: dict[str, str] = {}
        self._evolved: dict[str, dict[str, Any]] = {}

    def check(self, conditions: Sequence[str]) -> None:
        """Refuse before scoring what `evolved` could not search: a project of two or more
        adapters none of which holds self-probes."""
        if "evolved" not in conditions:
            return
        for project, ids in self.projects.items():
            if len(ids) >= 2 and not any(self.lib.self_probes(i) for i in ids):
                raise UsageError(f"the evolved condition scores compositions on self-probes, and "
                                 f"no adapter of project {project} holds any (self_probe_share "
                                 "is 0?); set self_probe_share above 0 or leave evolved out.")

    def project_of(self, probe: Probe) -> str:
        """The project whose adapters a probe is answered with (see the module docstring)."""
        adapter_id = self.sessions.get(probe.source_session or "")
        if adapter_id is not None:
            return str(self.lib.get(adapter_id).project)
        names = sorted(self.projects)
        return names[zlib.crc32(probe.id.encode()) % len(names)]

    def adapter(self, condition: str, probe: Probe) -> str | None:
        """The adapter argument `condition` answers `probe` with: one id, or ids with scales."""
        if condition == "best_single":
            return self.best_single(probe.task)
        ids = self.projects[self.project_of(probe)]
        if len(ids) == 1:
            return ids[0]
        if condition == "project_sum":
            return ",".join(f"{i}:{1 / len(ids):.6g}" for i in ids)
        if condition == "project_ties":
            return self.ties(self.project_of(probe))
        if condition == "evolved":  # no merge stored: the user is left with recall
            found = self.evolved(self.project_of(probe))
            return str(found["adapter_id"]) if found["merged"] else self.best_single(probe.task)
        raise UsageError(f"{condition} is not a composition condition; choose among "
                         f"{', '.join(COMPOSE_CONDITIONS)}.")

    def best_single(self, task: str) -> str | None:
        """The single-session adapter of the run recall ranks first for `task`."""
        hits = self.lib.recall(task, k=RECALL_K, min_similarity=-1.0,
                               base_fingerprint=self.backend.fingerprint)
        singles = set(self.sessions.values())
        return next((h.record.adapter_id for h in hits if h.record.adapter_id in singles), None)

    def ties(self, project: str) -> str:
        """The project's stored TIES merge (made on first use)."""
        from rune_mcp.distill.merge import merge_adapters

        if project not in self._ties:
            ids = self.projects[project]
            merged = merge_adapters(self.settings, ids, "ties", [1.0] * len(ids), TIES_DENSITY,
                                    library=self.lib)
            self._ties[project] = merged.record.adapter_id
            self.say(f"ties merge of {len(ids)} adapters of {project}: "
                     f"{merged.record.adapter_id[:12]} ({merged.seconds:.1f} s)")
        return self._ties[project]

    def evolved(self, project: str) -> dict[str, Any]:
        """`rune evolve`'s result for the project (searched on first use) and the adapter the
        evolved condition answers with."""
        from rune_mcp.distill.evolve import evolve_project

        if project not in self._evolved:
            result = evolve_project(self.settings, project, self.evolve_budget_s, "cat",
                                    backend=self.backend, library=self.lib,
                                    progress=lambda _s, _t, text: self.say(f"evolve: {text}"))
            self._evolved[project] = {"adapter_id": result.stored,
                                      "merged": result.stored is not None, **result.to_dict()}
            answer = (f"merge {result.stored[:12]}" if result.stored
                      else "recall's single adapter for each probe")
            self.say(f"evolved {project}: {result.evaluations} compositions in "
                     f"{result.seconds:.0f} s ({result.status}); answering with {answer}")
        return self._evolved[project]

    def to_dict(self) -> dict[str, Any]:
        """Per project: its adapters, the sum applied, the TIES merge and the evolve result
        (those made in this run)."""
        out: dict[str, Any] = {}
        for project, ids in self.projects.items():
            part: dict[str, Any] = {"adapters": ids,
                                    "sum_scale": None if len(ids) < 2 else round(1 / len(ids), 6)}
            if project in self._ties:
                part["ties"] = {"adapter_id": self._ties[project], "density": TIES_DENSITY,
                                "weights": [1.0] * len(ids)}
            if project in self._evolved:
                part["evolved"] = self._evolved[project]
            out[project] = part
        return out
