"""`rune bench memory`: does an adapter remember its session, against text in the context?

Every `DIR/*.jsonl` session is remembered into a temporary library (the same
`remember_path` every entry point uses), then every probe is scored on the served weights
(llama.cpp base + GGUF adapters, `rune_mcp.runtime.scoring`) under six conditions:

- `none`: the base model alone;
- `rag`: the best-matching session's trajectory text, retrieved from the same library by the
  probe's task, in the prompt (the token-space memory Rune competes with);
- `full_context`: the source session's whole trajectory text in the prompt (cut to fit);
- `recalled_adapter`: Rune as used: recall by task, the adapter above the threshold, if any;
- `oracle_adapter`: the source session's adapter (separates recall from distillation errors);
- `mismatched_adapter`: an adapter of another project (a control: it must not help).

General-knowledge probes (no source session) are scored the same way: `oracle_adapter` is the
base model for them, and `mismatched_adapter` any adapter, to show what an adapter costs.

Four more conditions compose a project's adapters (`rune_mcp.bench.compose`, named with
`--conditions`): `best_single`, `project_sum`, `project_ties` and `evolved`; six more use a
hypernetwork checkpoint (`rune_mcp.bench.hyperconds`, named the same way):
`generated_adapter`, `hyper_lora_5`, `hyper_lora_10`, `generated_mismatched`, `bias_only` and
`multitask_lora`. Multi-session
probes (a task needing two sessions' lessons, `rune_mcp.bench.multiprobes`) are scored under
every condition and reported apart from the single-session and control probes, so what a
composition adds on the one and costs on the others shows: `full_context` puts each of their
sessions' texts in the prompt, `oracle_adapter` is their later session's adapter.

Every probe with keys is also asked as an agent asks it and answered freely through
`run_with_memory` (`rune_mcp.bench.answers`): both accuracies, the share of degenerate answers
and their length are reported side by side. Each adapter the adapter conditions used is then
measured for general ability against the base (`rune_mcp.bench.general`: NLL on a standard
library sample and on the base's own answers, coding questions run against tests).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rune_mcp.bench.answers import summarize_free
from rune_mcp.bench.compose import (
    COMPOSE_CONDITIONS,
    QUICK_EVOLVE,
    Compositions,
)
from rune_mcp.bench.hyperconds import HYPER_CONDITIONS, HyperAdapters, find_checkpoint
from rune_mcp.bench.quirks import KINDS
from rune_mcp.config import Settings
from rune_mcp.distill.probes import Probe, load_probes
from rune_mcp.errors import UsageError
from rune_mcp.fsutil import atomic_write_text
from rune_mcp.trajectory import Trajectory

if TYPE_CHECKING:
    from rune_mcp.distill.hyper.checkpoint import Checkpoint

log = logging.getLogger(__name__)
CONDITIONS = ("none", "rag", "full_context", "recalled_adapter", "oracle_adapter", "mismatched_adapter")
ALL_CONDITIONS = CONDITIONS + COMPOSE_CONDITIONS + HYPER_CONDITIONS
CONTEXT_HEADER = "Notes from an earlier session in this project:\n\n"
OUTPUT_CHARS = 600  # tool output kept per step in the rendered trajectory text
QUICK_PROJECTS = 2
QUICK_SESSIONS_PER_PROJECT = 1
QUICK_COMPOSE_SESSIONS_PER_PROJECT = 2  # a composition needs two adapters of a project
QUICK_GENERAL = 4
QUICK_STEPS = 12
QUICK_BATCH_TOKENS = 512
QUICK_CONTEXT_TOKENS = 1024
# training settings a variant is run with (RUNE_... in the environment), kept in the record so
# that it says what made its adapters
TRAINING_KNOBS = ("rehearsal_loss", "anchor_weight", "anchor_code_tokens", "lora_top_layers",
                  "lora_dropout", "lr_schedule", "answer_key_weight", "answer_check_every",
                  "answer_check_share", "teacher_weight", "unlikelihood_weight", "self_probe_share",
                  "repeat_ngram", "repeat_times")
# what `config.remembered` keeps of each adapter's training figures (its manifest's `training`)
REMEMBERED_FIGURES = ("steps", "stopped_early", "answered", "kept_step", "taught", "self_probes",
                      "final_loss")
ABLATIONS: dict[str, dict[str, Any]] = {
    "baseline": {},
    "no_episodes": {"lessons_episodes": False},
    "no_qa": {"lessons_qa": False},
    "no_final": {"lessons_final": False},
    "no_rehearsal": {"lessons_rehearsal": False},
    "rank_4": {"lora_rank": 4, "lora_alpha": 8.0},
    "rank_16": {"lora_rank": 16, "lora_alpha": 32.0},
    "steps_half": {"train_steps": "half"},
    "steps_double": {"train_steps": "double"},
    "targets_qv": {"target_modules": ["q_proj", "v_proj"]},
    "targets_all": {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                       "down_proj"]},
}
ABLATION_CONDITIONS = ("none", "recalled_adapter", "oracle_adapter", "mismatched_adapter")


@dataclass
class Session:
    name: str
    traj: Trajectory
    adapter_id: str
    seconds: float
    examples: int


# --- trajectory text (what rag and full_context put in the prompt) ---------------------------------


def trajectory_text(traj: Trajectory) -> str:
    """A session as plain text: `User: ...`, `Assistant: ...`, `$ cmd`, outputs clipped."""
    from rune_mcp.capture.episodes import render_action

    lines = [f"Project: {traj.project_name}", f"Task: {traj.task}"]
    for step in traj.steps:
        if step.kind == "user" and step.text:
            lines.append(f"User: {step.text}")
        elif step.kind == "assistant" and step.text:
            lines.append(f"Assistant: {step.text}")
        elif step.kind == "tool_call":
            lines.append(render_action(step))
        elif step.kind == "tool_result" and step.output:
            out = (
                step.output
                if len(step.output) <= OUTPUT_CHARS
                else (step.output[: OUTPUT_CHARS // 2] + "\n[...]\n" + step.output[-OUTPUT_CHARS // 2 :])
            )
            lines.append(("Error: " if step.is_error else "Output: ") + out)
    return "\n".join(lines)


def with_context(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    """The probe's messages with `text` put before the first user message."""
    out = [dict(m) for m in messages]
    for m in out:
        if m["role"] == "user":
            m["content"] = f"{CONTEXT_HEADER}{text}\n\n---\n\n{m['content']}"
            break
    return out


