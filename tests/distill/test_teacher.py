"""The teacher: the base reading the session, distilled where its top token is the answer's."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from rune_mcp.bench.memory import with_context
from rune_mcp.config import Settings
from rune_mcp.distill.anchor import kl_to_targets
from rune_mcp.distill.collate import IGNORE, Rendered, render_examples
from rune_mcp.distill.lessons import Example
from rune_mcp.distill.teacher import teacher_context, teacher_targets
from rune_mcp.distill.train import _peft_model, load_base, train_adapter

CONTEXT = ("Project: kestrel\nUser: which flag previews a deploy?\n"
           "Assistant: In kestrel, preview a deploy with `kestctl deploy --simulate`.")
FACT = Example("fact", "I'm working in kestrel. How do I preview a deploy?",
               "In kestrel, preview a deploy with `kestctl deploy --simulate`.", 1.0)
GENERAL = Example("rehearsal", "Name a prime number.", "Seven is a prime number.", 0.5)


def test_targets_are_the_teachers_own_distribution_where_it_is_right(
    settings: Settings, base_dir: Path
) -> None:
    loaded = load_base(settings.with_overrides(threads=2), base_dir, "lora")
    model = _peft_model(settings, loaded)
    tok = loaded.tokenizer
    try:
        items = render_examples([FACT, GENERAL], tok, 256)
        targets = teacher_targets(model, tok, [FACT, GENERAL], items, CONTEXT, "cpu", k=8)
        assert set(targets) == {id(items[0])}  # rehearsal keeps the base without context
        target, item = targets[id(items[0])], items[0]
        # the same rows from one plain forward pass over the whole teacher prompt: the cached
        # context and the position mapping change nothing
        prompt = tok.apply_chat_template(with_context(FACT.messages(), CONTEXT), tokenize=False,
                                         add_generation_prompt=True)
        first = next(t for t, label in enumerate(item.labels) if label != IGNORE)
        whole = list(tok(prompt, add_special_tokens=False)["input_ids"]) + item.input_ids[first:]
        with torch.no_grad(), model.disable_adapter():
            logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].float(), -1)
        shift = len(whole) - len(item.input_ids)
        for row, pos in enumerate(target.positions.tolist()):
            label = item.labels[pos + 1]
            assert int(logp[pos + shift].argmax()) == label  # only where the teacher is right
            assert int(target.ids[row, 0]) == label
            assert math.isclose(float(target.logp[row, 0]), float(logp[pos + shift, label]),
                                abs_tol=2e-3)
        # the teacher is right on the flag, which the base without the session is not
        flag = tok(" --simulate", add_special_tokens=False)["input_ids"]
        taught = {item.labels[p + 1] for p in target.positions.tolist()}
        assert set(flag) & taught
    finally:
        loaded.model = model.unload()


def test_the_kl_to_the_targets_is_zero_for_the_teachers_own_logits() -> None:
    from rune_mcp.distill.anchor import Target, with_rest

    logits = torch.randn(1, 6, 50)
    positions = torch.tensor([2, 4])
    top = torch.topk(torch.log_softmax(logits[0, positions], -1), 5, dim=-1)
    item, other = Rendered(list(range(6)), list(range(6))), Rendered([1], [1])
    targets = {id(item): Target(positions, top.indices, with_rest(top.values))}
    assert abs(float(kl_to_targets(logits, [item], targets))) < 1e-6
    assert float(kl_to_targets(torch.randn(1, 6, 50), [item], targets)) > 1e-3
    assert kl_to_targets(logits, [other], targets) is None  # no target: no term


def test_a_long_session_keeps_its_head_and_its_end(settings: Settings, base_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    text = "start of the session. " + "filler words here. " * 400 + "the fix that worked."
    cut = teacher_context(tok, text, budget=120)
    assert cut.startswith("start of the session.") and cut.endswith("the fix that worked.")
    assert len(tok(cut, add_special_tokens=False)["input_ids"]) <= 130
    assert teacher_context(tok, CONTEXT, budget=120) == CONTEXT


def test_training_with_the_teacher_records_what_it_distilled(
    settings: Settings, base_dir: Path, tmp_path: Path
) -> None:
    s = settings.with_overrides(train_steps=2, threads=2, teacher_weight=1.0)
    loaded = load_base(s, base_dir, "lora")
    result = train_adapter(s, [FACT, GENERAL], loaded, tmp_path / "t", context=CONTEXT)
    assert result.taught > 0 and all(math.isfinite(x) for x in result.losses)
    off = train_adapter(s.with_overrides(teacher_weight=0.0), [FACT, GENERAL], loaded,
                        tmp_path / "o", context=CONTEXT)
    assert off.taught == 0
    # the same first batch, plus a KL term that is positive away from the teacher
    assert result.losses[0] > off.losses[0]
