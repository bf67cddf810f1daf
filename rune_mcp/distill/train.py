"""Training: compiled lessons -> a PEFT LoRA adapter (LoRA, or QLoRA on an NF4 base).

The base is the derived transformers form of the GGUF (`basemodel.ensure_derived`), so an
adapter is trained on exactly the weights llama.cpp serves. LoRA runs in fp32 on CPU and bf16
on a GPU; QLoRA quantizes that base to bitsandbytes NF4 with double quantization (which also
runs on CPU with bitsandbytes 0.50). The adapter is written only after the last step: a run
that diverges, is interrupted or fails leaves nothing behind.
"""

from __future__ import annotations

import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.device import pick_device
from rune_mcp.distill.answered import Check, answered_share
from rune_mcp.distill.collate import IGNORE, Rendered, render_examples
from rune_mcp.distill.lessons import Example
from rune_mcp.errors import ModelError, TrainingError

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
EXPLODE_FACTOR = 4.0  # a loss this many times the mean so far means the run has diverged
EXPLODE_MARGIN = 4.0  # ... and at least this much above it (tiny early losses wobble)
EXPLODE_STEPS = 2  # ... on this many steps in a row: one batch of hard examples is not divergence
MIN_LR_SHARE = 0.1  # where the cosine schedule ends, as a share of learning_rate


@dataclass
class Loaded:
    """A base model ready for an adapter, with how long loading it took."""

    model: Any
    tokenizer: Any
    method: str
    device: str
    seconds: float


@dataclass
class TrainResult:
    """What one training run produced and how it went."""

    peft_dir: Path
    method: str
    device: str
    steps: int
    final_loss: float
    seconds: float
    load_seconds: float
    tokens: int
    trainable_params: int
    examples: int
    losses: list[float] = field(default_factory=list)
    stopped_early: bool = False
    answered: list[tuple[int, float]] = field(default_factory=list)  # (step, share) per check
    kept_step: int | None = None  # the checked step whose weights were kept (None: the last)
    taught: int = 0  # answer positions distilled from the teacher (teacher_weight)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method, "device": self.device, "steps": self.steps,
            "final_loss": self.final_loss, "seconds": round(self.seconds, 3),
            "load_seconds": round(self.load_seconds, 3), "tokens": self.tokens,
            "trainable_params": self.trainable_params, "examples": self.examples,
            "losses": [round(x, 4) for x in self.losses], "stopped_early": self.stopped_early,
            "answered": [[step, round(share, 4)] for step, share in self.answered],
            "kept_step": self.kept_step, "taught": self.taught,
        }