# --- remembering -----------------------------------------------------------------------------------


def select_sessions(paths: list[Path], quick: bool, projects: int | None = None,
                    compose: bool = False) -> list[Path]:
    """The sessions to remember: all of them; with `projects`, every session of the first N
    projects (grouped by the generator's `<project>-NN` file naming); for `--quick`, the first
    session of the first two projects (two of each with `compose`, for the composition
    conditions; otherwise the first two files)."""
    if not quick and projects is None:
        return paths
    by_project: dict[str, list[Path]] = {}
    for p in paths:
        by_project.setdefault(re.sub(r"-\d+$", "", p.stem), []).append(p)
    count = QUICK_PROJECTS if projects is None else projects
    quick_each = QUICK_COMPOSE_SESSIONS_PER_PROJECT if compose else QUICK_SESSIONS_PER_PROJECT
    per_project = quick_each if quick else None
    chosen = [p for group in list(by_project.values())[:count] for p in group[:per_project]]
    return chosen if len(chosen) >= 2 else paths[:2]


def remember_all(settings: Settings, paths: Sequence[Path], say: Callable[[str], None]) -> list[Session]:
    from rune_mcp.capture import parse_path
    from rune_mcp.distill.remember import remember_trajectory

    out = []
    for i, path in enumerate(paths, 1):
        traj = parse_path(path)
        start = time.perf_counter()
        res = remember_trajectory(settings, traj, progress=_progress(say, path.stem))
        out.append(Session(path.stem, traj, res.adapter_id, time.perf_counter() - start, res.examples))
        say(
            f"remembered {path.stem} ({i}/{len(paths)}): adapter {res.adapter_id[:12]}, "
            f"{res.examples} examples, {out[-1].seconds:.1f} s"
        )
    return out


def _progress(say: Callable[[str], None], name: str) -> Callable[[int, int, str], None]:
    """Training progress every few steps, so a long run shows it is alive."""

    def report(step: int, total: int, message: str) -> None:
        if total and (step % 5 == 0 or step == total):
            say(f"  {name}: {message}")

    return report


# --- scoring ---------------------------------------------------------------------------------------


