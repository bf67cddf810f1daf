"""`rune bench parse`: how long a large Claude Code transcript takes to parse and redact.

It writes a synthetic transcript of the requested size (a realistic mix of prompts, thinking,
Bash/Read/Edit calls, long build logs, failing and passing test runs, and a few planted
secrets), then times `parse_path` on it: JSON decoding, branch selection, size budget,
redaction and episode detection together. The target is 10 MB in at most 2 s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings

_WORDS = [
    "the", "build", "fails", "because", "import", "path", "changed", "so", "update", "module",
    "and", "rerun", "tests", "config", "parser", "handler", "request", "response", "cache",
    "index", "value", "error", "fix",
]


def _line(kind: str, uuid: str, parent: str | None, content: Any, **extra: Any) -> str:
    rec: dict[str, Any] = {
        "parentUuid": parent, "isSidechain": False, "userType": "external",
        "cwd": "/home/dev/acme-api", "sessionId": "bench-session", "version": "2.1.39",
        "gitBranch": "main", "type": kind, "uuid": uuid,
        "timestamp": "2026-01-01T00:00:00.000Z",
        "message": {"role": kind, "content": content},
    }
    rec.update(extra)
    return json.dumps(rec)


def _prose(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(n))


def _log(rng: random.Random, lines: int, failed: bool) -> str:
    out = [f"src/app/module_{i}.py::test_case_{i} PASSED  [{i % 100:3d}%]" for i in range(lines)]
    if failed:
        out += ["Traceback (most recent call last):", '  File "src/app/db.py", line 12',
                "AttributeError: module 'acme.db' has no attribute 'connect'", "1 failed"]
    if rng.random() < 0.05:
        out.append(f"export STRIPE_KEY=sk_live_{rng.getrandbits(128):032x}")
    return "\n".join(out)


def synthetic_claude_transcript(size_bytes: int, seed: int = 0) -> str:
    """A Claude Code JSONL transcript of about `size_bytes` bytes (same seed, same text)."""
    rng = random.Random(seed)
    lines = [_line("user", "u0", None, "Fix the failing database tests in acme-api")]
    total, parent, n = len(lines[0]), "u0", 0
    while total < size_bytes:
        n += 1
        failed = n % 3 == 1
        tool_id, msg_id = f"toolu_{n:08d}", f"msg_{n:08d}"
        cmd = "pytest -x tests" if n % 2 else "npm run build"
        batch = [
            _line("assistant", f"a{n}", parent, [{"type": "thinking", "thinking": _prose(rng, 60),
                                                  "signature": "x" * 200}],
                  requestId=f"req_{n}", **{"message": {"id": msg_id, "role": "assistant",
                   "content": [{"type": "text", "text": _prose(rng, 40)}]}}),
            _line("assistant", f"b{n}", f"a{n}", None, **{"message": {
                "id": msg_id, "role": "assistant", "content": [
                    {"type": "tool_use", "id": tool_id, "name": "Bash",
                     "input": {"command": cmd, "description": "run"}}]}}),
            _line("progress", f"p{n}", f"b{n}", None, data={"type": "bash_progress"}),
            _line("user", f"r{n}", f"b{n}", [{"type": "tool_result", "tool_use_id": tool_id,
                                             "content": _log(rng, rng.randint(20, 400), failed),
                                             "is_error": failed}],
                  toolUseResult={"stdout": "", "stderr": "", "interrupted": False}),
            _line("assistant", f"e{n}", f"r{n}", None, **{"message": {
                "id": f"{msg_id}e", "role": "assistant", "content": [
                    {"type": "tool_use", "id": f"{tool_id}e", "name": "Edit",
                     "input": {"file_path": f"/home/dev/acme-api/src/m{n % 40}.py",
                               "old_string": _prose(rng, 30), "new_string": _prose(rng, 30)}}]}}),
            _line("user", f"s{n}", f"e{n}", [{"type": "tool_result", "tool_use_id": f"{tool_id}e",
                                             "content": "The file has been updated."}]),
        ]
        parent = f"s{n}"
        lines += batch
        total += sum(len(b) + 1 for b in batch)
    return "\n".join(lines) + "\n"


def register(sub: Any) -> None:
    p = sub.add_parser("parse", help="time parsing and redacting a large Claude Code transcript")
    p.add_argument("--size-mb", type=float, default=10.0, help="transcript size (default 10)")
    p.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rune_mcp.capture import parse_path
    from rune_mcp.capture.redact import Redactor
    from rune_mcp.cli.output import emit_json

    Redactor()  # compile the rules once, as a long-running process would
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench-session.jsonl"
        path.write_text(synthetic_claude_transcript(int(args.size_mb * 2**20)), "utf-8")
        size = path.stat().st_size
        times, cpu = [], []
        for _ in range(max(1, args.repeat)):
            start, start_cpu = time.perf_counter(), time.process_time()
            traj = parse_path(path)
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    result = {
        "bytes": size, "best_s": round(min(times), 3), "runs_s": [round(t, 3) for t in times],
        "best_cpu_s": round(min(cpu), 3), "load_avg_1m": round(os.getloadavg()[0], 2),
        "mb_per_s": round(size / 2**20 / min(times), 1), "steps": len(traj.steps),
        "episodes": len(traj.episodes), "redactions": traj.redactions, "target_s": 2.0,
    }
    if args.json:
        emit_json(result)
    else:
        print(f"parsed and redacted {size / 2**20:.1f} MiB in {min(times):.2f} s "
              f"(best of {len(times)}; {result['mb_per_s']} MiB/s; {len(traj.steps)} steps, "
              f"{len(traj.episodes)} episodes, redactions {traj.redactions}); CPU time "
              f"{min(cpu):.2f} s; load average {result['load_avg_1m']}; target <= 2 s")
    return 0
