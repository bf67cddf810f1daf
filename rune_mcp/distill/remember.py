"""Remember a session: parse -> compile lessons -> hold out self-probes -> train -> export ->
store -> index.

This is the one path every entry point (CLI, MCP tool, job worker, watcher) takes to turn a
finished session into an adapter. It is idempotent per trajectory and base model: the same
session remembered twice returns the stored adapter without training again, and adapters of
another base model are never reused. Work happens in a private temporary folder; the library
sees the adapter only once it is complete, so a failure or Ctrl+C stores nothing. A share of
the lessons' phrasings is held out of training and stored with the adapter as its self-probes
(`rune_mcp.distill.selfprobes`), the data the Evolution Operator scores compositions on.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rune_mcp.basemodel import BaseModelInfo, ensure_derived, resolve_base
from rune_mcp.config import Settings
from rune_mcp.distill.answered import Check
from rune_mcp.distill.lessons import Example, compile_lessons, summary
from rune_mcp.distill.rehearsal import rehearsal_examples
from rune_mcp.distill.selfprobes import split_self_probes, to_probes
from rune_mcp.distill.train import Loaded, TrainResult, load_base, train_adapter
from rune_mcp.errors import RuneError, TrainingError
from rune_mcp.fsutil import locked
from rune_mcp.library.selfprobes import SELF_PROBES, write_self_probes
from rune_mcp.trajectory import Trajectory

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
_LOADED: dict[tuple[str, str, str], Loaded] = {}
_LOAD_LOCK = threading.Lock()
ACTION_KINDS = frozenset({"assistant", "tool_call"})
# lora/qlora train by gradient steps; hyper writes the adapter with the hypernetwork in one
# forward pass (docs/hypernetwork.md); hyper+lora starts the gradient steps from that adapter.
METHODS = ("lora", "qlora", "hyper", "hyper+lora")


@dataclass
class RememberResult:
    """The adapter a session became (or already was)."""

    adapter_id: str
    trajectory_id: str
    lessons: int
    examples: int
    seconds: float
    final_loss: float | None
    method: str
    reused: bool
    load_seconds: float = 0.0
    train_seconds: float = 0.0
    kinds: dict[str, int] = field(default_factory=dict)
    self_probes: int = 0  # phrasings held out of training and stored with the adapter

    def to_dict(self) -> dict[str, Any]:
        return {
            "adapter_id": self.adapter_id, "trajectory_id": self.trajectory_id,
            "lessons": self.lessons, "examples": self.examples,
            "seconds": round(self.seconds, 3), "final_loss": self.final_loss,
            "method": self.method, "reused": self.reused,
            "load_seconds": round(self.load_seconds, 3),
            "train_seconds": round(self.train_seconds, 3), "kinds": self.kinds,
            "self_probes": self.self_probes,
        }


def remember_path(
    settings: Settings, path: Path, fmt: str = "auto", method: str | None = None,
    progress: Progress | None = None,
) -> RememberResult:
    """Parse (and redact) the transcript at `path`, then remember it."""
    from rune_mcp.capture import parse_path

    return remember_trajectory(settings, parse_path(Path(path), fmt), method, progress)


def remember_trajectory(
    settings: Settings, traj: Trajectory, method: str | None = None,
    progress: Progress | None = None,
) -> RememberResult:
    """Turn a (redacted) trajectory into a stored, indexed adapter; see the module docstring."""
    from rune_mcp.library import Library

    start = time.monotonic()
    method = method or default_method(settings)
    if method not in METHODS:
        raise TrainingError(f"unknown training method {method!r}; use lora, qlora, hyper or "
                            "hyper+lora.")
    info = resolve_base(settings)
    lib = Library.open(settings)
    lock = settings.home / "locks" / f"remember-{traj.id[:24]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    with locked(lock):
        existing = find_existing(lib, traj.id, info.fingerprint)
        if existing is not None:
            log.info("trajectory %s is already adapter %s", traj.id[:12], existing.adapter_id)
            return _reused(existing, traj, start)
        return _learn(settings, lib, info, traj, method, progress, start)


def default_method(settings: Settings) -> str:
    """`remember_method`, where `lora` means the `train_method` precision (lora or qlora)."""
    return settings.train_method if settings.remember_method == "lora" else settings.remember_method


def find_existing(lib: Any, trajectory_id: str, fingerprint: str) -> Any:
    """The adapter already learned from this trajectory on this base model, or None (one
    learned on another base never counts: adapters of different bases are never mixed)."""
    newest = lib.find_by_trajectory(trajectory_id)
    if newest is None or newest.base_fingerprint == fingerprint:
        return newest
    matches = [r for r in lib.list()
               if r.trajectory_id == trajectory_id and r.base_fingerprint == fingerprint]
    return matches[0] if matches else None


def _reused(record: Any, traj: Trajectory, start: float) -> RememberResult:
    training = record.manifest.get("training") or {}
    return RememberResult(
        record.adapter_id, traj.id, int(record.manifest.get("lesson_count") or 0),
        int(training.get("examples") or 0), time.monotonic() - start,
        training.get("final_loss"), record.method, True, kinds=dict(training.get("kinds") or {}),
        self_probes=int(training.get("self_probes") or 0))


def check_learnable(traj: Trajectory, examples: list[Example]) -> None:
    """Refuse sessions with nothing to learn, in one sentence, before any model loads."""
    if not any(s.kind in ACTION_KINDS for s in traj.steps):
        raise TrainingError(f"session {traj.session_id} has no assistant actions to learn "
                            "from; nothing was stored.")
    if not any(ex.kind in ("episode", "attempt", "final") for ex in examples):
        raise TrainingError(f"session {traj.session_id} has too little to learn from (no "
                            "error fixed and no working action); nothing was stored.")


def lesson_count(traj: Trajectory, examples: list[Example]) -> int:
    """Lessons are what was learned (each fixed or failed episode, plus the final working
    state); examples are the phrasings it is trained through."""
    has_final = any(ex.kind == "final" for ex in examples)
    return len(traj.episodes) + int(has_final)


def get_loaded(settings: Settings, info: BaseModelInfo, method: str) -> Loaded:
    """The base model for training, loaded once per process and method."""
    model_dir = ensure_derived(settings, info)
    key = (str(model_dir), method, settings.device)
    with _LOAD_LOCK:
        if key not in _LOADED:
            _LOADED[key] = load_base(settings, model_dir, method)
        return _LOADED[key]


def _learn(
    settings: Settings, lib: Any, info: BaseModelInfo, traj: Trajectory, method: str,
    progress: Progress | None, start: float,
) -> RememberResult:
    check_learnable(traj, compile_lessons(traj, settings))
    hyper = _hypernetwork(settings, info, method)  # a missing one is refused before loading
    if hyper is not None:
        settings = _hyper_settings(settings, hyper)
    _say(progress, "loading the base model")
    load_start = time.monotonic()
    loaded = get_loaded(settings, info, "lora" if hyper is not None else method)
    load_seconds = time.monotonic() - load_start

    def count(text: str) -> int:
        return len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    examples, held = split_self_probes(compile_lessons(traj, settings, count),
                                       settings.self_probe_share)
    lessons = list(examples)
    if settings.lessons_rehearsal and method != "hyper":
        _say(progress, "answering the rehearsal prompts with the base model (once per base)")
        examples += rehearsal_examples(settings, info.fingerprint, loaded.model, loaded.tokenizer)
    _say(progress, f"compiled {len(examples)} examples; training")
    tmp_root = settings.home / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=tmp_root, prefix="remember-"))
    try:
        with _LOAD_LOCK:  # one training at a time per process: they share the base model
            result = _train(settings, method, hyper, traj, lessons, examples, loaded, work,
                            progress, checks_of(held))
        gguf = _export(work / "peft", info, work / "adapter.gguf")
        probes = write_self_probes(work / SELF_PROBES, to_probes(held)) if held else None
        _say(progress, "storing and indexing the adapter")
        meta = _meta(settings, info, traj, examples, result, hyper)
        meta["training"]["self_probes"] = len(held)
        record = lib.add(work / "peft", gguf, meta, probes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _after_stored(settings, record)
    return RememberResult(
        record.adapter_id, traj.id, lesson_count(traj, examples), len(examples),
        time.monotonic() - start, result.final_loss, method, False, load_seconds,
        result.seconds, summary(examples), len(held))


def _after_stored(settings: Settings, record: Any) -> None:
    """Queue an evolve job for the project when `evolve_after_sessions` says it is due; a
    queue that cannot take it never fails the remembering, which is already done."""
    from rune_mcp.distill.evolvejob import enqueue_if_due

    try:
        enqueue_if_due(settings, record)
    except RuneError as exc:
        log.warning("could not queue evolving project %s: %s", record.project, exc)


def _hypernetwork(settings: Settings, info: BaseModelInfo, method: str) -> Any:
    """The hypernetwork checkpoint for `method` hyper or hyper+lora (None for the others)."""
    from rune_mcp.distill.hyper.generate import HYPER_METHODS, find_hypernetwork

    return find_hypernetwork(settings, info) if method in HYPER_METHODS else None


def _hyper_settings(settings: Settings, hyper: Any) -> Settings:
    from rune_mcp.distill.hyper.generate import adapter_settings

    return adapter_settings(settings, hyper)


def _train(
    settings: Settings, method: str, hyper: Any, traj: Trajectory, lessons: list[Example],
    examples: list[Example], loaded: Loaded, work: Path, progress: Progress | None,
    checks: Sequence[Check] = (),
) -> TrainResult:
    """Gradient steps (lora, qlora), one forward pass of the hypernetwork (hyper), or the
    forward pass as the start of the gradient steps (hyper+lora); gradient steps may stop
    once the held-out `checks` are answered (`answer_check_every`)."""
    context = _context(settings, traj)
    if hyper is None:
        return train_adapter(settings, examples, loaded, work / "peft", progress, checks=checks,
                             context=context)
    from rune_mcp.distill.hyper.generate import generate_adapter

    _say(progress, "writing the adapter with the hypernetwork")
    made = generate_adapter(hyper, loaded, traj, lessons, work / ("peft" if method == "hyper"
                                                                 else "hyper"))
    if method == "hyper":
        return TrainResult(made.peft_dir, method, loaded.device, 0, made.lesson_loss, made.seconds,
                           loaded.seconds, 0, 0, len(examples), [made.lesson_loss])
    result = train_adapter(settings, examples, loaded, work / "peft", progress, start=made.peft_dir,
                           checks=checks, context=context)
    return dataclasses.replace(result, method=method, seconds=result.seconds + made.seconds)


def _context(settings: Settings, traj: Trajectory) -> str | None:
    """The session as the teacher reads it (`teacher_weight`), as `full_context` shows it."""
    if settings.teacher_weight <= 0:
        return None
    from rune_mcp.bench.memory import trajectory_text

    return trajectory_text(traj)


def checks_of(held: Sequence[Example]) -> list[Check]:
    """The held-out phrasings as answer checks: the question, and the key spans a right
    answer holds (the self-probes' own)."""
    return [Check(p.question, tuple(p.key_spans)) for p in to_probes(held)]


def _export(peft_dir: Path, info: BaseModelInfo, out: Path) -> Path:
    from rune_mcp.distill.gguf import export_gguf

    return export_gguf(peft_dir, info, out)


def _meta(
    settings: Settings, info: BaseModelInfo, traj: Trajectory, examples: list[Example],
    result: TrainResult, hyper: Any = None,
) -> dict[str, Any]:
    from rune_mcp.library import embed_text_for

    training = result.to_dict()
    training.update({
        "kinds": summary(examples), "learning_rate": settings.learning_rate,
        "train_steps": settings.train_steps, "seed": settings.seed,
        "batch_tokens": settings.train_batch_tokens,
        "unlikelihood_weight": settings.unlikelihood_weight,
        "lessons": {"episodes": settings.lessons_episodes, "qa": settings.lessons_qa,
                    "final": settings.lessons_final, "rehearsal": settings.lessons_rehearsal},
        "self_probe_share": settings.self_probe_share,
    })
    if hyper is not None:  # which network wrote it: its weights' SHA-256 and training step
        training["hypernetwork"] = {"sha256": hyper.sha256, "step": hyper.step,
                                    "source": hyper.config.source, "version": hyper.config.version}
        if result.method == "hyper":
            training["train_steps"] = 0
    return {
        "base_fingerprint": info.fingerprint, "method": result.method,
        "rank": settings.lora_rank, "alpha": settings.lora_alpha,
        "target_modules": list(settings.target_modules), "agent": traj.agent,
        "session_id": traj.session_id, "project": traj.project, "trajectory_id": traj.id,
        "task": traj.task, "embed_text": embed_text_for(traj),
        "lesson_count": lesson_count(traj, examples), "training": training, "parents": [],
    }


def _say(progress: Progress | None, message: str) -> None:
    log.info(message)
    if progress:
        progress(0, 0, message)
