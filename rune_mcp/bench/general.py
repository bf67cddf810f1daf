"""`rune bench general`: what an adapter costs the model's general ability, measured for real.

A handful of scored control probes cannot show an adapter that makes the model worse at
everything else; three measures here can, each taken with the adapter and with the bare base
on the same served weights (llama.cpp, `Backend.logits` and `run_with_memory`):

- **standard library NLL**: mean negative log-likelihood per token of a fixed, seeded sample
  of about 20k tokens of the Python standard library's source and docstrings
  (`rune_mcp.bench.corpus`), read in windows of `WINDOW` tokens;
- **own-answers NLL**: the same on the base model's greedy answers to the generic prompts of
  `rune_mcp/data/general_prompts.json` (answer tokens only, after the chat prompt); the base
  answers are cached under the cache folder by the base model's fingerprint, so every adapter
  and every run is measured on the same text;
- **coding**: the generic questions of `rune_mcp/data/general_coding.json` answered greedily
  through `run_with_memory`, their code run against small tests (`rune_mcp.bench.coding`).

An adapter's figures are its NLL minus the base's (positive: general text became less likely)
and its passed coding questions against the base's. `rune bench memory` reports them for
each adapter condition (a composition condition's run-time sum measured as the sum it
applies, a hypernetwork condition's generated, fine-tuned, bias or multi-task adapters like
any other); `rune bench general --adapter ID|none` for one adapter of the library.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rune_mcp.bench.compose import COMPOSE_CONDITIONS
from rune_mcp.bench.hyperconds import HYPER_CONDITIONS
from rune_mcp.config import Settings
from rune_mcp.errors import UsageError
from rune_mcp.fsutil import atomic_write_text
from rune_mcp.runtime.base import AdapterSpec, Backend

log = logging.getLogger(__name__)
WINDOW = 512  # tokens per evaluation of the corpus
ANSWER_TOKENS = 64  # length of the base model's cached answers
CODING_TOKENS = 200
ADAPTER_CONDITIONS = ("recalled_adapter", "oracle_adapter", "mismatched_adapter")


@dataclass(frozen=True)
class Budget:
    """How much of each measure to take (`--quick` takes a little of each)."""

    corpus_tokens: int | None = None  # None: the whole sample
    prompts: int | None = None  # None: every prompt
    coding: int | None = None  # None: every question


FULL = Budget()
QUICK = Budget(corpus_tokens=1024, prompts=8, coding=3)


# --- negative log-likelihood ------------------------------------------------------------------------


def nll_sum(rows: Any, targets: Sequence[int]) -> float:
    """Sum of -log p(target) over rows of logits, one row per target."""
    import numpy as np

    logits = np.asarray(rows, dtype=np.float32)  # rows x vocabulary: float64 would double it
    top = logits.max(axis=1, keepdims=True)
    logz = top[:, 0].astype(np.float64) + np.log(np.exp(logits - top).sum(axis=1, dtype=np.float64))
    picked = logits[np.arange(len(targets)), np.asarray(targets)].astype(np.float64)
    return float((logz - picked).sum())


def corpus_nll(backend: Backend, tokens: Sequence[int], adapters: Sequence[tuple[AdapterSpec, float]],
               window: int = WINDOW) -> tuple[float, int]:
    """(mean NLL per token, tokens scored) of `tokens` read in windows of `window`; within a
    window every token from the third on is predicted from those before it."""
    total, count = 0.0, 0
    for start in range(0, len(tokens), window):
        piece = list(tokens[start : start + window])
        if len(piece) < 3:
            break
        rows = backend.logits(piece, adapters, 1)  # rows 1.. predict tokens 2..
        total += nll_sum(rows[:-1], piece[2:])
        count += len(piece) - 2
    return (total / count if count else float("nan")), count


def answers_nll(backend: Backend, pairs: Sequence[tuple[str, str]],
                adapters: Sequence[tuple[AdapterSpec, float]]) -> tuple[float, int]:
    """(mean NLL per token, tokens scored) of each answer after its prompt's chat."""
    total, count = 0.0, 0
    for prompt, answer in pairs:
        head = backend.chat_tokens([{"role": "user", "content": prompt}])
        tail = backend.tokenize(answer)
        if not tail:
            continue
        ids = [*head, *tail]
        rows = backend.logits(ids[:-1], adapters, len(head) - 1)
        total += nll_sum(rows, tail)
        count += len(tail)
    return (total / count if count else float("nan")), count


# --- the base model's answers (cached) ------------------------------------------------------------


