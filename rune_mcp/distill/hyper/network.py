"""The network: per-layer pooled states of a session -> LoRA A and B for every target module.

Shape of the computation (SmolLM2-135M, rank 8, o_proj + down_proj as an example):

    states [N texts, 30 layers, 576]  --standardise, Linear, + depth embedding-->  N*30 tokens
    8 learned latents (one per rank row)  --cross-attention over the tokens, self-attention,
    MLP, LayerNorm-->  z [8, d]
    z[k] + layer embedding[l] + module embedding[m]  --ONE shared head-->  A row k (<= 1536),
    B column k (<= 576) of module m in layer l

One head for every layer and module (after Text-to-LoRA and Doc-to-LoRA) keeps the network a
few million parameters where a head per module would need one per layer. B's output layer
starts at zero, so a fresh network writes delta W = 0: meta-training starts from the base
model, not from noise. A learned, input-independent bias adapter is added to what the head
writes; it absorbs what every session has in common (the lesson format), which leaves the
head to carry what this session says (and gives the bias-only control of the evaluation).

Input standardisation: the pooled states of a small base share almost everything across
texts (a few outlier features dominate; after a per-text LayerNorm only 0.1-1.4% of the
variance of SmolLM2-135M's session means differed between sessions, docs/hypernetwork.md).
Format 1 read them through that LayerNorm and wrote the same adapter for every session
(generated equalled mismatched to four decimals). So each feature of each layer is
standardised by the training sessions' own mean and spread, computed once before
meta-training (`set_input_stats`) and kept in the checkpoint as buffers: what differs
between sessions becomes what the network sees.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from rune_mcp.errors import TrainingError

FORMAT_VERSION = 2  # 2: inputs standardised by stored training statistics (was a LayerNorm)
SOURCES = ("lessons", "answers", "trajectory")  # answers: lessons pooled over their answers
STD_FLOOR = 0.01  # a feature's spread is at least this share of its layer's median spread


@dataclass(frozen=True)
class HyperConfig:
    """Everything that fixes the network's shapes, and the base model it writes adapters for."""

    base_fingerprint: str
    n_layers: int
    hidden: int  # width of the base model's hidden states (what the encoder pools)
    targets: tuple[str, ...]
    dims: tuple[tuple[int, int], ...]  # (in, out) features of each target, in `targets` order
    rank: int = 8
    alpha: float = 16.0
    latent: int = 256
    heads: int = 4
    head_hidden: int = 512
    source: str = "lessons"
    max_tokens: int = 384  # longest text the encoder reads at once
    version: int = FORMAT_VERSION

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["targets"] = list(self.targets)
        data["dims"] = [list(d) for d in self.dims]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> HyperConfig:
        if data.get("version") != FORMAT_VERSION:
            raise TrainingError(f"{where} holds a hypernetwork of format {data.get('version')!r}, "
                                f"this Rune reads format {FORMAT_VERSION}; train a new one with "
                                "`rune hyper train`.")
        try:
            values = dict(data)
            values["targets"] = tuple(str(t) for t in data["targets"])
            values["dims"] = tuple((int(a), int(b)) for a, b in data["dims"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainingError(f"{where} has an unreadable hypernetwork config ({exc}); train a "
                                "new one with `rune hyper train`.") from exc


@dataclass
class Adapter:
    """Generated LoRA weights: per module, A as [layers, r, in] and B as [layers, out, r];
    delta W of layer l is `scale * b[m][l] @ a[m][l]` (PEFT's convention)."""

    a: dict[str, Tensor]
    b: dict[str, Tensor]
    scale: float

    def penalty(self) -> Tensor:
        """Mean squared element of delta W, averaged over layers and modules, without forming
        delta W (`_inner`)."""
        total: Tensor | None = None
        for name, a in self.a.items():
            value = _inner(a, self.b[name], a, self.b[name]).mean() / (a.shape[-1] * self.b[name].shape[-2])
            total = value if total is None else total + value
        assert total is not None  # a config always has at least one target
        return total * self.scale**2 / len(self.a)

    def distance(self, other: Adapter) -> float:
        """How far apart two adapters' delta W are, relative to this one's: ||dW - dW'|| /
        ||dW|| over every layer and module (0 when the same, e.g. a network that ignores its
        input)."""
        def dot(x: Adapter, y: Adapter) -> float:
            return sum(float(_inner(a, x.b[n], y.a[n], y.b[n]).sum()) for n, a in x.a.items()) \
                * x.scale * y.scale

        own = dot(self, self)
        apart = own + dot(other, other) - 2.0 * dot(self, other)
        return math.sqrt(max(apart, 0.0) / own) if own > 0 else 0.0


def _inner(a: Tensor, b: Tensor, a2: Tensor, b2: Tensor) -> Tensor:
    """<B A, B2 A2> per layer ([layers, r, in] and [layers, out, r] each) through the r x r
    Gram matrices, sum((B^T B2) * (A A2^T)), so no [out, in] delta W is ever formed."""
    return (torch.einsum("lor,los->lrs", b, b2) * torch.einsum("lri,lsi->lrs", a, a2)).sum(dim=(1, 2))


class _Pool(nn.Module):
    """Perceiver-style pooling: learned latents attend over the session's tokens."""

    def __init__(self, cfg: HyperConfig) -> None:
        super().__init__()
        d = cfg.latent
        self.latents = nn.Parameter(torch.randn(cfg.rank, d) * 0.02)
        self.norm_q, self.norm_kv, self.norm_self = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.cross = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.self_attn = nn.MultiheadAttention(d, cfg.heads, batch_first=True)
        self.mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.norm_out = nn.LayerNorm(d)

    def forward(self, tokens: Tensor) -> Tensor:
        """[T, d] tokens -> [rank, d] latents."""
        kv = self.norm_kv(tokens).unsqueeze(0)
        z = self.latents.unsqueeze(0)
        z = z + self.cross(self.norm_q(z), kv, kv, need_weights=False)[0]
        s = self.norm_self(z)
        z = z + self.self_attn(s, s, s, need_weights=False)[0]
        z = z + self.mlp(z)
        out: Tensor = self.norm_out(z).squeeze(0)
        return out


class HyperNetwork(nn.Module):
    """Pooled states -> `Adapter`; see the module docstring."""

    in_mean: Tensor  # buffers: declared so that type checkers see tensors, not modules
    in_scale: Tensor

    def __init__(self, cfg: HyperConfig) -> None:
        super().__init__()
        if cfg.source not in SOURCES:
            raise TrainingError(f"hypernetwork source {cfg.source!r} is unknown; use one of {SOURCES}.")
        self.cfg = cfg
        d = cfg.latent
        self.max_in = max(i for i, _ in cfg.dims)
        self.max_out = max(o for _, o in cfg.dims)
        # Identity until `set_input_stats`; persistent buffers, so checkpoints carry them.
        self.register_buffer("in_mean", torch.zeros(cfg.n_layers, cfg.hidden))
        self.register_buffer("in_scale", torch.ones(cfg.n_layers, cfg.hidden))
        self.proj = nn.Linear(cfg.hidden, d)
        # Which base layer a pooled state came from: deep and shallow states mean different things.
        self.depth = nn.Parameter(torch.randn(cfg.n_layers, d) * 0.02)
        self.pool = _Pool(cfg)
        self.layer_emb = nn.Embedding(cfg.n_layers, d)
        self.module_emb = nn.Embedding(len(cfg.targets), d)
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.head_hidden), nn.GELU())
        self.out_a = nn.Linear(cfg.head_hidden, self.max_in)
        self.out_b = nn.Linear(cfg.head_hidden, self.max_out)
        # Adam moves every weight by about the learning rate, and an output sums head_hidden
        # of them coherently: without this 1/head_hidden multiplier one step at lr 1e-3 moved
        # B by ~0.25 per element and the first real run diverged at step 3
        # (docs/hypernetwork.md). With it, A and B move about as fast as LoRA's own weights.
        self.gain = 1.0 / cfg.head_hidden
        self.bias_a = nn.ParameterDict()
        self.bias_b = nn.ParameterDict()
        for name, (n_in, n_out) in zip(cfg.targets, cfg.dims, strict=True):
            bound = 1.0 / math.sqrt(n_in)  # PEFT's LoRA A scale (kaiming uniform, a=sqrt(5))
            self.bias_a[name] = nn.Parameter(torch.empty(cfg.n_layers, cfg.rank, n_in)
                                             .uniform_(-bound, bound))
            self.bias_b[name] = nn.Parameter(torch.zeros(cfg.n_layers, n_out, cfg.rank))
        self._init_outputs()

    def _init_outputs(self) -> None:
        # A entries about as large as a fresh LoRA A's (~0.5 / sqrt(in), through the gain);
        # B exactly zero, so the generated delta W starts at zero whatever the session says.
        nn.init.normal_(self.out_a.weight, std=math.sqrt(self.cfg.head_hidden / self.max_in))
        nn.init.zeros_(self.out_a.bias)
        nn.init.zeros_(self.out_b.weight)
        nn.init.zeros_(self.out_b.bias)

    def forward(self, states: Tensor) -> Adapter:
        """[N texts, layers, hidden] pooled states of one session -> its adapter."""
        cfg = self.cfg
        if states.dim() != 3 or states.shape[1:] != (cfg.n_layers, cfg.hidden) or not len(states):
            raise TrainingError(f"the hypernetwork reads [texts, {cfg.n_layers}, {cfg.hidden}] "
                                f"states, not {list(states.shape)}; encode with the same base model.")
        tokens = self.proj(self.standardise(states)) + self.depth.unsqueeze(0)
        z = self.pool(tokens.reshape(-1, cfg.latent))  # [rank, d]
        h = (z[None, None] + self.layer_emb.weight[:, None, None]
             + self.module_emb.weight[None, :, None])  # [layers, modules, rank, d]
        h = self.head(h)
        rows_a, cols_b = self.out_a(h) * self.gain, self.out_b(h) * self.gain
        return self._assemble(rows_a, cols_b)

    def set_input_stats(self, states: Sequence[Tensor]) -> None:
        """Fix the standardisation from the training sessions' states ([texts, layers,
        hidden] each): every text counts once, whichever session it came from."""
        rows = torch.cat([s.detach().float().cpu() for s in states])
        if len(rows) < 2:
            raise TrainingError("meta-training needs at least two encoded texts to standardise "
                                "the network's input; train on more seeds.")
        mean, std = rows.mean(0), rows.std(0)
        floor = STD_FLOOR * std.median(dim=-1, keepdim=True).values.clamp(min=1e-6)
        self.in_mean.copy_(mean.to(self.in_mean.device))
        self.in_scale.copy_((1.0 / torch.maximum(std, floor)).to(self.in_scale.device))

    def standardise(self, states: Tensor) -> Tensor:
        return (states.float() - self.in_mean) * self.in_scale

    def _assemble(self, rows_a: Tensor | None, cols_b: Tensor | None) -> Adapter:
        a: dict[str, Tensor] = {}
        b: dict[str, Tensor] = {}
        for j, (name, (n_in, n_out)) in enumerate(zip(self.cfg.targets, self.cfg.dims, strict=True)):
            a[name] = self.bias_a[name] + (0 if rows_a is None else rows_a[:, j, :, :n_in])
            b[name] = self.bias_b[name] + (0 if cols_b is None
                                           else cols_b[:, j, :, :n_out].transpose(-1, -2))
        return Adapter(a, b, self.cfg.scale)

    def bias_only(self) -> Adapter:
        """The input-independent part alone: the control that shows whether the head reads
        the session at all."""
        return self._assemble(None, None)


def parameter_count(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
