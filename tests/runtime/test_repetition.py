"""The repetition guard: no run of n tokens occurs `times` times in an answer; greedy otherwise."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from rune_mcp.runtime.repetition import NGramGuard, banned_tokens
from runtime.models import runtime_settings

LOOP = [{"role": "user", "content": "Count: one two one two one two one two one two"}]


def _most_repeated(tokens: list[int], n: int) -> int:
    grams = Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))
    return max(grams.values(), default=0)


@pytest.mark.parametrize(("generated", "n", "times", "banned"), [
    ([5, 6, 7, 5, 6, 7, 5, 6], 3, 3, [7]),  # `5 6 7` twice already: a third is banned
    ([5, 6, 7, 5, 6], 3, 3, []),  # once so far: allowed
    ([5, 6, 7, 5, 6], 3, 2, [7]),
    ([1, 2, 3, 4], 3, 2, []),
    ([1, 1], 3, 2, []),  # shorter than n
    ([9, 9, 9, 9], 2, 3, [9]),
])
def test_banned_tokens(generated: list[int], n: int, times: int, banned: list[int]) -> None:
    assert banned_tokens(generated, n, times) == banned


def test_the_guard_ignores_the_prompt() -> None:
    import numpy as np

    guard = NGramGuard(prompt_tokens=6, n=3, times=2)
    logits = np.zeros(10, dtype=np.float32)
    # the prompt holds `5 6 7` twice; the answer so far is `5 6`: the prompt does not count
    assert np.isfinite(guard([5, 6, 7, 5, 6, 7, 5, 6], logits)).all()
    out = guard([0, 0, 0, 0, 0, 0, 5, 6, 7, 5, 6], logits)
    assert out[7] == float("-inf") and np.isfinite(np.delete(out, 7)).all()
    assert guard.bans == 1


def test_a_looping_answer_is_stopped_and_a_plain_one_is_unchanged(
    llama: LlamaCppBackend, base: BaseModelInfo, tmp_path: Path
) -> None:
    plain = [{"role": "user", "content": "What is the capital of France?"}]
    loose = llama.generate(LOOP, max_tokens=60, adapters=())
    loose_tokens = llama.tokenize(loose.text)
    assert _most_repeated(loose_tokens, 3) >= 3  # the base loops here without the guard
    guarded = LlamaCppBackend(runtime_settings(tmp_path, repeat_ngram=3, repeat_times=3), base)
    try:
        tight = guarded.generate(LOOP, max_tokens=60)
        assert tight.text != loose.text
        assert _most_repeated(guarded.tokenize(tight.text), 3) < 3
        # a short answer with no loop in it comes out token for token as without the guard
        assert (guarded.generate(plain, max_tokens=24).text
                == llama.generate(plain, max_tokens=24, adapters=()).text)
    finally:
        guarded.close()


def test_transformers_applies_the_same_guard(base: BaseModelInfo, tmp_path: Path) -> None:
    from rune_mcp.runtime.transformers import TransformersBackend

    guarded = TransformersBackend(runtime_settings(tmp_path, repeat_ngram=3, repeat_times=3),
                                  base, device="cpu")
    try:
        text = guarded.generate(LOOP, max_tokens=40).text
        assert _most_repeated(guarded.tokenizer(text, add_special_tokens=False)["input_ids"], 3) < 3
    finally:
        guarded.close()
