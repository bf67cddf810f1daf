"""Meta-training: the network learns to write adapters by having its adapters answer lessons.

Objective, end to end: for a session, the network reads the encoder's states of its lessons
(minus the held-out paraphrases), writes an adapter, and the adapter is applied to the frozen
base (`apply.applied`); the loss is the cross-entropy of the lesson answers, the held-out
phrasings included, computed exactly as LoRA training computes it (`distill.train`), with no
session text in the prompt. Plus an L2 penalty on the generated delta W, and, with
`contrast` > 0, a hinge that asks the session's own adapter to beat a rival's on its lessons
by `margin` nats: the rival is the adapter the network writes for another session of the same
project (same seed), so writing one adapter whatever the network reads, which the plain loss
leaves as a minimum (measured: generated = mismatched to 0.1%), costs `contrast x margin`.
Before the first step the network's input standardisation is fixed from the training
sessions' states. Only the network's parameters get gradients; the base model stays frozen.

The run is deterministic per step (which session and which batch a step trains on follow
from the step number), so `--resume` continues a checkpointed run exactly where it stopped.
Evaluation seeds are generated and encoded apart and never trained on; each evaluation
reports the lesson loss of the base, the bias-only adapter, the generated adapter and the
adapter generated from another evaluation session (a mismatched control).
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from rune_mcp.config import Settings
from rune_mcp.distill.collate import Rendered
from rune_mcp.distill.hyper.apply import applied, freeze, module_dims
from rune_mcp.distill.hyper.checkpoint import (
    Checkpoint,
    has_checkpoint,
    load_network,
    load_optimizer,
    read_checkpoint,
    save_checkpoint,
)
from rune_mcp.distill.hyper.data import Session, generated_sessions
from rune_mcp.distill.hyper.encode import StateCache
from rune_mcp.distill.hyper.network import Adapter, HyperConfig, HyperNetwork, parameter_count
from rune_mcp.distill.train import (
    Divergence,
    Loaded,
    _likelihood_loss,
    make_batches,
)
from rune_mcp.errors import TrainingError, UsageError

log = logging.getLogger(__name__)
Say = Callable[[str], None]
TRAIN_HINT = "`rune hyper train --train-seeds 0-15 --eval-seeds 100-101`"


@dataclass
class MetaOptions:
    """What one `rune hyper train` run does (its flags)."""

    out: Path
    train_seeds: list[int]
    eval_seeds: list[int]
    projects: int = 2
    steps: int = 200
    learning_rate: float = 1e-3
    l2: float = 1e-2
    contrast: float = 0.0  # weight of the hinge on own-vs-rival lesson loss (0 = off)
    margin: float = 1.0  # nats the own adapter should beat the rival's by
    batch_tokens: int = 384
    sessions_per_step: int = 1
    eval_every: int = 50
    eval_sessions: int = 4
    # The network's shape: HyperConfig's defaults, so the two cannot drift apart.
    rank: int = HyperConfig.rank
    alpha: float = HyperConfig.alpha
    latent: int = HyperConfig.latent
    heads: int = HyperConfig.heads
    head_hidden: int = HyperConfig.head_hidden
    source: str = HyperConfig.source
    max_tokens: int = HyperConfig.max_tokens
    seed: int = 0
    resume: bool = False

    def check(self) -> None:
        overlap = sorted(set(self.train_seeds) & set(self.eval_seeds))
        if overlap:
            raise UsageError(f"seeds {overlap} are both training and evaluation seeds; evaluation "
                             "seeds must never be trained on, so choose disjoint sets.")
        if self.steps < 1 or self.sessions_per_step < 1 or self.eval_every < 1:
            raise UsageError("--steps, --sessions-per-step and --eval-every must be at least 1.")
        if self.contrast < 0 or self.margin < 0:
            raise UsageError("--contrast and --margin must be 0 or more (0 turns the hinge off).")


@dataclass
class MetaState:
    """The run so far; saved in every checkpoint and continued by `--resume`."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    penalties: list[float] = field(default_factory=list)
    gaps: list[float] = field(default_factory=list)  # rival loss - own loss, with --contrast
    evals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0  # training and evaluation, wall clock, summed over resumed runs
    cpu_seconds: float = 0.0  # the same in process CPU time (all threads)
    encode_seconds: float = 0.0  # generating and encoding the sessions, this run
    device: str = "cpu"
    options: dict[str, Any] = field(default_factory=dict)
    sessions: dict[str, list[str]] = field(default_factory=dict)


