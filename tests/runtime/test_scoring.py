"""Probe scoring over `Backend.logits`: reused KV rows give the same numbers as a full pass,
and every backend that exposes logits scores by the same rule."""

from __future__ import annotations

import numpy as np
import pytest

from rune_mcp.errors import BackendError, InputError
from rune_mcp.runtime.base import AdapterSpec, Backend
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from rune_mcp.runtime.scoring import ChoiceScores, score_choices, split_choice
from rune_mcp.runtime.transformers import TransformersBackend

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
PREFIX = "The capital of France is "
CHOICES = ["Paris", "Berlin", "a large city in Spain"]


def _reference(backend: Backend, choice: str) -> float:
    """Mean log-probability of `choice` from one full pass with every position's logits."""
    prompt = backend.chat_tokens(MESSAGES)
    whole = backend.tokenize(PREFIX + choice)
    alone = backend.tokenize(PREFIX)
    k = 0
    while whole[k] == alone[k]:
        k += 1
    logits = backend.logits([*prompt, *whole])
    assert logits.shape[0] == len(prompt) + len(whole)
    rows = logits[len(prompt) + k - 1 : -1].astype(np.float64)
    logz = np.log(np.exp(rows - rows.max(1, keepdims=True)).sum(1)) + rows.max(1)
    picked = rows[np.arange(len(whole) - k), whole[k:]]
    return float((picked - logz).mean())


def test_scores_match_a_full_forward_pass(llama: LlamaCppBackend) -> None:
    res = score_choices(llama, MESSAGES, PREFIX, CHOICES)
    assert len(res.scores) == len(CHOICES) and all(s < 0 for s in res.scores)
    for choice, score in zip(CHOICES, res.scores, strict=True):
        assert score == pytest.approx(_reference(llama, choice), abs=2e-3)


def test_the_model_knows_an_easy_fact_and_scores_are_repeatable(llama: LlamaCppBackend) -> None:
    first = score_choices(llama, MESSAGES, PREFIX, CHOICES)
    again = score_choices(llama, MESSAGES, PREFIX, CHOICES)
    assert first.best() == 0 and first.rank(0) == 1 and first.rank(1) > 1
    assert first.scores == again.scores
    assert first.tokens[2] > first.tokens[0], "longer choices are averaged over more tokens"


def test_transformers_scores_the_same_weights_by_the_same_rule(
    llama: LlamaCppBackend, hf: TransformersBackend
) -> None:
    """The derived transformers base is the GGUF's weights dequantized: the same choice wins
    and scores are close (Q4_1 against fp32)."""
    served = score_choices(llama, MESSAGES, PREFIX, CHOICES)
    derived = score_choices(hf, MESSAGES, PREFIX, CHOICES)
    assert derived.tokens == served.tokens and derived.best() == served.best() == 0
    assert max(abs(a - b) for a, b in zip(served.scores, derived.scores, strict=True)) < 0.5


def test_a_model_in_training_scores_as_the_backend_serving_it(hf: TransformersBackend) -> None:
    """`rune bench sweep` and `rune demo` score a model in this process: the same numbers as
    the transformers backend gives for the same weights."""
    from rune_mcp.distill.probes import InTraining

    served = score_choices(hf, MESSAGES, PREFIX, CHOICES)
    with hf._scope([()]):  # the model as the backend runs it without adapters
        here = score_choices(InTraining(hf._runner(), hf.tokenizer), MESSAGES, PREFIX, CHOICES)
    assert here == served


def test_ties_go_to_the_first_choice_and_rank_agrees() -> None:
    tied = ChoiceScores([-1.0, -0.5, -0.5], [1, 1, 1], 3)
    assert tied.best() == 1 and tied.rank(1) == 1 and tied.rank(2) == 2 and tied.rank(0) == 3


def test_the_seam_is_where_the_prefix_tokens_stop(llama: LlamaCppBackend) -> None:
    extra, cont = split_choice(llama.tokenize, "Run `", "make test`")
    assert extra + cont == llama.tokenize("Run `make test`") and cont
    assert split_choice(llama.tokenize, "", "x")[0] == []


def test_truncation_and_bad_input(llama: LlamaCppBackend) -> None:
    text = " ".join(f"word{i}" for i in range(2000))
    short = llama.truncate_tokens(text, 100)
    assert llama.count_tokens(short) <= 110 and short.startswith("word0") and short.endswith("word1999")
    assert llama.truncate_tokens("short text", 100) == "short text"
    with pytest.raises(InputError):
        score_choices(llama, MESSAGES, PREFIX, ["Paris", ""])
    with pytest.raises(InputError, match="context holds"):
        llama.logits(list(range(5)) * 400)


def test_scores_are_taken_with_the_adapter_on_the_context(
    llama: LlamaCppBackend, adapter_a: AdapterSpec
) -> None:
    """An adapter must change the scores, the base must come back after it, and the backend's
    default adapter set must not move."""
    plain = score_choices(llama, MESSAGES, PREFIX, CHOICES)
    adapted = score_choices(llama, MESSAGES, PREFIX, CHOICES, [adapter_a])
    assert max(abs(a - b) for a, b in zip(plain.scores, adapted.scores, strict=True)) > 0.05
    assert score_choices(llama, MESSAGES, PREFIX, CHOICES).scores == plain.scores
    assert llama.active == ()


def test_a_shared_prefix_is_reused_without_changing_the_scores(llama: LlamaCppBackend) -> None:
    """Two probes about one session share its text; the second reuses the first's KV rows and
    must score as it does from scratch."""
    notes = "Notes: the deploy command is `just ship`; tests run with `just verify`. " * 20
    first = [{"role": "user", "content": notes + "How do I deploy?"}]
    second = [{"role": "user", "content": notes + "How do I run the tests?"}]
    choices = ["just verify", "make test", "npm test"]
    score_choices(llama, first, "Run `", choices)
    reused = score_choices(llama, second, "Run `", choices)
    assert llama._reusable(llama.chat_tokens(second)) > 200
    llama.apply_now([])  # forget the KV rows: start from scratch
    assert llama._reusable(llama.chat_tokens(second)) == 0
    fresh = score_choices(llama, second, "Run `", choices)
    assert reused.scores == pytest.approx(fresh.scores, abs=1e-4)
    assert reused.best() == fresh.best()


def test_a_generation_in_between_does_not_reuse_stale_rows(llama: LlamaCppBackend) -> None:
    before = score_choices(llama, MESSAGES, PREFIX, CHOICES)
    llama.generate([{"role": "user", "content": "Say something else entirely."}], max_tokens=4)
    assert score_choices(llama, MESSAGES, PREFIX, CHOICES).scores == pytest.approx(before.scores, abs=1e-4)


def test_a_backend_without_logits_says_which_to_use() -> None:
    from rune_mcp.runtime.vllm import VllmBackend

    backend = VllmBackend.__new__(VllmBackend)  # no server needed: nothing is requested
    with pytest.raises(BackendError, match="RUNE_BACKEND=llamacpp"):
        score_choices(backend, MESSAGES, PREFIX, CHOICES)
