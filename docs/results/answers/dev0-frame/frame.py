"""Development check: how `run_with_memory`'s prompt is framed against free answers (seed 0).

    rune bench make-dataset --out /tmp/ds0 --projects 2 --seed 0
    RUNE_THREADS=2 HF_HUB_OFFLINE=1 python docs/results/answers/dev0-frame/frame.py \
        /tmp/ds0 /tmp/scale-home frame.json plain,task,system,task_system

Uses the library the scale check (`../dev0-scale/scale.py`) remembered into (the same six
adapters as `rune bench memory --seed 0`), and asks the 24 single-session knowledge probes as
free answers with the source session's adapter, the question framed each way:

- plain: the question alone (what `rune bench memory` asks);
- task: the agent's task line first ("Task: <the probe's task>"), then the question;
- system: a system message asking for the project's own commands, functions and files;
- task_system: both.

Results are written after each framing; one already in the output file is skipped.
"""

import json
import sys
import time
from pathlib import Path

from rune_mcp.bench.answers import FREE_TOKENS, degeneration, judge_groups, question_of
from rune_mcp.bench.memory import bench_settings
from rune_mcp.config import Settings
from rune_mcp.distill.probes import load_probes
from rune_mcp.runtime import get_backend
from rune_mcp.runtime.run import run_with_memory

SYSTEM = ("You are a coding assistant working in the user's project. Answer with the exact "
          "command, function, argument or file this project uses.")

data, home, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
framings = sys.argv[4].split(",")
settings = bench_settings(Settings(), home, False, None, 0)
known = json.loads((home / "sessions.json").read_text())
probes = [p for p in load_probes(data / "probes.jsonl").probes
          if p.source_session in known and not p.multi_session and p.key_groups]
backend = get_backend(settings, "llamacpp")
results = json.loads(out.read_text()) if out.exists() else {}


def chat(framing: str, question: str, task: str) -> list[dict[str, str]]:
    text = f"Task: {task}\n\n{question}" if "task" in framing else question
    head = [{"role": "system", "content": SYSTEM}] if "system" in framing else []
    return [*head, {"role": "user", "content": text}]


for framing in framings:
    if framing in results:
        continue
    start = time.time()
    rows = []
    for p in probes:
        question = question_of(p)
        answer = run_with_memory(settings, question, adapter=known[p.source_session],
                                 max_tokens=FREE_TOKENS, backend=backend,
                                 messages=chat(framing, question, p.task))
        verdict = judge_groups(answer.text, p.key_groups, p.wrong_keys)
        rows.append({"probe": p.id, "free": verdict.verdict, "degenerate": degeneration(answer.text),
                     "tokens": answer.completion_tokens, "text": answer.text})
    results[framing] = {
        "free": sum(r["free"] == "right" for r in rows), "n": len(rows),
        "degenerate": sum(r["degenerate"] is not None for r in rows),
        "tokens_mean": round(sum(r["tokens"] for r in rows) / len(rows), 1),
        "seconds": round(time.time() - start), "rows": rows}
    print(framing, {k: v for k, v in results[framing].items() if k != "rows"}, flush=True)
    out.write_text(json.dumps(results, indent=1))
