"""Collation: compiled examples become token ids and loss labels in the base's chat template.

An example's prompt is rendered as a user turn with the generation prompt and gets no loss;
its answer and the end-of-turn marker after it are trained. Rendering through the base
model's own template means the adapter learns the exact text the runtime will feed it. An
example whose answer was cut short (`open_end`) is trained without the end-of-turn marker, so
the adapter does not learn to stop where the cut happened.

With a key weight above 1, the answer tokens inside inline code spans (`orlamark.entropy`,
`--clobber`) weigh that much more in the loss than the rest: the free answers that miss a
lesson mostly keep its sentence and name a neighbouring identifier (docs/results.md).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rune_mcp.distill.lessons import Example
from rune_mcp.errors import ConfigError

IGNORE = -100  # label value the loss skips
_INLINE_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")  # `x`, not the fences of a code block


@dataclass
class Rendered:
    """Token ids and labels (`IGNORE` where no loss) of one example, plus the optional
    unlikelihood sequence for its failed attempt."""

    input_ids: list[int]
    labels: list[int]
    neg_ids: list[int] | None = None
    neg_mask: list[int] | None = None  # 1 on tokens whose probability is pushed down
    kind: str = ""
    weights: list[float] | None = None  # loss weight per label; None: all 1


def render_examples(
    examples: Sequence[Example], tokenizer: Any, max_tokens: int, unlikelihood: bool = False,
    key_weight: float = 1.0,
) -> list[Rendered]:
    """Token ids with labels: the prompt (chat template, generation prompt) gets no loss, the
    answer and its end-of-turn marker do. Too-long prompts lose their middle, not their ends.
    With `key_weight` != 1, each example also gets loss weights (see the module's docstring)."""
    return [_render(ex, tokenizer, max_tokens, unlikelihood, key_weight) for ex in examples]


def chat_text(tokenizer: Any, messages: list[dict[str, str]], generation: bool) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=generation)
    return str(text)


def _answer_text(tokenizer: Any, ex: Example, answer: str, prompt_text: str) -> str:
    full = chat_text(tokenizer, [*ex.messages(), {"role": "assistant", "content": answer}], False)
    if full.startswith(prompt_text):
        return full[len(prompt_text):]
    eos = tokenizer.eos_token or ""
    return answer + eos  # a template that rewrites earlier turns: end the answer plainly


def encode_text(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _fit(prompt: list[int], answer: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    answer = answer[: max(1, max_tokens * 3 // 4)]
    room = max_tokens - len(answer)
    if len(prompt) > room:
        head = room // 3
        prompt = prompt[:head] + prompt[len(prompt) - (room - head):]
    return prompt, answer


def key_token_mask(tokenizer: Any, text: str) -> tuple[list[int], list[bool]]:
    """The token ids of `text` and, for each, whether it overlaps an inline code span's
    content. Needs a tokenizer that reports character offsets (every fast tokenizer does)."""
    spans = [m.span(1) for m in _INLINE_CODE.finditer(text)]
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError as exc:  # a slow (pure Python) tokenizer has no offsets
        raise ConfigError("answer_key_weight needs a fast tokenizer, which reports character "
                         "offsets; set answer_key_weight = 1.") from exc
    ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    return ids, [any(a < e and s < b for s, e in spans) for a, b in offsets]


def _render(ex: Example, tokenizer: Any, max_tokens: int, unlikelihood: bool,
            key_weight: float = 1.0) -> Rendered:
    prompt_text = chat_text(tokenizer, ex.messages(), True)
    answer_text = ex.answer if ex.open_end else _answer_text(tokenizer, ex, ex.answer, prompt_text)
    keyed = key_weight != 1.0
    answer_ids, is_key = (key_token_mask(tokenizer, answer_text) if keyed
                          else (encode_text(tokenizer, answer_text), []))
    prompt, answer = _fit(encode_text(tokenizer, prompt_text), answer_ids, max_tokens)
    out = Rendered(prompt + answer, [IGNORE] * len(prompt) + answer, kind=ex.kind)
    if keyed:
        out.weights = [0.0] * len(prompt) + [key_weight if k else 1.0 for k in is_key[:len(answer)]]
    if unlikelihood and ex.negative:
        neg = encode_text(tokenizer, ex.negative)
        same = 0
        while same < min(len(neg), len(answer)) and neg[same] == answer[same]:
            same += 1
        # Only the tokens where the failed attempt departs from the fix are pushed down;
        # a shared prefix (`pool = acme.db.`) is right in both.
        neg_prompt, neg = _fit(prompt, neg, max_tokens)
        out.neg_ids = neg_prompt + neg
        out.neg_mask = [0] * len(neg_prompt) + [int(i >= same) for i in range(len(neg))]
    return out