def load_base(settings: Settings, model_dir: Path, method: str | None = None) -> Loaded:
    """Load tokenizer and base model for training: fp32 on CPU, bf16 on GPU, NF4 for QLoRA."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    method = method or settings.train_method
    device = pick_device(settings)
    torch.set_num_threads(settings.threads)
    start = time.monotonic()
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    kwargs: dict[str, Any] = {"dtype": dtype}
    if method == "qlora":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(  # type: ignore[no-untyped-call]
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype)
        kwargs["device_map"] = {"": 0 if device == "cuda" else "cpu"}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model: Any = AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load the base model from {model_dir} ({exc}); remove that "
                         "folder so it is derived again.") from exc
    if method != "qlora":
        model.to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return Loaded(model, tokenizer, method, device, time.monotonic() - start)


def _check_targets(targets: Sequence[str]) -> None:
    """Only modules a llama.cpp LoRA can name may get LoRA weights: anything else would train
    for minutes and then fail to export."""
    from rune_mcp.distill.gguf import GGUF_MODULES

    unservable = [name for name in targets if name not in GGUF_MODULES]
    if unservable:
        raise TrainingError(f"target_modules {unservable} cannot be served by llama.cpp; "
                            f"choose among {list(GGUF_MODULES)}.")


def _peft_model(settings: Settings, loaded: Loaded) -> Any:
    from peft import LoraConfig, get_peft_model

    _check_targets(settings.target_modules)
    model = loaded.model
    if loaded.method == "qlora":
        from peft import prepare_model_for_kbit_training

        # Gradient checkpointing trades time for memory a 135M model does not need.
        model = prepare_model_for_kbit_training(  # type: ignore[no-untyped-call]
            model, use_gradient_checkpointing=False)
    # PEFT types alpha as int but only ever divides by it; a float alpha is kept exact.
    alpha: Any = settings.lora_alpha
    config = LoraConfig(r=settings.lora_rank, lora_alpha=alpha,
                        lora_dropout=settings.lora_dropout,
                        target_modules=list(settings.target_modules), bias="none",
                        task_type="CAUSAL_LM", layers_to_transform=_top_layers(settings, model))
    try:
        with warnings.catch_warnings():
            # PEFT still asks transformers a deprecated question; harmless, and not ours.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*",
                                    category=FutureWarning)
            return get_peft_model(model, config)
    except ValueError as exc:
        raise TrainingError(f"cannot attach LoRA to {settings.target_modules} ({exc}); set "
                            "target_modules to linear layers of the base model.") from exc


def _top_layers(settings: Settings, model: Any) -> list[int] | None:
    """The upper `lora_top_layers` decoder layers (None: all). With LoRA only there, the
    backward pass stops at the lowest adapted layer, so a step costs less."""
    total = int(getattr(model.config, "num_hidden_layers", 0) or 0)
    if not settings.lora_top_layers or not total or settings.lora_top_layers >= total:
        return None
    return list(range(total - settings.lora_top_layers, total))


def make_batches(rendered: Sequence[Rendered], batch_tokens: int, seed: int) -> list[list[Rendered]]:
    """Pack examples into batches whose padded size stays within `batch_tokens` (an example
    longer than that gets a batch of its own)."""
    order = list(rendered)
    random.Random(seed).shuffle(order)
    batches: list[list[Rendered]] = []
    current: list[Rendered] = []
    longest = 0
    for item in order:
        n = len(item.input_ids)
        if current and max(longest, n) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(item)
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


def _tensors(seqs: list[list[int]], labels: list[list[int]], pad: int, device: str) -> Any:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    lab = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, (s, lb) in enumerate(zip(seqs, labels, strict=True)):
        ids[row, : len(s)] = torch.tensor(s)
        lab[row, : len(lb)] = torch.tensor(lb)
        mask[row, : len(s)] = 1
    return ids.to(device), lab.to(device), mask.to(device)


def _likelihood_loss(model: Any, batch: list[Rendered], pad: int, device: str,
                     taught: dict[int, Any] | None = None, teacher_weight: float = 0.0) -> Any:
    """Next-token loss; with `taught` (the teacher's targets, `rune_mcp.distill.teacher`),
    plus `teacher_weight` times the KL to them, from the same forward pass."""
    ids, labels, mask = _tensors([r.input_ids for r in batch], [r.labels for r in batch],
                                 pad, device)
    taught = taught if taught and any(id(r) in taught for r in batch) else None
    if not taught and all(r.weights is None for r in batch):
        return model(input_ids=ids, attention_mask=mask, labels=labels).loss
    logits = model(input_ids=ids, attention_mask=mask).logits
    loss = weighted_loss(logits, labels, _weights(batch, labels))
    if taught:
        from rune_mcp.distill.anchor import kl_to_targets

        kl = kl_to_targets(logits, batch, taught)
        loss = loss + teacher_weight * kl if kl is not None else loss
    return loss


def _weights(batch: list[Rendered], labels: Any) -> Any:
    import torch

    out = torch.zeros(labels.shape, dtype=torch.float32, device=labels.device)
    for row, r in enumerate(batch):
        w = r.weights or [0.0 if t == IGNORE else 1.0 for t in r.labels]
        out[row, : len(w)] = torch.tensor(w)
    return out


def weighted_loss(logits: Any, labels: Any, weights: Any) -> Any:
    """Next-token cross-entropy with a weight per target token, normalised by the weights'
    sum, so a heavier key shifts the gradient's share without scaling the whole step."""
    import torch

    logits, labels, weights = logits[:, :-1].float(), labels[:, 1:], weights[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                           labels.reshape(-1), ignore_index=IGNORE,
                                           reduction="none").view(labels.shape)
    return (ce * weights).sum() / weights.sum().clamp(min=1e-8)


def _unlikelihood_loss(model: Any, batch: list[Rendered], pad: int, device: str) -> Any:
    """Mean of -log(1 - p) over the tokens where a failed attempt departs from its fix."""
    import torch

    negs = [r for r in batch if r.neg_ids and r.neg_mask and any(r.neg_mask)]
    if not negs:
        return None
    seqs = [r.neg_ids or [] for r in negs]
    marks = [[t if m else IGNORE for t, m in zip(r.neg_ids or [], r.neg_mask or [], strict=True)]
             for r in negs]
    ids, targets, mask = _tensors(seqs, marks, pad, device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    targets = targets[:, 1:]
    chosen = targets != IGNORE
    probs = torch.softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1))
    penalty = -torch.log((1.0 - probs.squeeze(-1)).clamp(min=1e-5))
    return penalty[chosen].mean()


