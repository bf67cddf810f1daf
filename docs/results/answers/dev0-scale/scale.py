"""Development check: answer-time adapter scale against free answers (development seed 0).

    rune bench make-dataset --out /tmp/ds0 --projects 2 --seed 0
    RUNE_THREADS=2 HF_HUB_OFFLINE=1 python docs/results/answers/dev0-scale/scale.py \
        /tmp/ds0 /tmp/scale-home scale.json 1.0,2.0,1.5,0.75

Remembers the dataset's sessions once (default settings, seed 0: the same adapters as
`rune bench memory --seed 0`), then for each scale asks the 24 single-session knowledge
probes of `rune bench memory` (scored choices and free answers, judged by its rules) with the
source session's adapter applied at that scale, and measures each adapter's NLL change on the
first 4,096 tokens of the general guard's standard-library sample. Results are written after
each scale, and a scale already in the output file is skipped.
"""

import json
import sys
import time
from pathlib import Path

from rune_mcp.bench.answers import FREE_TOKENS, degeneration, judge_groups, question_of
from rune_mcp.bench.corpus import stdlib_sample
from rune_mcp.bench.general import corpus_nll
from rune_mcp.bench.memory import bench_settings, remember_all
from rune_mcp.config import Settings
from rune_mcp.distill.probes import load_probes
from rune_mcp.library import Library
from rune_mcp.runtime import get_backend
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.run import run_with_memory
from rune_mcp.runtime.scoring import score_choices

data, home, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
scales = [float(s) for s in sys.argv[4].split(",")]
settings = bench_settings(Settings(), home, False, None, 0)
state = home / "sessions.json"
if state.exists():
    known = json.loads(state.read_text())
else:
    sessions = remember_all(settings, sorted((data / "sessions").glob("*.jsonl")), print)
    known = {s.name: s.adapter_id for s in sessions}
    state.write_text(json.dumps(known))
probes = [p for p in load_probes(data / "probes.jsonl").probes
          if p.source_session in known and not p.multi_session and p.key_groups]
backend = get_backend(settings, "llamacpp")
lib = Library.open(settings)
tokens = backend.tokenize(stdlib_sample().text)[:4096]
base_nll, _ = corpus_nll(backend, tokens, [])
results = json.loads(out.read_text()) if out.exists() else {}
for scale in scales:
    if str(scale) in results:
        continue
    start = time.time()
    rows = []
    for p in probes:
        adapter = known[p.source_session]
        spec = AdapterSpec.from_record(lib.get(adapter))
        scored = score_choices(backend, p.chat(), p.prefix, p.choices, [(spec, scale)])
        answer = run_with_memory(settings, question_of(p), adapter=f"{adapter}:{scale}",
                                 max_tokens=FREE_TOKENS, backend=backend)
        verdict = judge_groups(answer.text, p.key_groups, p.wrong_keys)
        rows.append({"probe": p.id, "scored": scored.rank(p.answer) == 1, "free": verdict.verdict,
                     "degenerate": degeneration(answer.text), "tokens": answer.completion_tokens,
                     "text": answer.text})
    drift = {}
    for name, adapter in known.items():
        spec = AdapterSpec.from_record(lib.get(adapter))
        drift[name] = round(corpus_nll(backend, tokens, [(spec, scale)])[0] - base_nll, 4)
    results[str(scale)] = {
        "scored": sum(r["scored"] for r in rows), "free": sum(r["free"] == "right" for r in rows),
        "degenerate": sum(r["degenerate"] is not None for r in rows), "n": len(rows),
        "tokens_mean": round(sum(r["tokens"] for r in rows) / len(rows), 1),
        "drift4k": drift, "seconds": round(time.time() - start), "rows": rows}
    print(scale, {k: v for k, v in results[str(scale)].items() if k != "rows"}, flush=True)
    out.write_text(json.dumps(results, indent=1))
