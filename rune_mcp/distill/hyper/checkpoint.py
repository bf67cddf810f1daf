"""Hypernetwork checkpoints: safetensors weights, optimizer state, and a JSON index.

A checkpoint folder holds `hyper-<step>.safetensors` (the network; its header carries the
config too), `optim-<step>.safetensors` (AdamW's moments, for `--resume`) and `hyper.json`,
which names both files with their SHA-256, the config (base fingerprint, target modules,
rank, format version) and the run so far (losses, evaluations, seeds, time). Every file is
written atomically and the index last, so a crash at any moment leaves the index pointing at
the complete previous pair; files of older steps are removed only after. Only safetensors
and JSON are ever read.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.distill.hyper.network import HyperConfig, HyperNetwork
from rune_mcp.errors import TrainingError
from rune_mcp.fsutil import atomic_write_bytes, atomic_write_json, file_digest

FORMAT = "rune-hypernetwork"
INDEX = "hyper.json"


@dataclass
class Checkpoint:
    """A checkpoint's index, read and checked; the weights load on demand."""

    folder: Path
    config: HyperConfig
    step: int
    weights: str
    sha256: str  # of the weights file: what an adapter's manifest records
    optimizer: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)

    @property
    def weights_path(self) -> Path:
        return self.folder / self.weights


def default_dir(settings: Settings, fingerprint: str) -> Path:
    """Where `rune hyper train` writes and `rune remember --method hyper` looks: the
    `hypernetwork` setting, else one folder per base model inside the library's home."""
    if settings.hypernetwork is not None:
        return Path(settings.hypernetwork).expanduser()
    return settings.home / "hyper" / fingerprint[:16]


def has_checkpoint(folder: Path) -> bool:
    return (folder / INDEX).is_file()


def save_checkpoint(
    folder: Path, net: HyperNetwork, optimizer: Any, step: int, run: dict[str, Any]
) -> Checkpoint:
    """Write the network and optimizer at `step`, then the index; returns what was written."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    config = net.cfg.to_dict()
    weights = f"hyper-{step:06d}.safetensors"
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write_bytes(folder / weights, save(tensors, metadata={
        "format": FORMAT, "config": json.dumps(config, sort_keys=True)}))
    optim_file = f"optim-{step:06d}.safetensors"
    moments, extra = _flatten_optimizer(optimizer.state_dict())
    atomic_write_bytes(folder / optim_file, save(moments, metadata={"format": FORMAT}))
    sha = file_digest(folder / weights)
    optim = {"file": optim_file, "sha256": file_digest(folder / optim_file), **extra}
    atomic_write_json(folder / INDEX, {"format": FORMAT, "version": config["version"],
                                       "config": config, "step": step,
                                       "weights": {"file": weights, "sha256": sha},
                                       "optimizer": optim, "run": run})
    for old in (*folder.glob("hyper-*.safetensors"), *folder.glob("optim-*.safetensors")):
        if old.name not in (weights, optim_file):
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
    return Checkpoint(folder, net.cfg, step, weights, sha, optim, run)


def read_checkpoint(folder: Path, hint: str) -> Checkpoint:
    """The checkpoint in `folder`; a missing or damaged one is one sentence ending in `hint`
    (how to train one)."""
    index = folder / INDEX
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TrainingError(f"there is no hypernetwork at {folder}; train one with {hint}.") from None
    except (OSError, ValueError) as exc:
        raise TrainingError(f"{index} is not readable JSON ({exc}); train the hypernetwork again "
                            f"with {hint}.") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TrainingError(f"{index} is not a hypernetwork index; train one with {hint}.")
    config = HyperConfig.from_dict(dict(data.get("config") or {}), str(index))
    weights = dict(data.get("weights") or {})
    ckpt = Checkpoint(folder, config, int(data.get("step") or 0), str(weights.get("file")),
                      str(weights.get("sha256")), dict(data.get("optimizer") or {}),
                      dict(data.get("run") or {}))
    if not ckpt.weights_path.is_file() or file_digest(ckpt.weights_path) != ckpt.sha256:
        raise TrainingError(f"the hypernetwork weights {ckpt.weights_path} are missing or do not "
                            f"match {index}; train it again with {hint}.")
    return ckpt


def load_network(ckpt: Checkpoint, device: str = "cpu") -> HyperNetwork:
    from safetensors.torch import load_file

    net = HyperNetwork(ckpt.config)
    try:
        net.load_state_dict(load_file(str(ckpt.weights_path)))
    except RuntimeError as exc:  # shapes that do not fit the config: a hand-edited index
        raise TrainingError(f"{ckpt.weights_path} does not fit its config ({exc}); train the "
                            "hypernetwork again.") from exc
    return net.to(device)


def load_optimizer(ckpt: Checkpoint, optimizer: Any) -> None:
    """Restore AdamW's moments and step counts saved with `ckpt`."""
    from safetensors.torch import load_file

    path = ckpt.folder / str(ckpt.optimizer.get("file"))
    if not path.is_file() or file_digest(path) != ckpt.optimizer.get("sha256"):
        raise TrainingError(f"the optimizer state {path} is missing or damaged; start a fresh "
                            "run in another --out folder.")
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in load_file(str(path)).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = tensor
    for key, value in dict(ckpt.optimizer.get("scalars") or {}).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g)
              for g in ckpt.optimizer.get("param_groups") or []]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _flatten_optimizer(sd: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """AdamW's state dict as `{"3.exp_avg": tensor, ...}` plus its JSON-able remainder."""
    import torch

    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{name}"] = value
    groups = [dict(g, betas=list(g["betas"])) if "betas" in g else dict(g) for g in sd["param_groups"]]
    return tensors, {"scalars": scalars, "param_groups": groups}