class Scorer:
    """Scores probes under each condition against one library and one backend."""

    def __init__(self, settings: Settings, sessions: list[Session], quick: bool = False) -> None:
        from rune_mcp.library import Library
        from rune_mcp.runtime import get_backend

        self.settings = settings
        self.sessions = {s.name: s for s in sessions}
        self.by_adapter = {s.adapter_id: s for s in sessions}
        self.lib = Library.open(settings)
        self.backend = get_backend(settings, "llamacpp")
        # room for the question, prefix and choice; quick runs keep contexts short to stay fast
        self.budget = settings.context_size - 512
        if quick:
            self.budget = min(self.budget, QUICK_CONTEXT_TOKENS)
        self.texts = {s.name: trajectory_text(s.traj) for s in sessions}
        self.compose: Compositions | None = None  # made when a composition condition is scored
        self.hypernet: HyperAdapters | None = None  # made when a hypernetwork condition is named

    def compositions(self, evolve_budget_s: float, say: Callable[[str], None]) -> Compositions:
        if self.compose is None:
            adapters = {s.name: s.adapter_id for s in self.sessions.values()}
            self.compose = Compositions(self.settings, self.lib, self.backend, adapters,
                                        evolve_budget_s, say)
        return self.compose

    def hyper_adapters(self, ckpt: Checkpoint, say: Callable[[str], None]) -> HyperAdapters:
        if self.hypernet is None:
            trajectories = {s.name: s.traj for s in self.sessions.values()}
            self.hypernet = HyperAdapters(self.settings, self.lib, ckpt, trajectories, say)
        return self.hypernet

    def _spec(self, adapter: str | None) -> list[Any]:
        """What the backend applies for an adapter argument: one id, or ids with scales."""
        from rune_mcp.runtime.base import AdapterSpec
        from rune_mcp.runtime.compose import given, is_composition, parse_parts

        if adapter is None:
            return []
        if is_composition(adapter):
            return given(self.lib, parse_parts(adapter), self.backend.fingerprint).target()
        return [(AdapterSpec.from_record(self.lib.get(adapter)), 1.0)]

    def _context(self, names: Sequence[str | None]) -> tuple[str | None, int]:
        """The sessions' texts for the prompt, each cut to its share of the budget."""
        known = [n for n in names if n is not None and n in self.texts]
        if not known:
            return None, 0
        share = self.budget // len(known)
        text = "\n\n---\n\n".join(self.backend.truncate_tokens(self.texts[n], share) for n in known)
        return text, self.backend.count_tokens(text)

    def _mismatched(self, probe: Probe) -> str | None:
        session = self._mismatched_session(probe)
        return session.adapter_id if session else None

    def _mismatched_session(self, probe: Probe) -> Session | None:
        """A session of another project than the probe's (any session for a control probe),
        chosen by a digest of the probe's id among them ordered by adapter id."""
        source = self.sessions.get(probe.source_session or "")
        project = source.traj.project_name if source else None
        pool = sorted((s for s in self.sessions.values() if s.traj.project_name != project),
                      key=lambda s: s.adapter_id)
        return pool[zlib.crc32(probe.id.encode()) % len(pool)] if pool else None

    def _recalled(self, task: str) -> tuple[str | None, float | None]:
        from rune_mcp.runtime.run import choose_adapter

        spec, similarity = choose_adapter(self.settings, task, "auto", self.backend.fingerprint, {})
        return (spec.adapter_id if spec else None), similarity

    def _best_match(self, task: str) -> str | None:
        hits = self.lib.recall(task, k=1, min_similarity=-1.0)
        if not hits:
            return None
        session = self.by_adapter.get(hits[0].record.adapter_id)
        return session.name if session else None

    def plan(
        self, probe: Probe, condition: str
    ) -> tuple[list[dict[str, str]], str | None, int, dict[str, Any]]:
        """Messages, adapter id, context tokens and extra facts for one probe and condition."""
        messages = probe.chat()
        source = self.sessions.get(probe.source_session or "")
        extra: dict[str, Any] = {}
        if condition in ("rag", "full_context"):
            # a multi-session probe's full context is each of its sessions' texts
            names = [self._best_match(probe.task)] if condition == "rag" else list(probe.sessions)
            extra["context_session"] = "+".join(n for n in names if n) or None
            text, tokens = self._context(names)
            return (with_context(messages, text) if text else messages), None, tokens, extra
        if condition in COMPOSE_CONDITIONS:
            if self.compose is None:
                raise UsageError(f"the {condition} condition needs the run's compositions; "
                                 "score it through run_memory.")
            if condition != "best_single":  # recall chooses that one, from any project
                extra["project"] = self.compose.project_of(probe)
            return messages, self.compose.adapter(condition, probe), 0, extra
        if condition in HYPER_CONDITIONS:
            if self.hypernet is None:
                raise UsageError(f"the {condition} condition needs a hypernetwork checkpoint; "
                                 "score it through run_memory.")
            other = self._mismatched_session(probe)
            adapter = self.hypernet.adapter(condition, source.name if source else None,
                                            other.name if other else None)
            return messages, adapter, 0, extra
        if condition == "recalled_adapter":
            adapter, similarity = self._recalled(probe.task)
            extra["similarity"] = None if similarity is None else round(similarity, 4)
            return messages, adapter, 0, extra
        if condition == "oracle_adapter":
            return messages, source.adapter_id if source else None, 0, extra
        if condition == "mismatched_adapter":
            return messages, self._mismatched(probe), 0, extra
        return messages, None, 0, extra

    def score(self, probe: Probe, condition: str) -> dict[str, Any]:
        from rune_mcp.runtime.scoring import score_choices

        messages, adapter, tokens, extra = self.plan(probe, condition)
        res = score_choices(self.backend, messages, probe.prefix, probe.choices, self._spec(adapter))
        row = {
            "probe_id": probe.id,
            "condition": condition,
            "source_session": probe.source_session,
            **({"source_sessions": list(probe.source_sessions)} if probe.multi_session else {}),
            "correct": res.rank(probe.answer) == 1,
            "scores": [round(s, 4) for s in res.scores],
            "adapter_id": adapter,
            "context_tokens": tokens,
        }
        row.update(extra)
        return row


