"""Rehearsal: general prompts answered by the base model itself, mixed into every training run.

Lessons are short, project-flavoured answers; trained on them alone, an adapter carries that
style into prompts that have nothing to do with the project (`rune bench sweep` on the
bundled session at lr 1e-3: the answer to "reverse a string" lost its code block and became a
one-line tip). Training also on the base model's own greedy answers to a dozen unrelated
prompts teaches the adapter to leave such prompts alone: with them the same run kept the base
answer's code (docs/distillation.md). The prompts ship with Rune
(`data/rehearsal_prompts.json`), none of them about any project; their answers depend only on
the base model, so they are generated once per base and cached in `RUNE_CACHE_DIR`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.distill.lessons import Example
from rune_mcp.fsutil import atomic_write_json, locked

log = logging.getLogger(__name__)

PRIORITY = 0.1  # never competes with lessons: rehearsal is not subject to the lesson budget
CACHE_VERSION = 1


def bundled_prompts() -> tuple[list[str], int]:
    """The shipped prompts and the answer length, in tokens."""
    data = json.loads(resources.files("rune_mcp.data").joinpath("rehearsal_prompts.json")
                      .read_text(encoding="utf-8"))
    return [str(p) for p in data["prompts"]], int(data["max_tokens"])


def rehearsal_examples(settings: Settings, fingerprint: str, model: Any, tokenizer: Any) -> list[Example]:
    """One example per bundled prompt, answered greedily by `model` (the base, no adapter).

    `fingerprint` names the base the answers belong to; a cached set for it is reused.
    """
    if not settings.lessons_rehearsal:
        return []
    prompts, max_tokens = bundled_prompts()
    answers = _cached_answers(settings, fingerprint, prompts, max_tokens, model, tokenizer)
    # An answer cut at max_tokens is trained without an end of turn: it must not teach the
    # adapter to stop there.
    return [Example("rehearsal", p, text, PRIORITY, open_end=not ended)
            for p, (text, ended) in zip(prompts, answers, strict=True) if text]


def _cached_answers(
    settings: Settings, fingerprint: str, prompts: list[str], max_tokens: int, model: Any,
    tokenizer: Any,
) -> list[tuple[str, bool]]:
    key = hashlib.sha256(json.dumps([fingerprint, prompts, max_tokens]).encode()).hexdigest()
    path = settings.cache_dir / "rehearsal" / f"{key[:32]}.json"
    cached = _read(path, key)
    if cached is not None:
        return cached
    path.parent.mkdir(parents=True, exist_ok=True)
    with locked(path.with_suffix(".lock")):  # two servers remembering at once generate once
        cached = _read(path, key)
        if cached is not None:
            return cached
        start = time.monotonic()
        answers = generate_answers(model, tokenizer, prompts, max_tokens)
        log.info("generated %d rehearsal answers in %.1f s", len(answers), time.monotonic() - start)
        atomic_write_json(path, {"version": CACHE_VERSION, "key": key, "answers": answers})
        return answers


def _read(path: Path, key: str) -> list[tuple[str, bool]] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or data.get("key") != key:
        return None
    answers = data.get("answers")
    if not isinstance(answers, list) or not all(isinstance(a, list) and len(a) == 2 for a in answers):
        return None  # a damaged cache is regenerated, never trusted
    return [(str(a[0]), bool(a[1])) for a in answers]


def generate_answers(
    model: Any, tokenizer: Any, prompts: list[str], max_tokens: int
) -> list[tuple[str, bool]]:
    """Greedy answers to all prompts in one left-padded batch (chat template applied), each
    with whether it ended by itself (rather than at `max_tokens`)."""
    import torch

    texts = [str(tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True)) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    batch = {k: v.to(model.device) for k, v in batch.items()}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    finally:
        model.train(was_training)
    width = batch["input_ids"].shape[1]
    stops = {int(t) for t in _as_list(tokenizer.eos_token_id)}
    stops |= {int(t) for t in _as_list(getattr(model.generation_config, "eos_token_id", None))}
    return [(str(tokenizer.decode(row[width:], skip_special_tokens=True)).strip(),
             any(int(t) in stops for t in row[width:])) for row in out]


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]
