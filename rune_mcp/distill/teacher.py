"""The teacher: the base model with the session in its context, as a KL target on the lessons.

Next-token loss teaches an answer's tokens one at a time and nothing about the rest of the
distribution; distilling from the same model reading the source document (context
distillation, Knowledge Modules) also carries what the model in context finds likely around
them. With `teacher_weight` above 0, every lesson example's answer is read once, before the
first step, by the base model (adapter off) with the session's text put before the question
exactly as the `full_context` condition of `rune bench memory` puts it
(`rune_mcp.bench.memory.with_context`), and its next-token distribution at each answer position
becomes a KL target for the adapter without that text: the `ANCHOR_TOP_K` most likely tokens
plus one bucket for the rest (`rune_mcp.distill.anchor`).

Only where the teacher is right: a small base with a long session in its context often
predicts something else than the fix (the whole session in the prompt names the lesson in few
free answers, docs/results.md), so a position is distilled only where the teacher's most likely
token is the answer's own token; elsewhere the next-token loss alone trains it. Rehearsal
examples are never distilled: their target is the base without the session.

Cost: the context is read once per training (`TEACHER_CONTEXT_TOKENS` at most, head and tail
kept) and its attention cache reused for every example, so each example adds one forward pass
over its question and answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rune_mcp.distill.anchor import ANCHOR_TOP_K, Target, trained_positions, with_rest
from rune_mcp.distill.collate import IGNORE, Rendered, chat_text, encode_text
from rune_mcp.distill.lessons import Example

TEACHER_CONTEXT_TOKENS = 2048
JUNCTION = 2  # tokens at the end of the shared prompt that are read again with each question
UNTAUGHT = frozenset({"rehearsal", "anchor"})  # kinds whose target is the base without context


def teacher_context(tokenizer: Any, text: str, budget: int = TEACHER_CONTEXT_TOKENS) -> str:
    """The session's text cut to `budget` tokens: its first third and its end kept (the fix
    and what verified it are at the end of a session)."""
    ids = encode_text(tokenizer, text)
    if len(ids) <= budget:
        return text
    head = budget // 3
    return str(tokenizer.decode(ids[:head])) + "\n[...]\n" + str(tokenizer.decode(ids[-(budget - head):]))


def teacher_targets(model: Any, tokenizer: Any, examples: Sequence[Example],
                    rendered: Sequence[Rendered], context: str, device: str,
                    k: int = ANCHOR_TOP_K) -> dict[int, Target]:
    """The teacher's targets for the lesson examples, by `id(rendered item)`; `model` is the
    PEFT model, read with its adapter off. `examples[i]` is the example `rendered[i]` came
    from. An example whose answer the teacher gets wrong everywhere has no target."""
    import torch

    from rune_mcp.bench.memory import with_context

    out: dict[int, Target] = {}
    prefix = _prefix(tokenizer, context)
    with torch.no_grad(), model.disable_adapter():
        cache = (model(input_ids=torch.tensor([prefix], device=device), use_cache=True).cache
                 if prefix else None)
        for ex, item in zip(examples, rendered, strict=True):
            positions = trained_positions(item)
            if item.kind in UNTAUGHT or not positions:
                continue
            ids = encode_text(tokenizer, chat_text(tokenizer, with_context(ex.messages(), context), True))
            shared = cache is not None and ids[: len(prefix)] == prefix  # else read it whole
            target = _one(model, cache if shared else None, ids[len(prefix):] if shared else ids,
                          item, positions, device, k)
            if target is not None:
                out[id(item)] = target
    return out


def _prefix(tokenizer: Any, context: str) -> list[int]:
    """The tokens every example's teacher prompt starts with: the chat up to the question,
    less its last `JUNCTION` tokens, which can merge with the question's first characters."""
    from rune_mcp.bench.memory import with_context

    marker = "\x00QUESTION\x00"
    prompt = chat_text(tokenizer, with_context([{"role": "user", "content": marker}], context), True)
    head = encode_text(tokenizer, prompt.partition(marker)[0])
    return head[: max(0, len(head) - JUNCTION)]


def _one(model: Any, cache: Any, question: list[int], item: Rendered, positions: list[int],
         device: str, k: int) -> Target | None:
    """One example read by the teacher after the cached context (None: `question` is the
    whole prompt): its question, then the example's answer tokens; targets where the
    teacher's top token is the answer's."""
    import torch

    first = next(t for t, label in enumerate(item.labels) if label != IGNORE)
    answer = item.input_ids[first:]
    ids = torch.tensor([question + answer], device=device)
    if cache is None:
        logits = model(input_ids=ids).logits[0]
    else:
        try:
            logits = model(input_ids=ids, cache=cache, use_cache=True).logits[0]
        finally:
            cache.crop(-ids.shape[1])  # the pass appended this example; the context stays
    # the student's position p predicts its token p + 1; the teacher's row for the same token
    # is that token's place in `question + answer`, less one
    rows = [len(question) + (p + 1 - first) - 1 for p in positions]
    logp = torch.log_softmax(logits[rows].float(), dim=-1)
    labels = torch.tensor([item.labels[p + 1] for p in positions], device=device)
    right = logp.argmax(-1) == labels
    if not bool(right.any()):
        return None
    top = torch.topk(logp[right], k, dim=-1)
    chosen = torch.tensor(positions, device=device)[right]
    return Target(chosen, top.indices, with_rest(top.values))