def _anchor_targets(settings: Settings, model: Any, batches: list[list[Rendered]],
                    device: str) -> dict[int, Any]:
    """The base's distributions on the rehearsal examples, when they are trained by KL."""
    if settings.rehearsal_loss != "kl":
        return {}
    from rune_mcp.distill.anchor import base_targets

    return base_targets(model, [r for b in batches for r in b if r.kind == "rehearsal"], device)


def _code_anchor(settings: Settings, model: Any, loaded: Loaded) -> tuple[list[Rendered], dict[int, Any]]:
    """The anchor's source windows and the base's distributions on them (`anchor_code_tokens`)."""
    if not settings.anchor_code_tokens:
        return [], {}
    from rune_mcp.distill.anchor import base_targets, code_windows

    windows = code_windows(loaded.tokenizer, settings.anchor_code_tokens)
    return windows, base_targets(model, windows, loaded.device)


def _batch_loss(settings: Settings, model: Any, batch: list[Rendered], anchors: dict[int, Any],
                pad: int, device: str, taught: dict[int, Any] | None = None) -> Any:
    """Next-token loss on the lessons (with the teacher's KL where `taught` has targets); on
    rehearsal examples too, unless they are anchored to the base by KL
    (`rune_mcp.distill.anchor`)."""
    anchored = [r for r in batch if id(r) in anchors]
    rest = [r for r in batch if id(r) not in anchors]
    loss = (_likelihood_loss(model, rest, pad, device, taught, settings.teacher_weight)
            if rest else None)
    if anchored:
        from rune_mcp.distill.anchor import anchor_loss

        kl = settings.anchor_weight * anchor_loss(model, anchored, anchors, pad, device)
        loss = kl if loss is None else loss + kl
    return loss


def _step_loss(settings: Settings, model: Any, batch: list[Rendered], anchors: dict[int, Any],
               pad: int, device: str, taught: dict[int, Any] | None = None) -> Any:
    """The batch's loss, with the unlikelihood term on failed attempts when it is weighted."""
    loss = _batch_loss(settings, model, batch, anchors, pad, device, taught)
    if settings.unlikelihood_weight > 0:
        ul = _unlikelihood_loss(model, batch, pad, device)
        if ul is not None:
            loss = loss + settings.unlikelihood_weight * ul
    return loss


def _code_loss(settings: Settings, model: Any, code: list[Rendered], targets: dict[int, Any],
               step: int, pad: int, device: str) -> Any:
    """The KL to the base on this step's source window (the windows taken in turn)."""
    from rune_mcp.distill.anchor import anchor_loss

    window = [code[(step - 1) % len(code)]]
    return settings.anchor_weight * anchor_loss(model, window, targets, pad, device)


def lr_factor(schedule: str, index: int, total: int) -> float:
    """The learning rate's multiplier at optimizer step `index` (0-based) of `total`: 1 for
    constant; for cosine, 1 at the first step falling to MIN_LR_SHARE at the last."""
    if schedule == "constant" or total <= 1:
        return 1.0
    done = min(index, total - 1) / (total - 1)
    return MIN_LR_SHARE + (1.0 - MIN_LR_SHARE) * 0.5 * (1.0 + math.cos(math.pi * done))


