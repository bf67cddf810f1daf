"""`rune demo`: the main job on the embedded default model, end to end, on this machine."""

from __future__ import annotations

import sys
import time

from rune_mcp.basemodel import resolve_base
from rune_mcp.config import Settings
from rune_mcp.doctor import run_checks
from rune_mcp.errors import ModelError

QUESTION = "Write a Python function `is_palindrome(s: str) -> bool` that ignores case."


def _step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def run_demo(settings: Settings) -> int:
    _step("Checking the environment")
    broken = [c for c in run_checks(settings) if c.required and not c.ok]
    for c in broken:
        print(f"  {c.name}: {c.detail} ({c.fix})")
    if broken:
        return 1
    print("  all required checks pass")

    _step("Loading the base model through llama.cpp")
    info = resolve_base(settings)
    from rune_mcp.runtime.ggml import open_llama

    start = time.monotonic()
    try:
        llm = open_llama(str(info.path), n_ctx=2048, n_threads=settings.threads,
                    seed=settings.seed, verbose=False)
    except Exception as exc:
        raise ModelError(f"llama.cpp could not load {info.path} ({exc}).") from exc
    print(f"  {info.name}: loaded in {time.monotonic() - start:.2f} s")

    _step("Asking a coding question")
    print(f"  > {QUESTION}")
    start = time.monotonic()
    out = llm.create_chat_completion(
        messages=[{"role": "user", "content": QUESTION}], max_tokens=200, temperature=0.0
    )
    seconds = time.monotonic() - start
    text = str(out["choices"][0]["message"]["content"] or "").strip()
    print("\n".join("  " + line for line in text.splitlines()))
    tokens = int(out["usage"]["completion_tokens"])
    print(f"\n  {tokens} tokens in {seconds:.2f} s ({tokens / max(seconds, 1e-9):.0f} tokens/s)",
          file=sys.stderr)
    return remember_demo(settings)


def remember_demo(settings: Settings) -> int:
    """Parse the bundled sample session, remember it, and show the probe scores before and
    after. It runs in a temporary library so the demo never touches the user's own."""
    import tempfile
    from pathlib import Path

    from rune_mcp.basemodel import ensure_derived
    from rune_mcp.capture import parse_path
    from rune_mcp.distill.probes import load_probes, sample_paths, score
    from rune_mcp.distill.remember import get_loaded, remember_trajectory
    from rune_mcp.library import Library

    session, probes_file = sample_paths()
    _step("Parsing a sample session (a fictional project, two quirks learned through errors)")
    traj = parse_path(session)
    print(f"  {session.name}: project {traj.project_name}, {len(traj.steps)} steps, "
          f"{len(traj.episodes)} error -> fix episodes")
    probes = load_probes(probes_file)
    _step("Scoring probes on the base model (mean log-probability per token; rank 1 = the "
          "model's first choice)")
    info = resolve_base(settings)
    ensure_derived(settings, info)
    loaded = get_loaded(settings, info, "lora")
    before = score(loaded.model, loaded.tokenizer, probes)
    with tempfile.TemporaryDirectory(prefix="rune-demo-") as home:
        local = settings.with_overrides(home=Path(home))
        _step("Remembering the session (compile lessons -> LoRA -> GGUF -> library)")
        result = remember_trajectory(local, traj, progress=_demo_progress)
        print(f"  adapter {result.adapter_id[:16]}: {result.lessons} lessons, "
              f"{result.examples} examples, final loss {result.final_loss:.3f}, "
              f"{result.seconds:.0f} s")
        from peft import PeftModel

        record = Library.open(local).get(result.adapter_id)
        adapted = PeftModel.from_pretrained(loaded.model, str(record.peft_dir))
        after = score(adapted, loaded.tokenizer, probes)
        answer_demo(local)
    _step("Probe scores before -> after")
    for probe, b, a in zip(probes.probes, before, after, strict=True):
        print(f"  {probe.id:13} correct `{probe.correct}`: {b.correct:7.2f} -> {a.correct:7.2f}"
              f"   rank {b.rank} -> {a.rank} of {len(probe.choices)}")
    return 0


NEW_TASK = ("In the tidewater project, write a function that returns the highest water level "
            "of a station over the last 6 hours.")
# what shows the lesson in an answer, and what shows the habit it replaced (the rule of
# `rune bench memory`'s free answers: a right key and no wrong one)
LESSON_KEYS = ("read_window(",)
HABIT_KEYS = ("gauges.fetch(",)


def answer_demo(settings: Settings) -> None:
    """Answer a task the session never saw, without memory and with the recalled adapter
    (through the runtime: llama.cpp on CPU, the adapter's GGUF swapped onto the base)."""
    from rune_mcp.bench.answers import RIGHT, judge
    from rune_mcp.runtime.run import run_with_memory

    _step("Answering a new task without memory, then with it")
    print(f"  > {NEW_TASK}")
    for label, adapter in (("without memory", "none"), ("with memory", "auto")):
        result = run_with_memory(settings, NEW_TASK, adapter=adapter, max_tokens=120)
        used = (f"adapter {result.adapter_id[:12]}, similarity {result.similarity:.2f}"
                if result.adapter_id and result.similarity is not None else "base model only")
        print(f"\n  -- {label} ({used}; swap {result.timings.get('swap', 0):.2f} ms, "
              f"{result.timings.get('tokens_per_s', 0):.0f} tokens/s)")
        print("\n".join("  " + line for line in result.text.strip().splitlines()))
        verdict = judge(result.text, LESSON_KEYS, HABIT_KEYS)
        print(f"  -> names the lesson ({LESSON_KEYS[0]}...): "
              f"{'yes' if verdict.verdict == RIGHT else 'no'}")


def _demo_progress(step: int, total: int, message: str) -> None:
    if not total or step == total or step % 5 == 0:
        print(f"  {message}", file=sys.stderr, flush=True)
