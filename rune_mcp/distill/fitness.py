"""Fitness: how well a composition of adapters answers the self-probes of its sessions, less
what it costs the model's general ability.

A composition (adapters with scales, applied at run time; a stored merge is one adapter at
scale 1) is scored on the self-probes of every session involved (`rune_mcp.library.selfprobes`),
each session weighing the same however many probes it holds. At most `evolve_probes` of a
session's probes are asked, one lesson at a time in turn (`spread`), the same ones for every
candidate: on the embedded base a probe costs about a second of an evaluation.

- **free**: the probe's question asked alone, answered greedily (`evolve_answer_tokens`) through
  the runtime backend with the composition applied; right when the answer holds one of the
  probe's key spans (`rune_mcp.bench.answers.find_key`: normalised, at word boundaries) and
  is not degenerate (a repeated 4-gram, a glued repeat). Per session, the share right;
- **scored**: the mean log-probability per token of the probe's expected answer after its
  question (`rune_mcp.runtime.scoring.score_choices`), minus the same under the bare base: how
  much likelier the composition made the lesson. Per session, the mean over its probes;
- **drift**: the NLL per token of a fixed general text, the first `evolve_drift_tokens` tokens
  of `rune bench general`'s standard library sample (`rune_mcp.bench.general.Guard`), minus
  the base's.

    fitness = free + evolve_scored_weight x scored - evolve_drift_weight x max(0, drift)

Only a rise in general NLL is penalised: a composition is not rewarded for changing text it
was never about. Every term is measured on the same served weights a request uses, so what the
search rewards is what an agent gets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError
from rune_mcp.library.lineage import leaf_ancestors
from rune_mcp.library.selfprobes import SelfProbe
from rune_mcp.runtime.base import AdapterSpec, Backend

Target = Sequence[tuple[AdapterSpec, float]]


@dataclass(frozen=True)
class Weights:
    """How the terms add up, and how much is measured (from the evolve_* settings)."""

    scored: float
    drift: float
    answer_tokens: int
    drift_tokens: int
    probes: int = 1000  # self-probes asked per session

    @classmethod
    def of(cls, settings: Settings) -> Weights:
        return cls(settings.evolve_scored_weight, settings.evolve_drift_weight,
                   settings.evolve_answer_tokens, settings.evolve_drift_tokens,
                   settings.evolve_probes)

    def to_dict(self) -> dict[str, Any]:
        return {"scored": self.scored, "drift": self.drift, "answer_tokens": self.answer_tokens,
                "drift_tokens": self.drift_tokens, "probes": self.probes}


@dataclass(frozen=True)
class SessionProbes:
    """The self-probes of one session, by the adapter it was learned into."""

    adapter_id: str
    session_id: str | None
    probes: list[SelfProbe]


@dataclass
class Score:
    """A composition's fitness and its terms; `sessions` has free and scored per adapter."""

    fitness: float
    free: float
    scored: float
    drift: float
    sessions: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"fitness": round(self.fitness, 6), "free": round(self.free, 6),
                "scored": round(self.scored, 6), "drift": round(self.drift, 6),
                "sessions": {k: {n: round(v, 6) for n, v in part.items()}
                             for k, part in self.sessions.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Score:
        return cls(float(data["fitness"]), float(data["free"]), float(data["scored"]),
                   float(data["drift"]), {str(k): {str(n): float(v) for n, v in part.items()}
                                          for k, part in (data.get("sessions") or {}).items()})


class Fitness:
    """Scores compositions on one backend, against fixed self-probes and a fixed general text;
    what the base scores on them is measured once."""

    def __init__(self, settings: Settings, backend: Backend, sessions: Sequence[SessionProbes],
                 weights: Weights | None = None) -> None:
        from rune_mcp.bench.general import Budget, Guard

        self.weights = weights or Weights.of(settings)
        self.sessions = [SessionProbes(s.adapter_id, s.session_id,
                                       spread(s.probes, self.weights.probes))
                         for s in sessions if s.probes]
        if not self.sessions:
            raise UsageError("none of these adapters holds self-probes (they were remembered "
                             "before self-probes existed, or with self_probe_share 0); remember "
                             "their sessions again to score or evolve them.")
        self.backend = backend
        guard = Guard(settings, backend, Budget(corpus_tokens=self.weights.drift_tokens,
                                                prompts=0, coding=0))
        self.tokens = guard.tokens
        self.window = max(16, min(512, settings.context_size // 2))
        self._base_scored: dict[tuple[str, str], float] = {}
        self._base_nll: float | None = None

    def score(self, target: Target, sessions: Sequence[SessionProbes] | None = None) -> Score:
        """The fitness of applying `target` (adapters with scales; scale 0 leaves one out), on
        every session's probes or on those of `sessions`."""
        applied = [(spec, scale) for spec, scale in target if scale != 0]
        free_total = scored_total = 0.0
        per: dict[str, dict[str, float]] = {}
        chosen = self.sessions if sessions is None else sessions
        for session in chosen:
            free = [self._free(p, applied) for p in session.probes]
            gain = [self._logprob(p, applied) - self._base_logprob(p) for p in session.probes]
            per[session.adapter_id] = {"free": sum(free) / len(free), "scored": sum(gain) / len(gain)}
            free_total += per[session.adapter_id]["free"]
            scored_total += per[session.adapter_id]["scored"]
        free_mean = free_total / len(chosen)
        scored_mean = scored_total / len(chosen)
        drift = self._nll(applied) - self._base() if applied else 0.0
        fitness = (free_mean + self.weights.scored * scored_mean
                   - self.weights.drift * max(0.0, drift))
        return Score(fitness, free_mean, scored_mean, drift, per)

    def score_routed(self, own: Mapping[str, Target]) -> Score:
        """What recall gives without a merge: each session's probes under its own adapter
        (`own` by adapter id); the drift term is the mean of each adapter's."""
        parts = {s.adapter_id: self.score(own[s.adapter_id], [s]) for s in self.sessions}
        return routed(parts, self.weights)

    def _free(self, probe: SelfProbe, target: Target) -> float:
        from rune_mcp.bench.answers import RIGHT, degeneration, judge

        out = self.backend.generate([{"role": "user", "content": probe.question}],
                                    max_tokens=self.weights.answer_tokens, temperature=0.0,
                                    adapters=list(target))
        right = judge(out.text, probe.key_spans, []).verdict == RIGHT
        return 1.0 if right and degeneration(out.text) is None else 0.0

    def _logprob(self, probe: SelfProbe, target: Target) -> float:
        from rune_mcp.runtime.scoring import score_choices

        messages = [{"role": "user", "content": probe.question}]
        return score_choices(self.backend, messages, "", [probe.answer], list(target)).scores[0]

    def _base_logprob(self, probe: SelfProbe) -> float:
        key = (probe.question, probe.answer)
        if key not in self._base_scored:
            self._base_scored[key] = self._logprob(probe, [])
        return self._base_scored[key]

    def _nll(self, target: Target) -> float:
        from rune_mcp.bench.general import corpus_nll

        return corpus_nll(self.backend, self.tokens, list(target), self.window)[0]

    def _base(self) -> float:
        if self._base_nll is None:
            self._base_nll = self._nll([])
        return self._base_nll


def routed(own: dict[str, Score], weights: Weights) -> Score:
    """One score of every session answered by its own adapter, from each adapter's `Score`
    (keyed by adapter id; its figures for its own session are used): free and scored are the
    means over the sessions, the drift penalty the mean of each adapter's."""
    per = {i: score.sessions[i] for i, score in own.items() if i in score.sessions}
    if not per:
        raise UsageError("no session's own adapter was scored on its probes; nothing to route.")
    drifts = [own[i].drift for i in per]
    free = sum(v["free"] for v in per.values()) / len(per)
    scored = sum(v["scored"] for v in per.values()) / len(per)
    penalty = sum(max(0.0, d) for d in drifts) / len(drifts)
    return Score(free + weights.scored * scored - weights.drift * penalty, free, scored,
                 sum(drifts) / len(drifts), per)


def spread(probes: Sequence[SelfProbe], count: int) -> list[SelfProbe]:
    """`count` of `probes` (all of them when fewer), taken one lesson at a time in turn, so
    that as many of the session's lessons as possible are asked about; in stored order."""
    if len(probes) <= count:
        return list(probes)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, probe in enumerate(probes):
        groups.setdefault(tuple(probe.lesson), []).append(i)
    picked: list[int] = []
    for rank in range(max(len(g) for g in groups.values())):
        picked += [g[rank] for g in groups.values() if rank < len(g)]
    return [probes[i] for i in sorted(picked[:count])]


def held_back(sessions: Sequence[SessionProbes], count: int) -> list[SessionProbes]:
    """Per session, the probes a `Fitness` of `count` probes a session leaves unasked (at most
    `count` of them, spread the same way); sessions with none left are dropped. A search picks
    its winner on the asked probes, so only these can tell a real gain from a lucky one."""
    out = []
    for session in sessions:
        asked = {id(p) for p in spread(session.probes, count)}
        rest = [p for p in session.probes if id(p) not in asked]
        if rest:
            out.append(SessionProbes(session.adapter_id, session.session_id, spread(rest, count)))
    return out


def session_probes(lib: Any, adapter_ids: Sequence[str]) -> list[SessionProbes]:
    """The self-probes of every session the adapters were learned from: a merge stands for
    the single-session adapters it was composed of."""
    by_id = {r.adapter_id: r for r in lib.list()}
    leaves: list[str] = []
    for adapter_id in adapter_ids:
        for leaf in sorted(leaf_ancestors(by_id, adapter_id)):
            if leaf not in leaves and leaf in by_id:
                leaves.append(leaf)
    return [SessionProbes(leaf, by_id[leaf].session_id, lib.self_probes(leaf)) for leaf in leaves]


def score_composition(settings: Settings, adapter: str, library: Any = None,
                      backend: Backend | None = None) -> Score:
    """The fitness of a composition named as `rune run --adapter` takes one (ids with scales,
    `4f1c2e9a:0.5,9a0b7d11:1.2`; one id, a stored merge say, is that adapter at scale 1), on
    the self-probes of every session involved. Adapters of another base model are refused in
    one sentence."""
    from rune_mcp.library import Library
    from rune_mcp.runtime import get_backend
    from rune_mcp.runtime.compose import given, parse_parts

    lib = library if library is not None else Library.open(settings)
    backend = backend or get_backend(settings, scoring_kind(settings))
    composition = given(lib, parse_parts(adapter), backend.fingerprint)
    sessions = session_probes(lib, [r.adapter_id for r, _ in composition.adapters])
    return Fitness(settings, backend, sessions).score(composition.target())


def scoring_kind(settings: Settings) -> str:
    """The backend fitness is measured on: the configured one, llama.cpp in place of vLLM
    (whose server does not hand out logits)."""
    from rune_mcp.runtime import resolve_kind

    kind = resolve_kind(settings)
    return "llamacpp" if kind == "vllm" else kind