# --- statistics -------------------------------------------------------------------------------------


def bootstrap_ci(values: Sequence[bool], reps: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of 0/1 `values`."""
    import numpy as np

    if not values:
        return (float("nan"), float("nan"))
    arr = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, len(arr), size=(reps, len(arr)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _acc(rows: list[dict[str, Any]]) -> dict[str, Any]:
    hits = [bool(r["correct"]) for r in rows]
    if not hits:
        return {"n": 0, "accuracy": None, "ci95": None}
    low, high = bootstrap_ci(hits)
    return {
        "n": len(hits),
        "accuracy": round(sum(hits) / len(hits), 4),
        "ci95": [round(low, 4), round(high, 4)],
    }


def kind_of(probe_id: str) -> str | None:
    return next((k for k in KINDS if f"-{k}-" in probe_id), None)


def probe_type(row: dict[str, Any]) -> str:
    """`single` (one session's lesson), `multi` (several sessions' lessons) or `control`."""
    if row.get("source_sessions"):
        return "multi"
    return "control" if row["source_session"] is None else "single"


def summarize(results: list[dict[str, Any]], sessions: list[Session]) -> dict[str, Any]:
    """`accuracy` and `free_accuracy` are the single-session probes', `general_accuracy` the
    control probes'; `multi_accuracy` and `multi_free_accuracy` the multi-session probes',
    where the run has any."""
    conditions = list(dict.fromkeys(r["condition"] for r in results))
    knowledge = [r for r in results if probe_type(r) == "single"]
    multi = [r for r in results if probe_type(r) == "multi"]
    general = [r for r in results if probe_type(r) == "control"]
    oracle = {s.name: s.adapter_id for s in sessions}
    summary: dict[str, Any] = {
        "accuracy": {c: _acc([r for r in knowledge if r["condition"] == c]) for c in conditions},
        "free_accuracy": summarize_free(knowledge, _acc),
        "general_accuracy": {c: _acc([r for r in general if r["condition"] == c]) for c in conditions},
        "context_tokens": {
            c: round(_mean([r["context_tokens"] for r in results if r["condition"] == c]), 1)
            for c in conditions
        },
    }
    if multi:
        summary["multi_accuracy"] = {c: _acc([r for r in multi if r["condition"] == c])
                                     for c in conditions}
        summary["multi_free_accuracy"] = summarize_free(multi, _acc)
    recalled = [r for r in knowledge if r["condition"] == "recalled_adapter"]
    if recalled:
        summary["recall"] = {
            "n": len(recalled),
            "accuracy": round(
                _mean([r["adapter_id"] == oracle.get(r["source_session"]) for r in recalled]), 4
            ),
            "above_threshold": round(_mean([r["adapter_id"] is not None for r in recalled]), 4),
        }
    rag = [r for r in knowledge if r["condition"] == "rag"]
    if rag:
        summary["rag_retrieval_accuracy"] = round(
            _mean([r.get("context_session") == r["source_session"] for r in rag]), 4
        )
    kinds = sorted({k for r in knowledge if (k := kind_of(r["probe_id"]))})
    summary["by_kind"] = {
        k: {
            c: _acc([r for r in knowledge if r["condition"] == c and kind_of(r["probe_id"]) == k])["accuracy"]
            for c in conditions
        }
        for k in kinds
    }
    summary["free_by_kind"] = {
        k: {c: v["accuracy"] for c, v in summarize_free(
            [r for r in knowledge if kind_of(r["probe_id"]) == k], _acc).items()}
        for k in kinds
    }
    summary["remember"] = {
        "sessions": len(sessions),
        "seconds_mean": round(_mean([s.seconds for s in sessions]), 2),
        "examples_mean": round(_mean([s.examples for s in sessions]), 1),
    }
    compared = compositions_compared(results, conditions)
    if compared:
        summary["compositions_compared"] = compared
    closed = gain_closed(results, conditions)
    if closed:
        summary["hyper_gain_closed"] = closed
    return summary


# (probe type, condition compared, against): what a composition adds where a task needs two
# sessions, and what it costs a session's own probes against that session's adapter
COMPARISONS = (
    *(("multi", c, "best_single") for c in COMPOSE_CONDITIONS if c != "best_single"),
    *(("single", c, "oracle_adapter") for c in COMPOSE_CONDITIONS),
)


def compositions_compared(results: list[dict[str, Any]], conditions: Sequence[str]) -> dict[str, Any]:
    """Per comparison of `COMPARISONS` both of whose conditions ran: the mean difference in
    points on the same probes (condition minus the one it is compared with), scored and free,
    with a paired 95% bootstrap interval (probes resampled with their pairs kept together)."""
    out: dict[str, Any] = {}
    for kind, cond, against in COMPARISONS:
        if cond not in conditions or against not in conditions:
            continue
        rows = [r for r in results if probe_type(r) == kind]
        out[f"{kind}: {cond} - {against}"] = {
            "scored": paired_points(rows, cond, against, lambda r: bool(r["correct"])),
            "free": paired_points(rows, cond, against, _free_right),
        }
    return out


def gain_closed(results: list[dict[str, Any]], conditions: Sequence[str]) -> dict[str, Any]:
    """Per hypernetwork condition that ran beside `none` and `oracle_adapter`, on the
    single-session probes, scored and free: its gain over `none` and the gradient adapter's
    (`oracle_adapter` over `none`), in points on the same probes with paired 95% bootstrap
    intervals, and `share`, the part of the gradient adapter's gain it closes (its gain over
    the gradient adapter's; None where the gradient adapter gained nothing)."""
    if "none" not in conditions or "oracle_adapter" not in conditions:
        return {}
    rows = [r for r in results if probe_type(r) == "single"]
    out: dict[str, Any] = {}
    for cond in (c for c in HYPER_CONDITIONS if c in conditions):
        out[cond] = {}
        for kind, correct in (("scored", _scored_right), ("free", _free_right)):
            gain = paired_points(rows, cond, "none", correct)
            oracle = paired_points(rows, "oracle_adapter", "none", correct)
            # a gradient adapter that gained nothing (or lost) leaves no gain to close
            share = (round(gain["points"] / oracle["points"], 4)
                     if gain["points"] is not None and (oracle["points"] or 0) > 0 else None)
            out[cond][kind] = {"gain": gain, "oracle_gain": oracle, "share": share}
    return out


def _scored_right(row: dict[str, Any]) -> bool:
    return bool(row["correct"])


def _free_right(row: dict[str, Any]) -> bool | None:
    verdict = (row.get("free") or {}).get("verdict")
    return None if verdict in (None, "not scored") else verdict == "right"


def paired_points(rows: list[dict[str, Any]], cond: str, against: str,
                  correct: Callable[[dict[str, Any]], bool | None], reps: int = 2000) -> dict[str, Any]:
    """{n, points, ci95}: 100 x the mean of correct(cond) - correct(against) over the probes
    both judged (None: not judged), and its paired bootstrap interval."""
    import numpy as np

    def by_probe(name: str) -> dict[str, bool]:
        return {r["probe_id"]: v for r in rows if r["condition"] == name
                and (v := correct(r)) is not None}

    a, b = by_probe(cond), by_probe(against)
    ids = sorted(a.keys() & b.keys())
    if not ids:
        return {"n": 0, "points": None, "ci95": None}
    diff = np.asarray([float(a[i]) - float(b[i]) for i in ids])
    means = diff[np.random.default_rng(0).integers(0, len(diff), size=(reps, len(diff)))].mean(axis=1)
    return {"n": len(ids), "points": round(100 * float(diff.mean()), 2),
            "ci95": [round(100 * float(np.percentile(means, 2.5)), 2),
                     round(100 * float(np.percentile(means, 97.5)), 2)]}


def _mean(values: Sequence[float | int | bool]) -> float:
    return sum(float(v) for v in values) / len(values) if values else 0.0


# --- the benchmark ------------------------------------------------------------------------------------


def bench_settings(
    settings: Settings, home: Path, quick: bool, overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Settings:
    """The user's settings on a private library; quick runs train fewer steps; `seed` replaces
    the seed of training and sampling."""
    values: dict[str, Any] = {"home": home, "backend": "llamacpp"}
    if seed is not None:
        values["seed"] = seed
    steps = min(settings.train_steps, QUICK_STEPS) if quick else settings.train_steps
    for key, value in (overrides or {}).items():
        if key == "train_steps":
            steps = max(1, steps // 2) if value == "half" else steps * 2
        else:
            values[key] = value
    values["train_steps"] = steps
    if quick:
        values.setdefault("train_batch_tokens", min(settings.train_batch_tokens, QUICK_BATCH_TOKENS))
        for key, value in QUICK_EVOLVE.items():
            values.setdefault(key, value)
    return settings.with_overrides(**values)


def select_probes(
    probes: Sequence[Probe], names: set[str], quick: bool, subset: bool = False
) -> list[Probe]:
    """The probes of the remembered sessions (a multi-session probe when all its sessions are),
    and the general controls (a few for `--quick`)."""
    kept = [p for p in probes if p.source_session is not None and set(p.sessions) <= names]
    general = [p for p in probes if p.source_session is None]
    missing = {s for p in probes for s in p.sessions} - names
    if missing and not (quick or subset):
        log.warning("%d probes name sessions that are not in the sessions folder; skipped", len(missing))
    return kept + (general[:QUICK_GENERAL] if quick else general)


def run_memory(
    settings: Settings,
    paths: list[Path],
    probes: Sequence[Probe],
    conditions: Sequence[str] = CONDITIONS,
    quick: bool = False,
    overrides: dict[str, Any] | None = None,
    say: Callable[[str], None] = log.info,
    subset: bool = False,
    seed: int | None = None,
    general: bool = True,
    evolve_budget_s: float | None = None,
    hypernetwork: Path | None = None,
    general_conditions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Remember `paths` into a temporary library, score `probes` under `conditions` as scored
    choices and as free answers, and (with `general`) measure each adapter's general ability.
    `evolve_budget_s` caps the evolved condition's search time per project (default: no cap,
    so the search makes its `evolve_generations` in full and a run is repeatable whatever the
    machine's load); `hypernetwork` the checkpoint folder of the hypernetwork conditions
    (default: `find_checkpoint`'s);
    `general_conditions` limits the general guard to the adapters of those conditions (it
    costs minutes an adapter)."""
    from rune_mcp.bench.answers import FREE_TOKENS, QUICK_FREE_TOKENS, free_answer
    from rune_mcp.runtime import close_backends

    start = time.perf_counter()
    free_tokens = QUICK_FREE_TOKENS if quick else FREE_TOKENS
    guard: dict[str, Any] | None = None
    budget = evolve_budget_s or math.inf
    composed = [c for c in conditions if c in COMPOSE_CONDITIONS]
    hypered = [c for c in conditions if c in HYPER_CONDITIONS]
    # refused before anything trains: no checkpoint, or one for another base or targets
    ckpt = find_checkpoint(settings, hypered, hypernetwork) if hypered else None
    with tempfile.TemporaryDirectory(prefix="rune-bench-") as tmp:
        local = bench_settings(settings, Path(tmp) / "home", quick, overrides, seed)
        sessions = remember_all(local, paths, say)
        remembered = time.perf_counter() - start
        chosen = select_probes(probes, {s.name for s in sessions}, quick, subset)
        scorer = Scorer(local, sessions, quick)
        figures = {s.name: remembered_figures(scorer.lib, s) for s in sessions}
        if composed:
            scorer.compositions(budget, say).check(composed)
        if ckpt is not None:
            scorer.hyper_adapters(ckpt, say).check_training()
        results = []
        # Condition by condition, probes in session order: consecutive probes then share a
        # session's text (or an adapter and chat prefix), which the scorer does not evaluate again.
        ordered = sorted(chosen, key=lambda p: (p.source_session or "~", p.id))
        # the composition and hypernetwork conditions last: a stored merge or generated adapter
        # is indexed like any adapter, and would change what recalled_adapter and rag retrieve
        plain = [c for c in conditions if c not in COMPOSE_CONDITIONS and c not in HYPER_CONDITIONS]
        for condition in plain + composed + hypered:
            rows = [scorer.score(probe, condition) for probe in ordered]
            # after all the scored choices: a generation empties the KV rows they share
            for row, probe in zip(rows, ordered, strict=True):
                row["free"] = free_answer(scorer, probe, condition, free_tokens)
            results += rows
            right = sum(r["free"]["verdict"] == "right" for r in rows)
            say(f"scored {len(ordered)} probes under {condition}; free answers right: {right}")
        if general:
            guarded = [r for r in results
                       if general_conditions is None or r["condition"] in general_conditions]
            guard = _general(local, scorer, guarded, quick, say)
        close_backends()  # the backend's adapter cache points into the temporary library
    config = {
        "sessions": [s.name for s in sessions],
        "probes": len(chosen),
        "quick": quick,
        "subset": subset,
        "conditions": list(conditions),
        "overrides": overrides or {},
        "adapters": {s.name: s.adapter_id for s in sessions},
        "remembered": figures,
        "base_model": str(local.base_model or "embedded SmolLM2-135M-Instruct Q4_1"),
        "train_steps": local.train_steps,
        "train_batch_tokens": local.train_batch_tokens,
        "lora_rank": local.lora_rank,
        "lora_alpha": local.lora_alpha,
        "target_modules": list(local.target_modules),
        "learning_rate": local.learning_rate,
        "lessons": {"episodes": local.lessons_episodes, "qa": local.lessons_qa, "final": local.lessons_final,
                    "facts": local.lessons_facts, "rehearsal": local.lessons_rehearsal},
        "training": {name: getattr(local, name) for name in TRAINING_KNOBS},
        "recall_min_similarity": local.recall_min_similarity,
        "context_budget_tokens": scorer.budget,
        "free_answer_tokens": free_tokens,
        "general": general,
        "general_conditions": None if general_conditions is None else list(general_conditions),
        "context_size": local.context_size,
        "seed": local.seed,
        "threads": local.threads,
        "seconds": {"remember": round(remembered, 1), "total": round(time.perf_counter() - start, 1)},
    }
    if scorer.compose is not None:
        config["evolve"] = {"budget_s": None if math.isinf(budget) else budget,
                            "generations": local.evolve_generations,
                            "probes": local.evolve_probes,
                            "answer_tokens": local.evolve_answer_tokens,
                            "drift_tokens": local.evolve_drift_tokens}
        config["compositions"] = scorer.compose.to_dict()
    if scorer.hypernet is not None:
        from rune_mcp.distill.remember import default_method

        config["hypernetwork"] = {**scorer.hypernet.to_dict(),
                                  "oracle_method": default_method(local)}
    summary = summarize(results, sessions)
    out = {"config": config, "results": results, "summary": summary}
    if guard is not None:
        summary["general"] = {"base": {k: v for k, v in guard["base"].items() if k != "coding"},
                              "conditions": guard["conditions"]}
        out["general"] = guard
    return out


def remembered_figures(lib: Any, session: Session) -> dict[str, Any]:
    """How one session's adapter was trained, from its manifest: steps, the answer checks
    and the step kept (`answer_check_every`), positions taught (`teacher_weight`), seconds."""
    training = lib.get(session.adapter_id).manifest.get("training", {})
    return {"seconds": round(session.seconds, 1), "examples": session.examples,
            **{k: training.get(k) for k in REMEMBERED_FIGURES}}


def _general(settings: Settings, scorer: Scorer, results: list[dict[str, Any]], quick: bool,
             say: Callable[[str], None]) -> dict[str, Any]:
    from rune_mcp.bench.general import FULL, QUICK, Guard, condition_guard

    guard = Guard(settings, scorer.backend, QUICK if quick else FULL)
    say(f"general: {guard.sample.check}")
    return condition_guard(guard, results, say)


def register(sub: Any) -> None:
    p = sub.add_parser("memory", help="score probes with no memory, text in context, and adapters")
    p.add_argument("--sessions", type=Path, help="folder of *.jsonl sessions")
    p.add_argument("--probes", type=Path, help="probes JSONL file")
    p.add_argument("--json", type=Path, help="write the full results JSON here")
    p.add_argument("--report", type=Path, help="write report.md, report.html and plots here")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{QUICK_PROJECTS} projects, {QUICK_SESSIONS_PER_PROJECT} session each, "
        f"at most {QUICK_STEPS} training steps of {QUICK_BATCH_TOKENS} tokens",
    )
    p.add_argument(
        "--projects",
        type=int,
        metavar="N",
        help="only the sessions of the first N projects (and their probes), at full training steps",
    )
    p.add_argument(
        "--ablation",
        action="store_true",
        help="retrain under each ablation (lesson parts, rank, steps, targets) and compare",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="N",
        help="seed of training and sampling in this run (default: the seed setting); choose "
        "defaults on runs of one seed and report runs of another (docs/benchmarks.md)",
    )
    p.add_argument(
        "--conditions",
        metavar="A,B",
        help=f"only these conditions, comma-separated (default: {','.join(CONDITIONS)}; the "
        f"composition conditions {','.join(COMPOSE_CONDITIONS)} and the hypernetwork conditions "
        f"{','.join(HYPER_CONDITIONS)} run only when named)",
    )
    p.add_argument(
        "--hypernetwork",
        type=Path,
        metavar="DIR",
        help="checkpoint folder of the hypernetwork the hypernetwork conditions use (default: "
        "the hypernetwork setting, else RUNE_HOME/hyper/<base fingerprint>)",
    )
    p.add_argument(
        "--evolve-budget-s",
        type=float,
        metavar="N",
        help="at most this many seconds of search per project for the evolved condition "
        "(default: no cap; the search makes the evolve_generations setting's generations in "
        "full, so a run does not depend on the machine's load)",
    )
    p.add_argument(
        "--no-general",
        action="store_true",
        help="skip the general-ability guard (NLL on fixed corpora, coding questions) per adapter",
    )
    p.add_argument(
        "--general-conditions",
        metavar="LIST",
        help="measure general ability only for the adapters of these conditions (comma "
        "separated; default: every adapter condition run; the guard takes minutes an adapter)",
    )
    p.add_argument(
        "--from-json",
        type=Path,
        metavar="FILE",
        help="write --report again from an earlier run's --json output, without rerunning",
    )
    p.set_defaults(func=run)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rewrite_report(source: Path, report: Path | None) -> int:
    """The report of an earlier run, from its JSON (a memory run or an ablation)."""
    from rune_mcp.bench.report import write_ablation_report, write_report

    if report is None:
        raise UsageError("--from-json needs --report DIR to say where the report goes.")
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {source} as a `rune bench memory --json` file ({exc}).") from exc
    if not isinstance(data, dict) or not ("ablations" in data or "summary" in data):
        raise UsageError(f"{source} is not the JSON of `rune bench memory --json`; give that file.")
    if "ablations" in data:
        print(write_ablation_report(data["ablations"], report))
    else:
        print(write_report(data, report))
    return 0


def _write_json(path: Path | None, data: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def _conditions(text: str | None) -> tuple[str, ...]:
    if not text:
        return CONDITIONS
    return _named("--conditions", text, ALL_CONDITIONS, "unknown ones")


def _guarded(text: str | None, conditions: Sequence[str]) -> tuple[str, ...] | None:
    """`--general-conditions`, checked against the conditions of the run."""
    if text is None:
        return None
    return _named("--general-conditions", text, conditions, "ones this run does not score")


def _named(flag: str, text: str, allowed: Sequence[str], stray_are: str) -> tuple[str, ...]:
    """The comma-separated conditions of `flag`, each once, refused in one sentence when
    none or some outside `allowed` are named."""
    chosen = tuple(dict.fromkeys(c.strip() for c in text.split(",") if c.strip()))
    stray = [c for c in chosen if c not in allowed]
    if stray or not chosen:
        raise UsageError(f"{flag} {text!r} names no condition or {stray_are} ({stray}); "
                         f"choose among {', '.join(allowed)}.")
    return chosen


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.bench.report import write_ablation_report, write_report

    if args.from_json is not None:
        return rewrite_report(args.from_json, args.report)
    if args.sessions is None or args.probes is None:
        raise UsageError("give --sessions DIR and --probes FILE (or --from-json FILE with --report DIR).")
    if not args.sessions.is_dir():
        raise UsageError(f"{args.sessions} is not a folder; give the folder holding the *.jsonl sessions.")
    paths = sorted(args.sessions.glob("*.jsonl"))
    if not paths:
        raise UsageError(
            f"{args.sessions} holds no *.jsonl sessions; make some with `rune bench make-dataset`."
        )
    probes = load_probes(args.probes).probes
    if args.projects is not None and args.projects < 1:
        raise UsageError(f"--projects must be at least 1, not {args.projects}; leave it out for all.")
    budget = args.evolve_budget_s
    if budget is not None and not budget > 0:
        raise UsageError(f"--evolve-budget-s must be a positive number of seconds, got {budget}.")
    conditions = ABLATION_CONDITIONS if args.ablation else _conditions(args.conditions)
    guarded = _guarded(args.general_conditions, conditions)
    paths = select_sessions(paths, args.quick, args.projects,
                            compose=any(c in COMPOSE_CONDITIONS for c in conditions))
    subset = args.projects is not None
    if args.ablation:
        runs = {}
        for name, overrides in ABLATIONS.items():
            _say(f"ablation {name}: {overrides or 'defaults'}")
            # the general guard measures every adapter: eleven variants would take hours
            runs[name] = run_memory(
                settings, paths, probes, ABLATION_CONDITIONS, args.quick, overrides, _say, subset,
                args.seed, general=False,
            )
            # written after every variant: a long run stopped part way keeps what it measured
            data: dict[str, Any] = {"ablations": runs}
            _write_json(args.json, data)
            if args.report:
                write_ablation_report(runs, args.report)
    else:
        data = run_memory(settings, paths, probes, conditions, args.quick, None,
                          _say, subset, args.seed, general=not args.no_general,
                          evolve_budget_s=budget, hypernetwork=args.hypernetwork,
                          general_conditions=guarded)
        _write_json(args.json, data)
        if args.report:
            write_report(data, args.report)
    print(
        json.dumps(
            {k: v["summary"] for k, v in data["ablations"].items()} if args.ablation else data["summary"],
            indent=1,
        )
    )
    return 0