def make_config(opts: MetaOptions, model: Any, fingerprint: str, targets: Sequence[str]) -> HyperConfig:
    n_layers, dims = module_dims(model, targets)
    return HyperConfig(base_fingerprint=fingerprint, n_layers=n_layers,
                       hidden=int(model.config.hidden_size), targets=tuple(targets), dims=dims,
                       rank=opts.rank, alpha=opts.alpha, latent=opts.latent, heads=opts.heads,
                       head_hidden=opts.head_hidden, source=opts.source, max_tokens=opts.max_tokens)


def lesson_loss(model: Any, adapter: Adapter | None, batch: list[Rendered], pad: int) -> Any:
    """Cross-entropy of `batch`'s answers with `adapter` on the frozen base (None: the base)."""
    device = str(next(model.parameters()).device)
    with applied(model, adapter):
        return _likelihood_loss(model, batch, pad, device)


def step_batches(session: Session, step: int, n_sessions: int, batch_tokens: int) -> list[Rendered]:
    """The batch of `session`'s lessons a step trains on: batches are packed once per seed and
    name, then visited in turn (the k-th visit of a session takes its k-th batch)."""
    batches = make_batches(session.rendered, batch_tokens, hash_name(session.name))
    visit = (step - 1) // max(1, n_sessions)
    return batches[visit % len(batches)]


def hash_name(name: str) -> int:
    """A seed from a session name that, unlike `hash()`, is the same in every process."""
    return zlib.crc32(name.encode())


def schedule(step: int, n_sessions: int, per_step: int, seed: int) -> list[int]:
    """Which sessions step `step` trains on: each epoch is a seeded permutation, so the order
    is a function of the step alone (and a resumed run follows the same order)."""
    picks = []
    for k in range(per_step):
        position = (step - 1) * per_step + k
        epoch, offset = divmod(position, n_sessions)
        order = list(range(n_sessions))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        picks.append(order[offset])
    return picks


@dataclass
class StepLoss:
    """One step's figures (means over the picked sessions) and the loss to backpropagate."""

    loss: float
    penalty: float
    gap: float | None  # rival adapter's lesson loss minus the own one's; None: no hinge
    total: Any


def rival(sessions: Sequence[Session], i: int, step: int, seed: int) -> int | None:
    """Another session to contrast session `i` with at `step`: one of the same project and
    seed when there is one (the hardest case: same conventions, other lessons), else of the
    same seed, else any; chosen from the step, so a resumed run picks the same."""
    me = sessions[i]
    others = [j for j in range(len(sessions)) if j != i]
    same_seed = [j for j in others if sessions[j].seed == me.seed]
    same_project = [j for j in same_seed if project_of(sessions[j]) == project_of(me)]
    pool = same_project or same_seed or others
    if not pool:
        return None
    return random.Random(seed * 1_000_003 + step * 7_919 + i).choice(pool)


def project_of(session: Session) -> str:
    return session.name.rsplit("-", 1)[0]


def train_step(
    net: HyperNetwork, model: Any, sessions: list[Session], picks: list[int], step: int,
    opts: MetaOptions, pad: int,
) -> StepLoss:
    """Mean lesson loss, penalty and rival gap over the picked sessions, and the loss to
    backpropagate."""
    total: Any = 0.0
    loss_sum = penalty_sum = gap_sum = 0.0
    gaps = 0
    device = next(net.parameters()).device
    for i in picks:
        session = sessions[i]
        adapter = net(session.visible().to(device))
        batch = step_batches(session, step, len(sessions), opts.batch_tokens)
        loss = lesson_loss(model, adapter, batch, pad)
        penalty = adapter.penalty()
        term = loss + opts.l2 * penalty
        other = rival(sessions, i, step, opts.seed) if opts.contrast > 0 else None
        if other is not None:
            gap = lesson_loss(model, net(sessions[other].visible().to(device)), batch, pad) - loss
            term = term + opts.contrast * torch.relu(opts.margin - gap)
            gap_sum += float(gap.detach())
            gaps += 1
        total = total + term / len(picks)
        loss_sum += float(loss.detach())
        penalty_sum += float(penalty.detach())
    return StepLoss(loss_sum / len(picks), penalty_sum / len(picks),
                    gap_sum / gaps if gaps else None, total)


