"""The repetition guard: a token that would repeat an n-gram of the answer too often is banned.

A small model pushed by an adapter can fall into a loop (`pool_ceiling: 30` line after line,
an identifier glued to itself) and spend the whole token budget there. The guard looks only at
the tokens generated so far, never at the prompt (an answer may quote its question): when the
last `n - 1` tokens have already been followed by some token `times - 1` times, that token is
banned at this step, so no `n` tokens ever occur `times` times. Long n-grams said three times
are loops; a short phrase repeated, or code that repeats a few tokens, is untouched. Greedy
decoding stays greedy: the best token that is not banned is chosen.

`repeat_ngram = 0` switches it off. The same rule runs in llama.cpp (a logits processor) and
in transformers (a `LogitsProcessor`), so both backends answer alike.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any


def banned_tokens(generated: Sequence[int], n: int, times: int) -> list[int]:
    """Tokens that would make the last `n` generated tokens an n-gram seen `times` times.

    `banned_tokens([5, 6, 7, 5, 6, 7, 5, 6], n=3, times=3)` -> `[7]`: `5 6 7` occurred twice.
    """
    if n < 2 or times < 2 or len(generated) < n:
        return []
    tokens = list(generated)
    context, last = tokens[len(tokens) - (n - 1):], tokens[-1]
    followers: Counter[int] = Counter()
    for i in range(len(tokens) - n + 1):
        # the cheap test first: most positions already differ in their last token
        if tokens[i + n - 2] == last and tokens[i:i + n - 1] == context:
            followers[tokens[i + n - 1]] += 1
    return [token for token, count in followers.items() if count >= times - 1]


class NGramGuard:
    """A logits processor for one request: `guard(ids, logits)` with every token id so far
    (prompt first) returns the logits with the banned tokens at minus infinity."""

    def __init__(self, prompt_tokens: int, n: int, times: int) -> None:
        self.prompt_tokens, self.n, self.times = prompt_tokens, n, times
        self.bans = 0  # how many steps had a token banned, for the timings

    def __call__(self, ids: Any, logits: Any) -> Any:
        banned = banned_tokens(list(ids[self.prompt_tokens:]), self.n, self.times)
        if not banned:
            return logits
        self.bans += 1
        logits = logits.copy()
        logits[banned] = float("-inf")
        return logits


def transformers_guard(prompt_tokens: int, n: int, times: int) -> Any:
    """The same guard as a transformers `LogitsProcessor` (a batch of rows, each left-padded
    to `prompt_tokens`)."""
    import torch
    from transformers import LogitsProcessor

    class _Guard(LogitsProcessor):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            for row in range(input_ids.shape[0]):
                banned = banned_tokens(input_ids[row, prompt_tokens:].tolist(), n, times)
                if banned:
                    scores[row, banned] = float("-inf")
            return scores

    return _Guard()