@dataclass
class Divergence:
    """Watches a run's losses. Not finite means diverged at once; exploding (EXPLODE_FACTOR
    times, and EXPLODE_MARGIN above, the mean of the healthy losses so far) means diverged on
    EXPLODE_STEPS steps in a row. Not the first loss alone, and not one step, because batches
    differ: an easy first batch at 0.5 beside one of new facts at 4.8 is a normal run. An
    exploding loss stays out of the mean, so a run that blew up cannot raise its own bar."""

    healthy: list[float] = field(default_factory=list)
    strikes: int = 0

    def diverged(self, value: float) -> bool:
        if not math.isfinite(value):
            return True
        if self.healthy:
            mean = sum(self.healthy) / len(self.healthy)
            if value > max(mean * EXPLODE_FACTOR, mean + EXPLODE_MARGIN):
                self.strikes += 1
                return self.strikes >= EXPLODE_STEPS
        self.strikes = 0
        self.healthy.append(value)
        return False


def _diverged(step: int, value: float, what: str = "loss") -> TrainingError:
    return TrainingError(f"training diverged at step {step} ({what} {value:.4g}); nothing was "
                         "stored; lower learning_rate and try again.")


def train_adapter(
    settings: Settings,
    examples: Sequence[Example],
    loaded: Loaded,
    out_dir: Path,
    progress: Progress | None = None,
    start: Path | None = None,
    checks: Sequence[Check] = (),
    context: str | None = None,
) -> TrainResult:
    """Train a LoRA adapter on `examples` and save the PEFT folder to `out_dir`; with `start`
    (a PEFT folder of the same rank and modules), training begins from its weights; with
    `checks` and `answer_check_every`, it stops once they are answered (`distill.answered`);
    with `context` (the session's text) and `teacher_weight`, the lessons are also distilled
    from the base reading that text (`distill.teacher`).

    Raises TrainingError on divergence (loss NaN/inf or exploding); `out_dir` is only written
    after the last step, so an error or Ctrl+C leaves it absent.
    """
    import torch

    if not examples:
        raise TrainingError("there are no lessons to train on; nothing was stored.")
    torch.manual_seed(settings.seed)
    rendered = render_examples(examples, loaded.tokenizer, settings.max_example_tokens,
                               unlikelihood=settings.unlikelihood_weight > 0,
                               key_weight=settings.answer_key_weight)
    batches = make_batches(rendered, settings.train_batch_tokens, settings.seed)
    model = _peft_model(settings, loaded)
    if start is not None:
        _load_start(model, start)
    try:
        taught = _teacher(settings, model, loaded, examples, rendered, context)
        return _loop(settings, model, loaded, batches, out_dir, progress, len(examples), checks,
                     taught)
    finally:
        # Leave the shared base model as it was: the LoRA layers come out again.
        loaded.model = model.unload() if loaded.method != "qlora" else loaded.model


def _teacher(settings: Settings, model: Any, loaded: Loaded, examples: Sequence[Example],
             rendered: list[Rendered], context: str | None) -> dict[int, Any]:
    """The teacher's targets on the lessons, when `teacher_weight` is set and there is a text."""
    if settings.teacher_weight <= 0 or not context:
        return {}
    from rune_mcp.distill.teacher import teacher_context, teacher_targets

    text = teacher_context(loaded.tokenizer, context)
    taught = teacher_targets(model, loaded.tokenizer, examples, rendered, text, loaded.device)
    log.info("teacher: %d of %d examples, %d positions", len(taught), len(rendered),
             sum(len(t.positions) for t in taught.values()))
    return taught