@torch.no_grad()
def evaluate(
    net: HyperNetwork, model: Any, sessions: list[Session], pad: int, batch_tokens: int
) -> dict[str, Any]:
    """Mean lesson loss per condition on one batch of each evaluation session, and on its
    held-out paraphrases alone: base, bias_only, generated and mismatched; and `spread`, how
    far apart the adapters written for neighbouring sessions are (`Adapter.distance`; near 0
    means the network writes one adapter whatever it reads)."""
    net.eval()
    device = next(net.parameters()).device
    rows: dict[str, list[float]] = {"base": [], "bias_only": [], "generated": [], "mismatched": []}
    held: dict[str, list[float]] = {"base": [], "bias_only": [], "generated": []}
    adapters = [net(s.visible().to(device)) for s in sessions]
    for i, session in enumerate(sessions):
        batch = make_batches(session.rendered, batch_tokens, hash_name(session.name))[0]
        other = adapters[(i + 1) % len(sessions)] if len(sessions) > 1 else None
        conditions = {"base": None, "bias_only": net.bias_only(), "generated": adapters[i],
                      "mismatched": other}
        for name, adapter in conditions.items():
            if name != "mismatched" or other is not None:
                rows[name].append(float(lesson_loss(model, adapter, batch, pad)))
        hidden = [session.rendered[j] for j in session.heldout][:4]
        if hidden:
            for name, values in held.items():
                values.append(float(lesson_loss(model, conditions[name], hidden, pad)))
    net.train()
    out: dict[str, Any] = {k: round(sum(v) / len(v), 4) for k, v in rows.items() if v}
    out["heldout"] = {k: round(sum(v) / len(v), 4) for k, v in held.items() if v}
    if len(adapters) > 1:
        gaps = [adapters[i].distance(adapters[(i + 1) % len(adapters)]) for i in range(len(adapters))]
        out["spread"] = round(sum(gaps) / len(gaps), 4)
    out["sessions"] = len(sessions)
    return out


def evaluate_checkpoint(settings: Settings, loaded: Loaded, ckpt: Checkpoint, seeds: list[int],
                        projects: int, sessions: int, say: Say = log.info) -> dict[str, Any]:
    """`evaluate` for a stored network on the sessions of any seeds: held-out seeds measure
    transfer; its own training seeds show whether it even reads the sessions it learnt from."""
    model = loaded.model
    freeze(model)
    model.eval()
    net = load_network(ckpt, loaded.device)
    cache = StateCache.of(settings.cache_dir, ckpt.config.base_fingerprint, model)
    found = generated_sessions(settings, model, loaded.tokenizer, seeds, projects,
                               ckpt.config.source, ckpt.config.max_tokens, say, sessions, cache)
    trained = set(ckpt.run.get("sessions", {}).get("train", []))
    result = evaluate(net, model, found, int(loaded.tokenizer.pad_token_id),
                      int(ckpt.run.get("options", {}).get("batch_tokens", MetaOptions.batch_tokens)))
    return {"step": ckpt.step, "seeds": seeds, **result,
            "trained_on": sum(s.name in trained for s in found)}


def _resume(opts: MetaOptions, cfg: HyperConfig, device: str) -> tuple[HyperNetwork, Checkpoint | None]:
    if not opts.resume:
        if has_checkpoint(opts.out):
            raise UsageError(f"{opts.out} already holds a hypernetwork checkpoint; pass --resume to "
                             "continue it or choose another --out folder.")
        torch.manual_seed(opts.seed)
        return HyperNetwork(cfg).to(device), None
    ckpt = read_checkpoint(opts.out, TRAIN_HINT)
    if ckpt.config != cfg:
        changed = sorted(k for k, v in cfg.to_dict().items() if ckpt.config.to_dict().get(k) != v)
        raise UsageError(f"the checkpoint in {opts.out} was made with other {', '.join(changed)}; "
                         "resume with the same flags and base model, or choose another --out.")
    return load_network(ckpt, device), ckpt


