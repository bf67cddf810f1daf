"""A generated adapter acting on the frozen base model, without PEFT and without copies.

Meta-training needs gradients to flow from the lesson loss into the generated weights, so the
adapter cannot be a set of PEFT parameters loaded into the model. A forward hook on each
target Linear adds `scale * B(A(x))` to its output, exactly what a PEFT LoRA layer computes
(no dropout), with A and B the network's output tensors: autograd does the rest. The base
model's own weights are never touched, and the hooks come out when the block ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from rune_mcp.distill.hyper.network import Adapter
from rune_mcp.errors import TrainingError

# The same module names gguf.py's tensor names are read from.
_TARGET = re.compile(r"(?:^|\.)layers\.(?P<layer>\d+)\.(?:self_attn|mlp)\.(?P<module>\w+)$")


def target_layers(model: Any, targets: Sequence[str]) -> dict[tuple[int, str], tuple[str, nn.Linear]]:
    """(layer, module) -> (full module name, Linear) for every target of every layer:
    `{(0, "o_proj"): ("model.layers.0.self_attn.o_proj", Linear(576, 576)), ...}`."""
    found: dict[tuple[int, str], tuple[str, nn.Linear]] = {}
    for name, module in model.named_modules():
        match = _TARGET.search(name)
        if match and match["module"] in targets and isinstance(module, nn.Linear):
            found[(int(match["layer"]), match["module"])] = (name, module)
    layers = {layer for layer, _ in found}
    missing = [t for t in targets if not any(m == t for _, m in found)]
    if not found or missing or len(found) != len(layers) * len(targets):
        raise TrainingError(f"the base model has no linear layers {missing or list(targets)} in "
                            "every block; set target_modules to linear layers of the base model.")
    return found


def module_dims(model: Any, targets: Sequence[str]) -> tuple[int, tuple[tuple[int, int], ...]]:
    """Number of layers and (in, out) features of each target, as the network needs them."""
    found = target_layers(model, targets)
    n_layers = 1 + max(layer for layer, _ in found)
    dims = tuple((found[(0, t)][1].in_features, found[(0, t)][1].out_features) for t in targets)
    return n_layers, dims


def _hook(a: Tensor, b: Tensor, scale: float) -> Any:
    def add_lora(module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
        x = args[0]
        delta = torch.nn.functional.linear(torch.nn.functional.linear(x, a.to(x.dtype)), b.to(x.dtype))
        return output + delta * scale

    return add_lora


@contextmanager
def applied(model: Any, adapter: Adapter | None) -> Iterator[None]:
    """Run `model` with `adapter` added to its target layers for the block (None: the base)."""
    if adapter is None:
        yield
        return
    layers = target_layers(model, list(adapter.a))
    handles = []
    try:
        for (layer, name), (_, linear) in layers.items():
            hook = _hook(adapter.a[name][layer], adapter.b[name][layer], adapter.scale)
            handles.append(linear.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def freeze(model: Any) -> None:
    """The base model never learns here: only the network does."""
    for param in model.parameters():
        param.requires_grad_(False)
