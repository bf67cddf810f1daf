"""Collation: prompts get no loss, answers and their end of turn do, failed attempts are
pushed down only where they depart from the fix."""

from __future__ import annotations

from typing import Any

import pytest

from distill.sessions import FAILED
from rune_mcp.config import Settings
from rune_mcp.distill.collate import IGNORE, key_token_mask, render_examples
from rune_mcp.distill.lessons import Example, compile_lessons
from rune_mcp.errors import ConfigError
from rune_mcp.trajectory import Trajectory


class _Tok:
    """A character-level stand-in tokenizer with a ChatML template (no model needed)."""

    eos_token = "<|im_end|>"

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool,
                            add_generation_prompt: bool) -> str:
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def __call__(self, text: str, add_special_tokens: bool,
                 return_offsets_mapping: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"input_ids": [ord(c) for c in text]}
        if return_offsets_mapping:
            out["offset_mapping"] = [(i, i + 1) for i in range(len(text))]
        return out


class _SlowTok(_Tok):
    def __call__(self, text: str, add_special_tokens: bool,
                 return_offsets_mapping: bool = False) -> dict[str, Any]:
        if return_offsets_mapping:
            raise NotImplementedError("return_offset_mapping is not available")
        return super().__call__(text, add_special_tokens)


def test_render_masks_the_prompt_and_trains_the_answer(
    trajectory: Trajectory, settings: Settings
) -> None:
    examples = compile_lessons(trajectory, settings)
    attempt = next(ex for ex in examples if ex.kind == "attempt")
    [r] = render_examples([attempt], _Tok(), 4096, unlikelihood=True)
    trained = "".join(chr(t) for t in r.labels if t != IGNORE)
    assert trained == attempt.answer + "<|im_end|>\n"
    assert FAILED not in trained
    assert len(r.input_ids) == len(r.labels)
    # The unlikelihood sequence marks only where the failed attempt departs from the fix.
    assert r.neg_ids is not None and r.neg_mask is not None
    marked = "".join(chr(t) for t, m in zip(r.neg_ids, r.neg_mask, strict=True) if m)
    assert marked and marked in attempt.negative  # type: ignore[operator]
    assert not marked.startswith("edit tidewater")  # the shared prefix is not pushed down


def test_render_without_unlikelihood_has_no_negative(
    trajectory: Trajectory, settings: Settings
) -> None:
    rendered = render_examples(compile_lessons(trajectory, settings), _Tok(), 64)
    assert all(r.neg_ids is None for r in rendered)
    assert all(len(r.input_ids) <= 64 for r in rendered)
    assert all(any(t != IGNORE for t in r.labels) for r in rendered)


def test_open_end_answer_is_trained_without_an_end_of_turn() -> None:
    cut = Example("rehearsal", "What is recursion?", "A function that calls", 0.1, open_end=True)
    [r] = render_examples([cut], _Tok(), 4096)
    assert "".join(chr(t) for t in r.labels if t != IGNORE) == "A function that calls"


def test_key_tokens_are_the_inline_code_spans_only() -> None:
    text = "In acme, use `acme.db.pool`, not `pool()`.\n```\nx = 1\n```"
    ids, is_key = key_token_mask(_Tok(), text)
    assert len(ids) == len(text) == len(is_key)
    assert "".join(c for c, k in zip(text, is_key, strict=True) if k) == "acme.db.poolpool()"


def test_key_weight_weighs_the_spans_and_leaves_the_prompt_out() -> None:
    ex = Example("fact", "What do I call in acme?", "In acme, use `acme.db.pool`.", 1.0)
    [plain] = render_examples([ex], _Tok(), 4096)
    [r] = render_examples([ex], _Tok(), 4096, key_weight=3.0)
    assert plain.weights is None and r.input_ids == plain.input_ids and r.labels == plain.labels
    assert r.weights is not None and len(r.weights) == len(r.labels)
    assert all(w == 0.0 for w, t in zip(r.weights, r.labels, strict=True) if t == IGNORE)
    heavy = "".join(chr(t) for t, w in zip(r.labels, r.weights, strict=True) if w == 3.0)
    assert heavy == "acme.db.pool"
    assert {w for w, t in zip(r.weights, r.labels, strict=True) if t != IGNORE} == {1.0, 3.0}


def test_key_weight_without_offsets_says_what_to_do() -> None:
    ex = Example("fact", "What do I call?", "Use `pool`.", 1.0)
    render_examples([ex], _SlowTok(), 4096)  # weight 1 needs no offsets
    with pytest.raises(ConfigError, match="answer_key_weight = 1"):
        render_examples([ex], _SlowTok(), 4096, key_weight=2.0)