def load_prompts(path: Path | None = None) -> list[str]:
    source = path or Path(str(resources.files("rune_mcp") / "data" / "general_prompts.json"))
    try:
        prompts = json.loads(source.read_text(encoding="utf-8"))["prompts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read general prompts from {source} ({exc}); give a JSON file "
                         'of {"prompts": [...]}.') from exc
    return [str(p) for p in prompts]


def _key(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:24]


def answers_cache(settings: Settings, fingerprint: str) -> Path:
    # the repetition guard shapes what the base says, so its answers are cached apart
    guard = f"-r{settings.repeat_ngram}x{settings.repeat_times}" if settings.repeat_ngram else ""
    return (settings.cache_dir / "general"
            / f"answers-{fingerprint[:24]}-{ANSWER_TOKENS}{guard}.json")


def base_answers(settings: Settings, backend: Backend, prompts: Sequence[str]) -> list[tuple[str, str]]:
    """(prompt, the base model's greedy answer), generated once per base model and cached."""
    path = answers_cache(settings, backend.fingerprint)
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        known = {str(k): str(v) for k, v in cached["answers"].items()}
        if cached.get("fingerprint") != backend.fingerprint:
            known = {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        known = {}
    missing = [p for p in prompts if _key(p) not in known]
    for prompt in missing:
        out = backend.generate([{"role": "user", "content": prompt}], max_tokens=ANSWER_TOKENS,
                               adapters=())
        known[_key(prompt)] = out.text
    if missing:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"fingerprint": backend.fingerprint,
                                            "max_tokens": ANSWER_TOKENS, "answers": known}, indent=1))
    return [(p, known[_key(p)]) for p in prompts]


# --- one adapter (or the base) --------------------------------------------------------------------


class Guard:
    """The three measures on one backend, for the base and any adapter of one library."""

    def __init__(self, settings: Settings, backend: Backend, budget: Budget = FULL) -> None:
        from rune_mcp.bench.coding import load_questions
        from rune_mcp.bench.corpus import stdlib_sample

        self.settings, self.backend, self.budget = settings, backend, budget
        self.sample = stdlib_sample()
        tokens = backend.tokenize(self.sample.text)
        self.tokens = tokens[: budget.corpus_tokens] if budget.corpus_tokens else tokens
        self.prompts = load_prompts()[: budget.prompts]
        self.questions = load_questions()[: budget.coding]
        self._pairs: list[tuple[str, str]] | None = None
        self._measured: dict[str | None, dict[str, Any]] = {}

    def pairs(self) -> list[tuple[str, str]]:
        if self._pairs is None:
            self._pairs = base_answers(self.settings, self.backend, self.prompts)
        return self._pairs

    def measure(self, adapter_id: str | None) -> dict[str, Any]:
        """NLL on both corpora and coding results under `adapter_id` (None: the bare base;
        ids with scales: that run-time composition); each is measured once per guard."""
        if adapter_id not in self._measured:
            self._measured[adapter_id] = self._measure(adapter_id)
        return self._measured[adapter_id]

    def _measure(self, adapter_id: str | None) -> dict[str, Any]:
        from rune_mcp.bench.coding import check_answer
        from rune_mcp.library import Library
        from rune_mcp.runtime.run import run_with_memory

        adapters = [] if adapter_id is None else self._target(Library.open(self.settings), adapter_id)
        stdlib, stdlib_n = corpus_nll(self.backend, self.tokens, adapters)
        answers, answers_n = answers_nll(self.backend, self.pairs(), adapters)
        coding = []
        for question in self.questions:
            result = run_with_memory(self.settings, question.prompt, adapter=adapter_id or "none",
                                     max_tokens=CODING_TOKENS, backend=self.backend)
            outcome = check_answer(result.text, question)
            coding.append({"id": question.id, **outcome.to_dict(), "tokens": result.completion_tokens})
        return {"nll_stdlib": round(stdlib, 5), "stdlib_tokens": stdlib_n,
                "nll_answers": round(answers, 5), "answer_tokens": answers_n,
                "coding_passed": sum(c["passed"] for c in coding), "coding_total": len(coding),
                "coding": coding}

    def _target(self, lib: Any, adapter: str) -> list[tuple[AdapterSpec, float]]:
        from rune_mcp.runtime.compose import given, is_composition, parse_parts

        if is_composition(adapter):
            return given(lib, parse_parts(adapter), self.backend.fingerprint).target()
        return [(AdapterSpec.from_record(lib.get(adapter)), 1.0)]

    def compare(self, adapter_id: str | None) -> dict[str, Any]:
        """An adapter's measures with their differences from the base's."""
        base, mine = self.measure(None), self.measure(adapter_id)
        return {**{k: v for k, v in mine.items() if k != "coding"},
                "nll_stdlib_delta": round(mine["nll_stdlib"] - base["nll_stdlib"], 5),
                "nll_answers_delta": round(mine["nll_answers"] - base["nll_answers"], 5),
                "coding_base_passed": base["coding_passed"],
                "coding_lost": sorted(c["id"] for c, b in zip(mine["coding"], base["coding"], strict=True)
                                      if b["passed"] and not c["passed"]),
                "coding": mine["coding"]}

    def corpus(self) -> dict[str, Any]:
        return {"stdlib": {**self.sample.to_dict(), "tokens": len(self.tokens), "window": WINDOW},
                "prompts": len(self.prompts), "answer_tokens": ANSWER_TOKENS,
                "coding_questions": len(self.questions), "coding_tokens": CODING_TOKENS,
                "base_fingerprint": self.backend.fingerprint}


