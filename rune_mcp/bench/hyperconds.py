"""The hypernetwork conditions of `rune bench memory`: adapters written in one forward pass.

Not in the default set (`--conditions` names them), and each needs a hypernetwork checkpoint
(`--hypernetwork DIR`, else the `hypernetwork` setting, else `RUNE_HOME/hyper/<fingerprint>`
of the user's home, where `rune hyper train` writes by default):

- `generated_adapter`: the source session's adapter written by the hypernetwork, remembered as
  `rune remember --method hyper` remembers it;
- `hyper_lora_5`, `hyper_lora_10`: that adapter followed by 5 or 10 gradient steps (method
  `hyper+lora` at `train_steps` 5 or 10);
- `generated_mismatched`: the generated adapter of the session `mismatched_adapter` chooses
  (another project's): it must not help;
- `bias_only`: the network's input-independent bias adapter alone, the same for every probe:
  what the network writes whatever it reads;
- `multitask_lora`: one LoRA trained by ordinary gradient steps on the lessons of all the
  network's training sessions together (regenerated from the seeds its checkpoint records),
  with the network's rank and targets, as many optimizer steps as the network was trained
  for and as many lesson tokens per step: the same data and budget spent on one adapter.

A control probe (no source session) is answered by the base under `generated_adapter` and
`hyper_lora_*` (as under `oracle_adapter`), by the adapter `mismatched_adapter` gives it
under `generated_mismatched`, and by the one adapter under `bias_only` and `multitask_lora`.
Each session is remembered for each method in a library of its own beside the run's (the
same session remembered twice in one library returns the adapter stored first), then copied
into the run's library. Like the compositions, the adapters are made the first time a
condition needs them, after every other condition is scored: indexed in the run's library,
they would change what `recalled_adapter` and `rag` retrieve.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rune_mcp.config import Settings
from rune_mcp.errors import RuneError, UsageError

if TYPE_CHECKING:
    from rune_mcp.distill.hyper.checkpoint import Checkpoint
    from rune_mcp.trajectory import Trajectory

HYPER_CONDITIONS = ("generated_adapter", "hyper_lora_5", "hyper_lora_10", "generated_mismatched",
                    "bias_only", "multitask_lora")
# condition -> (remember method, train_steps): the conditions made by remembering each session
REMEMBERED: dict[str, tuple[str, int | None]] = {
    "generated_adapter": ("hyper", None),
    "hyper_lora_5": ("hyper+lora", 5),
    "hyper_lora_10": ("hyper+lora", 10),
}


def find_checkpoint(settings: Settings, conditions: Sequence[str],
                    folder: Path | None = None) -> Checkpoint:
    """The hypernetwork the named hypernetwork conditions use, checked against the base model
    and target modules, or one sentence why there is none; before anything trains."""
    from rune_mcp.basemodel import resolve_base
    from rune_mcp.distill.hyper.checkpoint import default_dir, has_checkpoint
    from rune_mcp.distill.hyper.generate import find_hypernetwork
    from rune_mcp.distill.hyper.train import TRAIN_HINT

    info = resolve_base(settings)
    chosen = folder or settings.hypernetwork
    if chosen is None and has_checkpoint(default_dir(settings, info.fingerprint)):
        chosen = default_dir(settings, info.fingerprint)
    if chosen is None:
        named = f"conditions {', '.join(conditions)} need" if len(conditions) > 1 else \
            f"condition {conditions[0]} needs"
        raise UsageError(f"the {named} a hypernetwork checkpoint, and none is set; pass "
                         "--hypernetwork DIR or set the hypernetwork setting (train one with "
                         f"{TRAIN_HINT}).")
    try:
        ckpt = find_hypernetwork(settings, info, Path(chosen).expanduser())
    except RuneError as exc:  # the same sentence, as a usage error: nothing has run yet
        raise UsageError(str(exc)) from exc
    if "multitask_lora" in conditions and not training_record(ckpt):
        raise UsageError(f"the multitask_lora condition trains on the hypernetwork's training "
                         f"sessions, and the checkpoint at {ckpt.folder} records no training "
                         "seeds and session names in its hyper.json to regenerate them from; "
                         "leave multitask_lora out.")
    return ckpt


def training_record(ckpt: Checkpoint) -> tuple[list[int], int, set[str]] | None:
    """(training seeds, projects per seed, session names) as the checkpoint's run records
    them, or None where it does not (a checkpoint not written by `rune hyper train`)."""
    options = ckpt.run.get("options") or {}
    names = (ckpt.run.get("sessions") or {}).get("train") or []
    seeds, projects = options.get("train_seeds"), options.get("projects")
    if not seeds or not projects or not names:
        return None
    return [int(s) for s in seeds], int(projects), {str(n) for n in names}


def training_trajectories(settings: Settings, ckpt: Checkpoint) -> dict[str, Trajectory]:
    """The network's training sessions, generated again from the seeds it records (the
    generator is deterministic per seed and project count) and parsed as training parsed
    them: `{"3/yarspire-01": trajectory, ...}`, only the sessions it trained on."""
    from rune_mcp.capture import parse_path
    from rune_mcp.distill.hyper.data import seed_session_files

    record = training_record(ckpt)
    if record is None:
        return {}
    seeds, projects, names = record
    out: dict[str, Trajectory] = {}
    for seed in seeds:
        with seed_session_files(settings, seed, projects) as paths:
            for path in paths:
                if f"{seed}/{path.stem}" in names:
                    out[f"{seed}/{path.stem}"] = parse_path(path)
    return out


class HyperAdapters:
    """What each hypernetwork condition applies to a probe, built once per run.

    `sessions` maps each remembered session's name to its trajectory, in session order."""

    def __init__(self, settings: Settings, lib: Any, ckpt: Checkpoint,
                 sessions: dict[str, Trajectory], say: Callable[[str], None]) -> None:
        self.settings, self.lib, self.ckpt, self.say = settings, lib, ckpt, say
        self.sessions = dict(sessions)
        self._remembered: dict[str, dict[str, str]] = {}  # condition -> session -> adapter id
        self._steps: dict[str, list[int]] = {}  # condition -> gradient steps each adapter took
        self._seconds: dict[str, float] = {}
        self._bias: str | None = None
        self._multitask: dict[str, Any] | None = None
        self._training: dict[str, Trajectory] | None = None
        self._trained_on: list[str] | None = None

    def adapter(self, condition: str, source: str | None, mismatched: str | None) -> str | None:
        """The adapter id `condition` answers a probe with: `source` is the probe's source
        session, `mismatched` the session whose adapter `mismatched_adapter` gives it."""
        if condition in REMEMBERED:
            return None if source is None else self.remembered(condition)[source]
        if condition == "generated_mismatched":
            return None if mismatched is None else self.remembered("generated_adapter")[mismatched]
        if condition == "bias_only":
            return self.bias()
        if condition == "multitask_lora":
            return str(self.multitask()["adapter_id"])
        raise UsageError(f"{condition} is not a hypernetwork condition; choose among "
                         f"{', '.join(HYPER_CONDITIONS)}.")

    # --- the adapters, made on first use ----------------------------------------------------

    def remembered(self, condition: str) -> dict[str, str]:
        """Every session's adapter remembered by `condition`'s method, in the run's library."""
        if condition not in self._remembered:
            self._remembered[condition] = self._remember(condition)
        return self._remembered[condition]

    def _remember(self, condition: str) -> dict[str, str]:
        from rune_mcp.distill.remember import remember_trajectory
        from rune_mcp.library import Library
        from rune_mcp.library.archive import meta_of

        method, steps = REMEMBERED[condition]
        side = self.settings.with_overrides(
            home=self.settings.home.parent / f"hyper-{condition}", remember_method=method,
            hypernetwork=self.ckpt.folder, **({"train_steps": steps} if steps else {}))
        start = time.perf_counter()
        out: dict[str, str] = {}
        for name, traj in self.sessions.items():
            stored = Library.open(side).get(remember_trajectory(side, traj, method).adapter_id)
            # the run's library holds it too: scoring, free answers and the guard read that one
            out[name] = self.lib.add(stored.peft_dir, stored.gguf_path,
                                     meta_of(stored.manifest)).adapter_id
            self._steps.setdefault(condition, []).append(
                int((stored.manifest.get("training") or {}).get("steps") or 0))
        self._seconds[condition] = round(time.perf_counter() - start, 1)
        self.say(f"{condition}: {len(out)} adapters remembered with method {method}"
                 + (f" at {steps} steps" if steps else "") + f" ({self._seconds[condition]} s)")
        return out

    def bias(self) -> str:
        """The network's bias adapter as a stored adapter (written on first use)."""
        if self._bias is None:
            self._bias = self._write_bias()
        return self._bias

    def _write_bias(self) -> str:
        from rune_mcp.distill.hyper.checkpoint import load_network
        from rune_mcp.distill.hyper.generate import write_peft

        cfg = self.ckpt.config
        loaded = self._loaded()
        with tempfile.TemporaryDirectory(dir=self._tmp(), prefix="hyper-bias-") as tmp:
            net = load_network(self.ckpt, loaded.device).eval()
            peft = write_peft(Path(tmp) / "peft", net.bias_only(), loaded.model, cfg.rank, cfg.alpha)
            task = "the hypernetwork's input-independent bias adapter"
            adapter_id = self._store(peft, Path(tmp), {
                "method": "hyper", "task": task, "lesson_count": 0,
                "training": {"steps": 0, "bias_only": True, "hypernetwork": self._network()}})
        self.say(f"bias_only: the network's bias adapter {adapter_id[:12]}")
        return adapter_id

    def multitask(self) -> dict[str, Any]:
        """The multi-task LoRA of the network's training sessions (trained on first use)."""
        if self._multitask is None:
            self._multitask = self._train_multitask()
        return self._multitask

    def _train_multitask(self) -> dict[str, Any]:
        from rune_mcp.distill.hyper.generate import adapter_settings
        from rune_mcp.distill.lessons import compile_lessons
        from rune_mcp.distill.rehearsal import rehearsal_examples
        from rune_mcp.distill.train import train_adapter

        loaded = self._loaded()
        trajectories = self.training()
        options = self.ckpt.run.get("options") or {}
        per_step = int(options.get("sessions_per_step") or 1)
        # the network's budget: its optimizer steps, each of per_step sessions' batches
        local = adapter_settings(self.settings, self.ckpt).with_overrides(
            train_steps=max(1, self.ckpt.step),
            train_batch_tokens=int(options.get("batch_tokens") or 384) * per_step)

        def count(text: str) -> int:
            return len(loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

        examples = [ex for traj in trajectories.values()
                    for ex in compile_lessons(traj, local, count)]
        lessons = len(examples)
        if local.lessons_rehearsal:  # as `rune remember` trains any LoRA
            examples += rehearsal_examples(local, self._fingerprint(), loaded.model,
                                           loaded.tokenizer)
        with tempfile.TemporaryDirectory(dir=self._tmp(), prefix="hyper-multitask-") as tmp:
            result = train_adapter(local, examples, loaded, Path(tmp) / "peft")
            task = f"one LoRA on the lessons of the hypernetwork's {len(trajectories)} training sessions"
            training = {**result.to_dict(), "hypernetwork": self._network(),
                        "sessions": len(trajectories), "planned_steps": local.train_steps,
                        "batch_tokens": local.train_batch_tokens}
            adapter_id = self._store(result.peft_dir, Path(tmp), {
                "method": "lora", "task": task, "lesson_count": lessons,
                "training": training})
        self.say(f"multitask_lora: {adapter_id[:12]}, {result.steps} of {local.train_steps} steps "
                 f"on {lessons} lessons of {len(trajectories)} sessions ({result.seconds:.0f} s)")
        return {"adapter_id": adapter_id, "sessions": len(trajectories), "lessons": lessons,
                "examples": len(examples), "steps": result.steps,
                "planned_steps": local.train_steps, "batch_tokens": local.train_batch_tokens,
                "final_loss": result.final_loss, "seconds": round(result.seconds, 1)}

    def training(self) -> dict[str, Trajectory]:
        """The network's training sessions (generated again once)."""
        if self._training is None:
            self._training = training_trajectories(self.settings, self.ckpt)
        return self._training

    def check_training(self) -> list[str] | None:
        """The run's sessions the network was trained on (a benchmark of those measures how
        well it recalls its training data, not how it generalises), said when there are any;
        None where the checkpoint does not record its training sessions."""
        if training_record(self.ckpt) is None:
            self.say("the hypernetwork's checkpoint records no training sessions; whether it "
                     "was trained on this run's sessions is unknown")
            return None
        seen = {traj.id for traj in self.training().values()}
        self._trained_on = [name for name, traj in self.sessions.items() if traj.id in seen]
        if self._trained_on:
            self.say(f"warning: the hypernetwork was trained on {len(self._trained_on)} of this "
                     f"run's {len(self.sessions)} sessions ({', '.join(self._trained_on)}); "
                     "benchmark it on a dataset seed it was not trained on")
        return self._trained_on

    # --- storing ---------------------------------------------------------------------------

    def _store(self, peft: Path, work: Path, meta: dict[str, Any]) -> str:
        """Export `peft` to GGUF and store it in the run's library (no project, no session)."""
        from rune_mcp.basemodel import resolve_base
        from rune_mcp.distill.gguf import export_gguf

        cfg = self.ckpt.config
        gguf = export_gguf(peft, resolve_base(self.settings), work / "adapter.gguf")
        full = {"base_fingerprint": self._fingerprint(), "rank": cfg.rank, "alpha": cfg.alpha,
                "target_modules": list(cfg.targets), "embed_text": meta["task"], "parents": [],
                **meta}
        return str(self.lib.add(peft, gguf, full).adapter_id)

    def _network(self) -> dict[str, Any]:
        """Which network wrote an adapter, as `rune remember` records it."""
        return {"sha256": self.ckpt.sha256, "step": self.ckpt.step,
                "source": self.ckpt.config.source, "version": self.ckpt.config.version}

    def _loaded(self) -> Any:
        from rune_mcp.basemodel import resolve_base
        from rune_mcp.distill.remember import get_loaded

        return get_loaded(self.settings, resolve_base(self.settings), "lora")

    def _fingerprint(self) -> str:
        return self.ckpt.config.base_fingerprint

    def _tmp(self) -> Path:
        root = self.settings.home / "tmp"
        root.mkdir(parents=True, exist_ok=True)
        return root

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint and what each condition made in this run."""
        out: dict[str, Any] = {
            "folder": str(self.ckpt.folder), **self._network(), "rank": self.ckpt.config.rank,
            "alpha": self.ckpt.config.alpha, "targets": list(self.ckpt.config.targets),
            "trained_on": self._trained_on,
        }
        for condition, ids in self._remembered.items():
            out[condition] = {"adapters": ids, "steps": self._steps.get(condition, []),
                              "seconds": self._seconds.get(condition)}
        if self._bias is not None:
            out["bias_only"] = {"adapter_id": self._bias}
        if self._multitask is not None:
            out["multitask_lora"] = self._multitask
        return out
