"""Multiple-choice probe scoring on the weights Rune serves: the llama.cpp base plus GGUF adapters.

A probe's choice is scored by its mean log-probability per token after the prompt (the model's
own chat template with the generation prompt) and the probe's prefix (assistant text already
written); the probe is correct when its answer scores highest. Scores come from the runtime's
llama.cpp backend, with the adapters applied exactly as `run_with_memory` applies them, so a
benchmark measures what a user gets. (The transformers scorer in `rune_mcp.probes` checks
training in-process against the PEFT weights; this one checks the served GGUF.)

The prompt is evaluated once per probe and condition; each choice then reuses its KV cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rune_mcp.errors import InputError
from rune_mcp.runtime.base import AdapterSpec, Backend, Message


@dataclass(frozen=True)
class ChoiceScores:
    scores: list[float]  # mean log-probability per token, one per choice
    tokens: list[int]  # tokens scored per choice
    prompt_tokens: int

    def best(self) -> int:
        return max(range(len(self.scores)), key=lambda i: self.scores[i])


def _llm(backend: Backend) -> Any:
    llm = getattr(backend, "_llm", None)
    if llm is None or not hasattr(llm, "eval"):
        raise InputError(
            f"probe scoring needs the llama.cpp backend, not {backend.name}; set RUNE_BACKEND=llamacpp."
        )
    return llm


def _split(llm: Any, prefix: str, choice: str) -> tuple[list[int], list[int]]:
    """Tokens of `prefix + choice` split into (context part, choice part).

    Tokenized together, so the boundary is the one the model would see: `"Call `x." + "open()"`
    may merge across the seam; the choice part starts where the prefix's own tokens stop
    matching."""
    whole: list[int] = llm.tokenize((prefix + choice).encode(), add_bos=False, special=False)
    alone: list[int] = llm.tokenize(prefix.encode(), add_bos=False, special=False) if prefix else []
    k = 0
    while k < min(len(whole), len(alone)) and whole[k] == alone[k]:
        k += 1
    k = min(k, len(whole) - 1)  # at least one choice token
    return whole[:k], whole[k:]


def score_choices(
    backend: Backend,
    messages: Sequence[Message],
    prefix: str,
    choices: Sequence[str],
    adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec] = (),
) -> ChoiceScores:
    """Mean log-probability per token of each choice after chat(messages) + prefix."""
    import numpy as np

    llm = _llm(backend)
    if not choices or any(not c for c in choices):
        raise InputError("a probe needs non-empty choices.")
    backend.activate(adapters)
    lock = getattr(backend, "_lock")  # noqa: B009 (the backend's own lock; swaps share the context)
    with lock:
        prompt: list[int] = backend._tokens(messages)  # type: ignore[attr-defined]
        saved = llm._logits_all, llm.scores
        scores: list[float] = []
        counts: list[int] = []
        try:
            llm.reset()
            llm._logits_all = False
            llm.eval(prompt[:-1])
            base = llm.n_tokens
            for choice in choices:
                extra, cont = _split(llm, prefix, choice)
                seq = [prompt[-1], *extra, *cont]
                if base + len(seq) >= llm.n_ctx():
                    raise InputError(
                        f"the probe needs {base + len(seq)} tokens but the context holds "
                        f"{llm.n_ctx()}; shorten it or raise RUNE_CONTEXT_SIZE."
                    )
                llm.n_tokens = base
                llm._logits_all = True
                llm.scores = np.zeros((base + len(seq), llm._n_vocab), dtype=np.single)
                llm.eval(seq)
                rows = np.asarray(llm.scores[base + len(extra) : base + len(seq) - 1], dtype=np.float64)
                top = rows.max(axis=1, keepdims=True)
                logz = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
                picked = rows[np.arange(len(cont)), cont]
                scores.append(float((picked - logz).mean()))
                counts.append(len(cont))
                llm._logits_all = False
        finally:
            llm._logits_all, llm.scores = saved
            llm.reset()
    return ChoiceScores(scores, counts, len(prompt))


def count_tokens(backend: Backend, text: str) -> int:
    """Tokens of `text` in the served model's vocabulary."""
    return len(_llm(backend).tokenize(text.encode(), add_bos=False, special=False))


def truncate_tokens(backend: Backend, text: str, limit: int) -> str:
    """`text` cut to at most `limit` tokens, keeping its start and end (the task and the
    outcome of a session matter most)."""
    llm = _llm(backend)
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
    if len(tokens) <= limit:
        return text
    half = max(1, limit // 2 - 4)
    head = llm.detokenize(tokens[:half]).decode("utf-8", "ignore")
    tail = llm.detokenize(tokens[-half:]).decode("utf-8", "ignore")
    return f"{head}\n[...]\n{tail}"