def meta_train(settings: Settings, loaded: Loaded, fingerprint: str, opts: MetaOptions,
               say: Say = log.info,
               data: tuple[list[Session], list[Session]] | None = None) -> MetaState:
    """Run (or continue) meta-training; checkpoints go to `opts.out`. Returns the run.
    `data` (training and evaluation sessions, from `encode_seeds`) saves encoding them again."""
    opts.check()
    model, tokenizer = loaded.model, loaded.tokenizer
    freeze(model)
    model.eval()  # no dropout in the base: the same adapter always means the same function
    cfg = make_config(opts, model, fingerprint, settings.target_modules)
    net, ckpt = _resume(opts, cfg, loaded.device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=opts.learning_rate, weight_decay=0.0)
    state = MetaState(device=loaded.device, options=_jsonable(opts))
    if ckpt is not None:
        load_optimizer(ckpt, optimizer)
        state = MetaState(**{**ckpt.run, "options": _jsonable(opts)})
        say(f"resuming at step {state.step} of {opts.steps}")
    say(f"hypernetwork: {parameter_count(net):,} parameters, rank {cfg.rank}, "
        f"targets {list(cfg.targets)}, {cfg.n_layers} layers, source {cfg.source}")
    encode_start = time.monotonic()
    train, evals = data or encode_seeds(settings, loaded, opts, say, fingerprint)
    state.encode_seconds = round(time.monotonic() - encode_start, 1)
    evals = evals[: opts.eval_sessions]
    if ckpt is None:  # a resumed run keeps the statistics its checkpoint was trained with
        net.set_input_stats([s.visible() for s in train])
    state.sessions = {"train": [s.name for s in train], "eval": [s.name for s in evals]}
    _loop(net, model, optimizer, train, evals, opts, int(tokenizer.pad_token_id), state, say)
    return state


def encode_seeds(settings: Settings, loaded: Loaded, opts: MetaOptions, say: Say = log.info,
                 fingerprint: str | None = None) -> tuple[list[Session], list[Session]]:
    """The training and the evaluation sessions of `opts`' seeds, encoded; with the base's
    `fingerprint`, through the on-disk `StateCache`."""
    cache = StateCache.of(settings.cache_dir, fingerprint, loaded.model) if fingerprint else None
    return (_encode(settings, loaded, opts, opts.train_seeds, "training", say, None, cache),
            _encode(settings, loaded, opts, opts.eval_seeds, "evaluation", say,
                    opts.eval_sessions, cache))


def _encode(settings: Settings, loaded: Loaded, opts: MetaOptions, seeds: list[int], what: str,
            say: Say, limit: int | None = None, cache: StateCache | None = None) -> list[Session]:
    start = time.monotonic()
    sessions = generated_sessions(settings, loaded.model, loaded.tokenizer, seeds, opts.projects,
                                  opts.source, opts.max_tokens, say, limit, cache)
    say(f"{what}: {len(sessions)} sessions of seeds {seeds} encoded in "
        f"{time.monotonic() - start:.1f} s")
    return sessions


def _loop(net: HyperNetwork, model: Any, optimizer: Any, train: list[Session],
          evals: list[Session], opts: MetaOptions, pad: int, state: MetaState, say: Say) -> None:
    net.train()
    params = [p for p in net.parameters() if p.requires_grad]
    wall, cpu = time.monotonic(), time.process_time()
    started, first = wall, state.step
    watch = Divergence(healthy=list(state.losses))
    for step in range(state.step + 1, opts.steps + 1):
        picks = schedule(step, len(train), opts.sessions_per_step, opts.seed)
        figures = train_step(net, model, train, picks, step, opts, pad)
        loss, penalty = figures.loss, figures.penalty
        if watch.diverged(loss):
            raise TrainingError(f"meta-training diverged at step {step} (loss {loss:.4g}); "
                                "lower --lr and resume from the last checkpoint.")
        optimizer.zero_grad(set_to_none=True)
        figures.total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        state.step, state.losses, state.penalties = step, [*state.losses, round(loss, 4)], \
            [*state.penalties, float(f"{penalty:.4g}")]
        gap = "" if figures.gap is None else f" gap {figures.gap:+.3f}"
        if figures.gap is not None:
            state.gaps = [*state.gaps, round(figures.gap, 4)]
        elapsed = time.monotonic() - started
        eta = elapsed / (step - first) * (opts.steps - step)
        say(f"step {step}/{opts.steps} loss {loss:.4f} penalty {penalty:.3g}{gap} "
            f"({elapsed:.0f} s, ETA {eta:.0f} s)")
        if step % opts.eval_every == 0 or step == opts.steps:
            if evals:
                result = {"step": step, **evaluate(net, model, evals, pad, opts.batch_tokens)}
                state.evals.append(result)
                say(f"eval at step {step}: {result}")
            state.seconds += time.monotonic() - wall
            state.cpu_seconds += time.process_time() - cpu
            wall, cpu = time.monotonic(), time.process_time()
            save_checkpoint(opts.out, net, optimizer, step, asdict(state))
            say(f"checkpoint at step {step} in {opts.out}")


def _jsonable(opts: MetaOptions) -> dict[str, Any]:
    data = asdict(opts)
    data["out"] = str(opts.out)
    return data
