"""Which torch device Rune computes on: `RUNE_DEVICE` checked against what this machine has.

Training and the transformers backend both ask here, so `RUNE_DEVICE=cuda` on a machine
without a visible GPU fails the same way, with the same advice, wherever it is read.
"""

from __future__ import annotations

from rune_mcp.config import Settings
from rune_mcp.errors import ConfigError


def pick_device(settings: Settings) -> str:
    """`cuda` or `cpu`: `auto` picks CUDA when a GPU is visible; an explicit `cuda` must have one."""
    import torch

    if settings.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("RUNE_DEVICE is cuda but no CUDA GPU is visible; set it to auto or cpu.")
    if settings.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return settings.device
