"""`rune bench cold`: how long `rune run`, `rune recall` and `rune hook` take as new processes.

A one-shot command or an agent's hook pays for every import and every model it sets up, on
every call; this measures exactly that. It builds a throw-away RUNE_HOME with a small library
(`--adapters`, default 6): one real llama.cpp LoRA of the configured base model (seeded random
weights on `o_proj`, written as a PEFT folder and exported by Rune's own GGUF exporter), stored
under that many different tasks, so `rune run` recalls one and applies it. Then it times whole
subprocesses, one round after another, each round running the three commands once:

- `rune run PROMPT --max-tokens 20 --json`, whose task matches one stored adapter;
- `rune recall TASK --json`;
- `rune hook claude-code` with a `Stop` event for a transcript in an allowed folder. The
  library's job worker runs, asleep, in a thread of this process (the queued jobs wait a
  day), so the hook queues its job and, finding a live worker, starts none: a new worker
  would load its modules in the background and slow the figures after it.

By default the commands use a new, empty cache folder, so the first round is a first run
ever: it exports the ONNX query encoder and remembers the base model's digest and metadata.
It is reported apart; min and median are over the later rounds, and the median is checked
against the targets. `--shared-cache` uses the configured cache folder instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings

TARGETS_S = {"run": 3.0, "recall": 1.5, "hook": 0.3}
TASKS = [
    "fix the login redirect loop in the api",
    "add a csv export to the admin page",
    "speed up the database connection pool under load",
    "debug the websocket reconnect in the worker",
    "write tests for the rate limiter",
    "document the config loader and its environment variables",
    "resize thumbnails without blurring them",
    "retry failed payment webhooks with backoff",
]
QUERY = "users get stuck in a redirect loop after logging in to the api"
RUN_TOKENS = 20
RANK = 8
JOB_DELAY_S = 86_400.0  # queued jobs wait a day: the bench's sleeping worker never trains
# Settings the timed commands must share with this process; the rest stay at their defaults.
CARRIED = ("base_model", "embedder", "backend", "device", "threads", "context_size")


def register(sub: Any) -> None:
    p = sub.add_parser("cold", help="time `rune run`, `rune recall` and `rune hook` as new processes")
    p.add_argument("--repeat", type=int, default=5,
                   help="timed rounds after the first (default 5)")
    p.add_argument("--adapters", type=int, default=6, help="adapters in the library (default 6)")
    p.add_argument("--shared-cache", action="store_true",
                   help="use the configured cache folder instead of a new, empty one")
    p.add_argument("--commands", default=",".join(TARGETS_S),
                   help="which of run, recall, hook to time (comma-separated; default all)")
    p.add_argument("--json", nargs="?", const="-", metavar="OUT",
                   help="write JSON to OUT (stdout when OUT is omitted)")
    p.set_defaults(func=run)


def build_library(settings: Settings, home: Path, adapters: int) -> dict[str, Any]:
    """A library of `adapters` records of one real LoRA of the base, under different tasks."""
    from rune_mcp.basemodel import resolve_base
    from rune_mcp.distill.gguf import export_gguf
    from rune_mcp.library import Library

    base = resolve_base(settings)
    peft = _random_peft(home.parent / "peft", base.n_layers, base.embedding_length)
    gguf = export_gguf(peft, base, home.parent / "adapter.gguf")
    library = Library.open(settings.with_overrides(home=home))
    ids = []
    for n in range(adapters):
        task = TASKS[n % len(TASKS)] + ("" if n < len(TASKS) else f" (variant {n})")
        meta = {"base_fingerprint": base.fingerprint, "task": task, "method": "lora",
                "rank": RANK, "alpha": float(2 * RANK), "target_modules": ["o_proj"],
                "session_id": f"cold-{n}", "trajectory_id": f"{n:064x}",
                "project": "/bench/cold"}
        ids.append(library.add(peft, gguf, meta).adapter_id)
    return {"adapters": len(ids), "base": base.name, "gguf_bytes": gguf.stat().st_size}


def _random_peft(folder: Path, layers: int, hidden: int) -> Path:
    """A PEFT LoRA folder (config + safetensors) on every layer's o_proj, seeded weights."""
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    prefix = "base_model.model.model.layers"
    tensors = {}
    for layer in range(layers):
        name = f"{prefix}.{layer}.self_attn.o_proj"
        tensors[f"{name}.lora_A.weight"] = rng.normal(0, 0.02, (RANK, hidden)).astype(np.float32)
        tensors[f"{name}.lora_B.weight"] = rng.normal(0, 0.02, (hidden, RANK)).astype(np.float32)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "r": RANK, "lora_alpha": 2 * RANK, "target_modules": ["o_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


def command_env(settings: Settings, home: Path, cache: Path, transcripts: Path) -> dict[str, str]:
    """The environment of a timed command: this process's models, the throw-away library."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNE_")}
    for field in CARRIED:
        if field == "threads" and settings.sources.get("threads", "default") == "default":
            continue  # unset, the timed commands choose their threads from the idle cores
        value = getattr(settings, field)
        env[f"RUNE_{field.upper()}"] = "" if value is None else str(value)
    env.update({"RUNE_HOME": str(home), "RUNE_CACHE_DIR": str(cache), "RUNE_CHROMA_URL": "",
                "RUNE_ALLOWED_ROOTS": str(transcripts), "RUNE_IDLE_SECONDS": str(JOB_DELAY_S),
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1"})
    return env


def _commands(transcript: Path) -> dict[str, tuple[list[str], str | None]]:
    """Each timed command's arguments and standard input."""
    event = {"hook_event_name": "Stop", "session_id": "cold-bench", "transcript_path": str(transcript)}
    return {
        "run": (["run", QUERY, "--max-tokens", str(RUN_TOKENS), "--json"], None),
        "recall": (["recall", QUERY, "--json"], None),
        "hook": (["hook", "claude-code"], json.dumps(event)),
    }


def time_command(args: list[str], stdin: str | None, env: dict[str, str], cwd: Path
                 ) -> tuple[float, str]:
    """Wall seconds of `python -m rune_mcp ARGS` from start to exit, and its stdout. `cwd` is
    a folder without a rune_mcp in it (`-m` puts the working folder first on the path)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rune_mcp", *args], input=stdin, env=env,
                          cwd=cwd, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        from rune_mcp.errors import RuneError

        raise RuneError(f"`rune {' '.join(args[:2])}` exited {proc.returncode} during the cold "
                        f"benchmark ({proc.stderr.strip()[-300:]}); run it by hand to see why.")
    return seconds, proc.stdout


def check_output(name: str, stdout: str) -> dict[str, Any]:
    """What a timed command's output shows: the adapter run applied, the hits recall found."""
    if name == "run":
        data = json.loads(stdout)
        return {"adapter_id": data.get("adapter_id"), "timings_ms": data.get("timings", {})}
    if name == "recall":
        return {"hits": len(json.loads(stdout))}
    return {}


def summarize(name: str, seconds: list[float], target: float) -> dict[str, Any]:
    """First run apart, then min and median of the rest and whether the median meets `target`."""
    first, rest = seconds[0], seconds[1:] or seconds[:1]
    median = statistics.median(rest)
    return {"command": f"rune {name}", "first_s": round(first, 3), "min_s": round(min(rest), 3),
            "median_s": round(median, 3), "runs_s": [round(s, 3) for s in seconds],
            "target_s": target, "met": median <= target}


@contextlib.contextmanager
def sleeping_worker(queue: Any, transcript: Path) -> Iterator[None]:
    """The library's job worker in a thread, kept asleep by one job (the transcript's text,
    so the hook's job for the file itself stays its own) that waits a day."""
    queue.enqueue(text=transcript.read_text(encoding="utf-8"), fmt="claude-code",
                  source="bench", delay=JOB_DELAY_S)
    stop = threading.Event()
    worker = threading.Thread(target=queue.work, kwargs={"stop": stop}, daemon=True)
    worker.start()
    deadline = time.monotonic() + 30
    while not queue.status()["worker"]["active"]:
        if time.monotonic() > deadline or not worker.is_alive():
            from rune_mcp.errors import RuneError

            raise RuneError("the cold benchmark's job worker did not start; check "
                            "`rune jobs ls` in a library of your own for queue errors.")
        time.sleep(0.05)
    try:
        yield
    finally:
        stop.set()
        worker.join(timeout=30)


def run_bench(settings: Settings, repeat: int, adapters: int, shared_cache: bool,
              commands: Sequence[str] = tuple(TARGETS_S),
              progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time each of `commands` (`run`, `recall`, `hook`) `repeat + 1` times; see the module."""
    from rune_mcp.distill.queue import JobQueue

    say = progress or (lambda message: None)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="rune-bench-cold-") as tmp:
        root = Path(tmp)
        home, transcripts = root / "home", root / "transcripts"
        say(f"building a library of {adapters} adapters")
        library = build_library(settings, home, adapters)
        transcripts.mkdir()
        transcript = transcripts / "session.jsonl"
        shutil.copyfile(Path(__file__).parents[1] / "data" / "sample_session.jsonl", transcript)
        env = command_env(settings, home, settings.cache_dir if shared_cache else root / "cache",
                          transcripts)
        queue = JobQueue(settings.with_overrides(home=home, idle_seconds=JOB_DELAY_S))
        with sleeping_worker(queue, transcript):
            seconds, checks = time_rounds(commands, transcript, env, repeat, say)
            worker_pid = queue.status()["worker"]["pid"]
        hook_job = any(j.source == "hook" and j.state == "queued" for j in queue.recent())
    result: dict[str, Any] = {
        "rows": [summarize(name, seconds[name], TARGETS_S[name]) for name in seconds]}
    if "run" in checks:
        result["run_timings_ms"] = _median_timings(checks["run"][1:] or checks["run"])
        result["adapter_applied"] = all(c.get("adapter_id") for c in checks["run"])
    if "recall" in checks:
        result["recall_hits"] = min(c["hits"] for c in checks["recall"])
    if "hook" in checks:
        result["hook_job_queued"] = hook_job
        result["hook_started_no_worker"] = worker_pid == os.getpid()
    return {**result, "library": library, "repeat": repeat,
            "cache": "shared" if shared_cache else "fresh", "cpu_count": os.cpu_count(),
            "load_average": {"before": round(load_before, 2),
                             "after": round(os.getloadavg()[0], 2)}}


def time_rounds(commands: Sequence[str], transcript: Path, env: dict[str, str], repeat: int,
                say: Callable[[str], None]
                ) -> tuple[dict[str, list[float]], dict[str, list[dict[str, Any]]]]:
    """`repeat + 1` rounds, each running every command once (drift in the machine's load
    then touches all of them alike): the seconds and the output checks of each."""
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    checks: dict[str, list[dict[str, Any]]] = {name: [] for name in commands}
    for round_no in range(repeat + 1):
        say(f"round {round_no + 1} of {repeat + 1}" + (" (fills the caches)" if round_no == 0 else ""))
        for name, (args, stdin) in _commands(transcript).items():
            if name in seconds:
                took, stdout = time_command(args, stdin, env, transcript.parent)
                seconds[name].append(took)
                checks[name].append(check_output(name, stdout))
    return seconds, checks


def _median_timings(runs: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each of `rune run`'s own timings (embed, recall, prompt, ...) over runs."""
    keys = sorted({k for r in runs for k in r.get("timings_ms", {})})
    return {k: round(statistics.median(float(r["timings_ms"].get(k, 0.0)) for r in runs), 1)
            for k in keys}


def format_table(result: dict[str, Any]) -> str:
    from rune_mcp.cli.output import table

    shown = [{**r, "met": "yes" if r["met"] else "no"} for r in result["rows"]]
    lines = [table(shown, ["command", "first_s", "min_s", "median_s", "target_s", "met"])]
    if "run_timings_ms" in result:
        timings = ", ".join(f"{v} tokens/s" if k == "tokens_per_s" else f"{k} {v} ms"
                            for k, v in result["run_timings_ms"].items())
        applied = "yes" if result["adapter_applied"] else "NO"
        lines.append(f"rune run's own timings (median): {timings}; adapter applied: {applied}")
    lines.append(f"{result['library']['adapters']} adapters; {result['repeat']} rounds "
                 f"after the first, {result['cache']} cache; load average "
                 f"{result['load_average']['before']} -> {result['load_average']['after']} on "
                 f"{result['cpu_count']} cores")
    return "\n".join(lines)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.cli.output import emit_json
    from rune_mcp.errors import UsageError
    from rune_mcp.fsutil import atomic_write_json

    if args.repeat < 1 or args.adapters < 1:
        raise UsageError("--repeat and --adapters must be at least 1.")
    commands = [c.strip() for c in args.commands.split(",") if c.strip()]
    if not commands or set(commands) - set(TARGETS_S):
        raise UsageError(f"--commands takes names among {', '.join(TARGETS_S)}; "
                         f"got {args.commands!r}.")
    result = run_bench(settings, args.repeat, args.adapters, args.shared_cache, commands,
                       lambda message: print(f"rune: {message}", file=sys.stderr, flush=True))
    if args.json == "-":
        emit_json(result)
        return 0
    if args.json:
        atomic_write_json(Path(args.json), result)
    print(format_table(result))
    return 0
