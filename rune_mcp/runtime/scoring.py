"""Multiple-choice scoring: how likely a model finds each continuation of a chat.

The one rule every probe in Rune is scored by (`rune bench memory`, `rune bench sweep`,
`rune demo`): a choice's score is its mean log-probability per token after the chat (the
model's own template with the generation prompt) and the probe's prefix (assistant text
already written); the probe is answered correctly when its answer scores highest, the first
of equal scores winning. Prefix and choice are tokenized together, so the seam is the one the
model would see.

Scores come from `logits` of any `Scorable`: a `Backend` (llama.cpp scores the GGUF weights
Rune serves, with the adapters on the context the way a request puts them) or a model still
in training (`rune_mcp.distill.probes.InTraining`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from rune_mcp.errors import InputError
from rune_mcp.runtime.base import Adapters, Message


class Scorable(Protocol):
    """What scoring needs of a model; `Backend` has it."""

    def tokenize(self, text: str, special: bool = False) -> list[int]: ...

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]: ...

    def logits(self, tokens: str | Sequence[int], adapters: Adapters = (), first: int = 0) -> Any: ...


@dataclass(frozen=True)
class ChoiceScores:
    """Scores of a multiple-choice continuation, one per choice."""

    scores: list[float]  # mean log-probability per token
    tokens: list[int]  # tokens scored per choice
    prompt_tokens: int

    def best(self) -> int:
        """The model's choice: the highest score, the first of equal ones."""
        return max(range(len(self.scores)), key=lambda i: self.scores[i])

    def rank(self, answer: int) -> int:
        """Where choice `answer` stands in the model's order (1: it is `best()`)."""
        mine = self.scores[answer]
        return 1 + sum(1 for i, s in enumerate(self.scores) if s > mine or (s == mine and i < answer))


def score_choices(model: Scorable, messages: Sequence[Message], prefix: str, choices: Sequence[str],
                  adapters: Adapters = ()) -> ChoiceScores:
    """Mean log-probability per token of each choice after chat(messages) + prefix, with
    `adapters` applied for this evaluation only.

    Each choice is one `logits` call whose rows start at the choice; consecutive calls share
    the prompt, which llama.cpp keeps in its context instead of evaluating it again.
    """
    import numpy as np

    if not choices or any(not c for c in choices):
        raise InputError("a probe needs non-empty choices.")
    prompt = model.chat_tokens(messages)
    scores: list[float] = []
    counts: list[int] = []
    for choice in choices:
        extra, cont = split_choice(model.tokenize, prefix, choice)
        head = len(prompt) + len(extra)
        # the row before each choice token predicts it; the last choice token predicts nothing
        rows = np.asarray(model.logits([*prompt, *extra, *cont[:-1]], adapters, head - 1),
                          dtype=np.float64)
        top = rows.max(axis=1, keepdims=True)
        logz = top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))
        picked = rows[np.arange(len(cont)), cont]
        scores.append(float((picked - logz).mean()))
        counts.append(len(cont))
    return ChoiceScores(scores, counts, len(prompt))


def split_choice(tokenize: Callable[[str], list[int]], prefix: str,
                 choice: str) -> tuple[list[int], list[int]]:
    """Tokens of `prefix + choice` split into (context part, choice part).

    Tokenized together, so the boundary is the one the model would see: `"Call `x." + "open()"`
    may merge across the seam; the choice part starts where the prefix's own tokens stop
    matching, and holds at least one token."""
    whole = tokenize(prefix + choice)
    alone = tokenize(prefix) if prefix else []
    k = 0
    while k < min(len(whole), len(alone)) and whole[k] == alone[k]:
        k += 1
    k = min(k, len(whole) - 1)
    return whole[:k], whole[k:]