# --- per condition, for bench memory ----------------------------------------------------------------


def _span(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "min": None, "max": None}
    return {"mean": round(sum(values) / len(values), 5), "min": round(min(values), 5),
            "max": round(max(values), 5)}


def condition_guard(guard: Guard, rows: Sequence[dict[str, Any]],
                    say: Callable[[str], None] = log.info) -> dict[str, Any]:
    """The `general` section of `rune bench memory`: the corpora, the base, every adapter the
    adapter conditions used, and per condition the spread of their differences from the base."""
    base = guard.measure(None)
    say(f"general: base NLL {base['nll_stdlib']:.3f} (stdlib), {base['nll_answers']:.3f} (answers), "
        f"coding {base['coding_passed']}/{base['coding_total']}")
    used: dict[str, list[str]] = {}
    named = (*COMPOSE_CONDITIONS, *HYPER_CONDITIONS)  # the conditions run only when named
    measured = (*ADAPTER_CONDITIONS, *named)
    for row in rows:
        if row["condition"] in measured and row.get("adapter_id"):
            used.setdefault(row["condition"], [])
            if row["adapter_id"] not in used[row["condition"]]:
                used[row["condition"]].append(row["adapter_id"])
    adapters: dict[str, dict[str, Any]] = {}
    for adapter_id in dict.fromkeys(a for ids in used.values() for a in ids):
        adapters[adapter_id] = guard.compare(adapter_id)
        part = adapters[adapter_id]
        say(f"general: adapter {adapter_id[:12]} NLL {part['nll_stdlib_delta']:+.4f} (stdlib), "
            f"{part['nll_answers_delta']:+.4f} (answers), coding {part['coding_passed']}/"
            f"{part['coding_total']}")
    conditions = {}
    # the composition and hypernetwork conditions where the run scored them (the default run
    # has none)
    for cond in (*ADAPTER_CONDITIONS, *(c for c in named if c in used)):
        ids = used.get(cond, [])
        parts = [adapters[a] for a in ids]
        conditions[cond] = {
            "adapters": len(ids),
            "nll_stdlib_delta": _span([p["nll_stdlib_delta"] for p in parts]),
            "nll_answers_delta": _span([p["nll_answers_delta"] for p in parts]),
            "coding_passed": _span([float(p["coding_passed"]) for p in parts]),
            "coding_base_passed": base["coding_passed"],
            "coding_total": base["coding_total"],
        }
    return {"corpus": guard.corpus(), "base": base, "adapters": adapters, "conditions": conditions}


# --- rune bench general ------------------------------------------------------------------------------


def register(sub: Any) -> None:
    p = sub.add_parser("general", help="what an adapter costs general ability: NLL on fixed "
                       "corpora and coding questions run against tests, adapter vs base")
    p.add_argument("--adapter", required=True, metavar="ID|none",
                   help="an adapter id of the library, or none for the base model alone")
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK.corpus_tokens} corpus tokens, {QUICK.prompts} prompts, "
                   f"{QUICK.coding} coding questions")
    p.add_argument("--json", type=Path, help="write the full results JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.runtime import get_backend

    adapter = args.adapter.strip()
    if not adapter:
        raise UsageError("--adapter needs an adapter id, or none for the base model alone.")
    backend = get_backend(settings, "llamacpp")
    guard = Guard(settings, backend, QUICK if args.quick else FULL)
    print(f"corpus: {guard.sample.check}", file=sys.stderr, flush=True)
    result = guard.measure(None) if adapter == "none" else guard.compare(adapter)
    data = {"adapter": None if adapter == "none" else adapter, "corpus": guard.corpus(), "result": result}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.json, json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "coding"}, indent=1))
    return 0
