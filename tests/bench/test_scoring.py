"""Probe scoring on the served llama.cpp weights: KV reuse gives the same numbers as a full pass."""

from __future__ import annotations

import numpy as np
import pytest

from rune_mcp.bench.scoring import count_tokens, score_choices, truncate_tokens
from rune_mcp.config import load_settings
from rune_mcp.errors import InputError
from rune_mcp.runtime import get_backend
from rune_mcp.runtime.base import Backend

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PREFIX = "The capital of France is "
CHOICES = ["Paris", "Berlin", "a large city in Spain"]


@pytest.fixture(scope="module")
def backend() -> Backend:
    return get_backend(load_settings(), "llamacpp")


def _reference(backend: Backend, choice: str) -> float:
    """Mean log-probability of `choice` from one full pass with every position's logits."""
    llm = backend._llm  # type: ignore[attr-defined]
    prompt = backend._tokens(MESSAGES)  # type: ignore[attr-defined]
    tail = llm.tokenize((PREFIX + choice).encode(), add_bos=False, special=False)
    alone = llm.tokenize(PREFIX.encode(), add_bos=False, special=False)
    k = 0
    while tail[k] == alone[k]:
        k += 1
    text = llm.detokenize(prompt, special=True).decode() + PREFIX + choice
    logits = backend.logits(text)  # type: ignore[attr-defined]
    assert logits.shape[0] == len(prompt) + len(tail)
    rows = logits[len(prompt) + k - 1 : -1].astype(np.float64)
    logz = np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1)) + rows.max(1)
    picked = rows[np.arange(len(tail) - k), tail[k:]]
    return float((picked - logz).mean())


def test_scores_match_a_full_forward_pass(backend: Backend) -> None:
    res = score_choices(backend, MESSAGES, PREFIX, CHOICES)
    assert len(res.scores) == len(CHOICES) and all(s < 0 for s in res.scores)
    for choice, score in zip(CHOICES, res.scores, strict=True):
        assert score == pytest.approx(_reference(backend, choice), abs=2e-3)


def test_the_model_knows_an_easy_fact_and_scores_are_repeatable(backend: Backend) -> None:
    first = score_choices(backend, MESSAGES, PREFIX, CHOICES)
    again = score_choices(backend, MESSAGES, PREFIX, CHOICES)
    assert first.best() == 0
    assert first.scores == again.scores
    assert first.tokens[2] > first.tokens[0], "longer choices are averaged over more tokens"


def test_truncation_and_bad_input(backend: Backend) -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    short = truncate_tokens(backend, text, 100)
    assert count_tokens(backend, short) <= 110 and short.startswith("word0") and short.endswith("word1999")
    assert truncate_tokens(backend, "short text", 100) == "short text"
    with pytest.raises(InputError):
        score_choices(backend, MESSAGES, PREFIX, ["Paris", ""])


def test_scores_are_taken_with_the_adapter_on_the_context(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """An adapter must change the scores, the base must come back after it, and the backend's
    default adapter set must not move."""
    from runtime.models import _adapter

    adapter = _adapter(1)
    plain = score_choices(backend, MESSAGES, PREFIX, CHOICES)
    adapted = score_choices(backend, MESSAGES, PREFIX, CHOICES, [adapter])
    assert max(abs(a - b) for a, b in zip(plain.scores, adapted.scores, strict=True)) > 0.05
    assert score_choices(backend, MESSAGES, PREFIX, CHOICES).scores == plain.scores
    assert backend.active == ()


def test_a_shared_prefix_is_reused_without_changing_the_scores(backend: Backend) -> None:
    """Two probes about one session share its text; the second reuses the first's KV rows and
    must score as it does from scratch."""
    notes = "Notes: the deploy command is `just ship`; tests run with `just verify`. " * 20
    first = [{"role": "user", "content": notes + "How do I deploy?"}]
    second = [{"role": "user", "content": notes + "How do I run the tests?"}]
    choices = ["just verify", "make test", "npm test"]
    score_choices(backend, first, "Run `", choices)
    reused = score_choices(backend, second, "Run `", choices)
    assert backend._scored_prefix(backend._tokens(second)[:-1]) > 200  # type: ignore[attr-defined]
    backend.apply_now([])  # type: ignore[attr-defined]  # forget the KV rows: start from scratch
    fresh = score_choices(backend, second, "Run `", choices)
    assert reused.scores == pytest.approx(fresh.scores, abs=1e-4)
    assert reused.best() == fresh.best()