def _load_start(model: Any, start: Path) -> None:
    """Put the LoRA weights of the PEFT folder `start` into the fresh adapter of `model`."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(start / "adapter_model.safetensors")))
    unexpected = list(getattr(result, "unexpected_keys", None) or [])
    if unexpected:
        raise TrainingError(f"the starting adapter in {start} has weights this LoRA cannot take "
                            f"({unexpected[0]}); its rank and modules must match.")


def _loop(
    settings: Settings, model: Any, loaded: Loaded, batches: list[list[Rendered]],
    out_dir: Path, progress: Progress | None, n_examples: int, checks: Sequence[Check] = (),
    taught: dict[int, Any] | None = None,
) -> TrainResult:
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: lr_factor(settings.lr_schedule, i, settings.train_steps))
    pad = int(loaded.tokenizer.pad_token_id)
    anchors = _anchor_targets(settings, model, batches, loaded.device)
    code, code_targets = _code_anchor(settings, model, loaded)
    total = settings.train_steps
    model.train()
    start = time.monotonic()
    losses: list[float] = []
    watch = Divergence()
    tokens = 0
    stopped = False
    answered: list[tuple[int, float]] = []
    best = _Best()
    rng = random.Random(settings.seed)
    for step in range(1, total + 1):
        if step > 1 and (step - 1) % len(batches) == 0:
            rng.shuffle(batches)
        batch = batches[(step - 1) % len(batches)]
        loss = _step_loss(settings, model, batch, anchors, pad, loaded.device, taught)
        if code:
            loss = loss + _code_loss(settings, model, code, code_targets, step, pad, loaded.device)
        value = float(loss.detach())
        if watch.diverged(value):
            raise _diverged(step, value)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        if not math.isfinite(norm):
            raise _diverged(step, norm, "gradient norm")
        optimizer.step()
        scheduler.step()
        losses.append(value)
        tokens += sum(len(r.input_ids) for r in batch)
        if progress:
            progress(step, total, f"step {step}/{total} loss {value:.4f}")
        if _answered(settings, model, loaded, checks, step, total, answered):
            best.offer(model, *answered[-1])
        if step < total and _stop(settings, answered, step, start):
            stopped = True
            break
    kept = best.restore(model, len(losses))
    seconds = time.monotonic() - start
    model.eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)
    trainable = sum(p.numel() for p in params)
    return TrainResult(out_dir, loaded.method, loaded.device, len(losses), losses[-1], seconds,
                       loaded.seconds, tokens, trainable, n_examples, losses, stopped, answered,
                       kept, sum(len(t.positions) for t in (taught or {}).values()))


def _stop(settings: Settings, answered: list[tuple[int, float]], step: int, start: float) -> bool:
    """Whether training ends before its last step: this step was checked and the held-out
    questions are answered well enough, or the time budget is spent."""
    if answered and answered[-1][0] == step and answered[-1][1] >= settings.answer_check_share:
        return True
    if time.monotonic() - start > settings.train_time_budget_s:
        log.warning("training stopped after %d of %d steps: time budget of %.0f s reached",
                    step, settings.train_steps, settings.train_time_budget_s)
        return True
    return False


def _answered(settings: Settings, model: Any, loaded: Loaded, checks: Sequence[Check],
              step: int, total: int, seen: list[tuple[int, float]]) -> bool:
    """Whether this step is checked (every `answer_check_every` steps, and the last step so
    the weights that would be stored are judged too); the share answered goes to `seen`."""
    every = settings.answer_check_every
    if not checks or not every or (step % every and step != total):
        return False
    share = answered_share(model, loaded.tokenizer, checks, loaded.device)
    seen.append((step, share))
    log.info("step %d: %.0f%% of %d held-out questions answered", step, share * 100, len(checks))
    return True


class _Best:
    """The LoRA weights of the checked step that answered most held-out questions.

    More steps rank the lesson higher but can say it less often (results.md, capacity and
    steps), so the stored adapter is the best checked state, not the last one. Ties keep the
    earlier step: fewer updates move the model less on everything else."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.share = -1.0
        self.weights: dict[str, Any] = {}

    def offer(self, model: Any, step: int, share: float) -> None:
        from peft import get_peft_model_state_dict

        if share > self.share:
            self.step, self.share = step, share
            self.weights = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}

    def restore(self, model: Any, last: int) -> int | None:
        """Put the best weights back when they are not the last step's; the step kept."""
        from peft import set_peft_model_state_dict

        if self.step is None or self.step == last:
            return self.step
        set_peft_model_state_dict(model, self.weights)
        log.info("kept the weights of step %d (%.0f%% answered) over step %d", self.step,
                 self.share * 100, last)
        return self.step
