"""Multiple-choice probe scoring on the weights Rune serves: the llama.cpp base plus GGUF adapters.

A probe's choice is scored by its mean log-probability per token after the prompt (the model's
own chat template with the generation prompt) and the probe's prefix (assistant text already
written); the probe is correct when its answer scores highest. Scores come from the runtime's
llama.cpp backend (`LlamaCppBackend.score_choices`), with the adapters put on the context the
way a request puts them, so a benchmark measures what a user gets. (The transformers scorer in
`rune_mcp.distill.probes` checks training in-process against the PEFT weights; this one checks the
served GGUF.)
"""

from __future__ import annotations

from collections.abc import Sequence

from rune_mcp.errors import InputError
from rune_mcp.runtime.base import AdapterSpec, Backend, Message
from rune_mcp.runtime.llamacpp import ChoiceScores, LlamaCppBackend

__all__ = ["ChoiceScores", "count_tokens", "score_choices", "truncate_tokens"]


def _llama(backend: Backend) -> LlamaCppBackend:
    if not isinstance(backend, LlamaCppBackend):
        raise InputError(
            f"probe scoring needs the llama.cpp backend, not {backend.name}; set RUNE_BACKEND=llamacpp."
        )
    return backend


def score_choices(
    backend: Backend,
    messages: Sequence[Message],
    prefix: str,
    choices: Sequence[str],
    adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec] = (),
) -> ChoiceScores:
    """Mean log-probability per token of each choice after chat(messages) + prefix."""
    return _llama(backend).score_choices(messages, prefix, choices, adapters)


def count_tokens(backend: Backend, text: str) -> int:
    """Tokens of `text` in the served model's vocabulary."""
    return _llama(backend).count_tokens(text)


def truncate_tokens(backend: Backend, text: str, limit: int) -> str:
    """`text` cut to at most `limit` tokens, keeping its start and end (the task and the
    outcome of a session matter most)."""
    return _llama(backend).truncate_tokens(text, limit)
