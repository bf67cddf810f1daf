"""Development check: greedy decoding against beam search for free answers (seed 0).

    RUNE_THREADS=1 HF_HUB_OFFLINE=1 python docs/results/answers/dev0-beam/beam.py \
        /tmp/ds0 /tmp/scale-home beam.json greedy,beam4

On the library the scale check (`../dev0-scale/scale.py`) remembered into (the six adapters of
`rune bench memory --seed 0`), through transformers + PEFT on the CPU (llama.cpp's bindings
have no beam search), the 24 single-session knowledge probes are answered by the source
session's adapter, 160 tokens at most, greedily and with beam search, and judged by
`rune bench memory`'s free-answer rules. Both decodings run on the same runtime, so they
compare with each other, not with the served GGUF figures.
"""

import json
import sys
import time
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from rune_mcp.basemodel import ensure_derived, resolve_base
from rune_mcp.bench.answers import FREE_TOKENS, degeneration, judge_groups, question_of
from rune_mcp.bench.memory import bench_settings
from rune_mcp.config import Settings
from rune_mcp.distill.probes import load_probes
from rune_mcp.library import Library

data, home, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
modes = sys.argv[4].split(",")
settings = bench_settings(Settings(), home, False, None, 0)
torch.set_num_threads(settings.threads)
known = json.loads((home / "sessions.json").read_text())
probes = [p for p in load_probes(data / "probes.jsonl").probes
          if p.source_session in known and not p.multi_session and p.key_groups]
folder = ensure_derived(settings, resolve_base(settings), quiet=True)
tok = AutoTokenizer.from_pretrained(str(folder))
base = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
lib = Library.open(settings)
model = None
for name, adapter in known.items():
    path = str(lib.get(adapter).path)
    if model is None:
        model = PeftModel.from_pretrained(base, path, adapter_name=name)
    else:
        model.load_adapter(path, adapter_name=name)
results = json.loads(out.read_text()) if out.exists() else {}
for mode in modes:
    if mode in results:
        continue
    beams = 1 if mode == "greedy" else int(mode.removeprefix("beam"))
    start = time.time()
    rows = []
    for p in probes:
        model.set_adapter(p.source_session)
        text = tok.apply_chat_template([{"role": "user", "content": question_of(p)}],
                                       tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=FREE_TOKENS, do_sample=False,
                                 num_beams=beams, no_repeat_ngram_size=0,
                                 pad_token_id=tok.pad_token_id)
        answer = tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        verdict = judge_groups(answer, p.key_groups, p.wrong_keys)
        rows.append({"probe": p.id, "free": verdict.verdict, "degenerate": degeneration(answer),
                     "tokens": int(gen.shape[1] - ids["input_ids"].shape[1]), "text": answer})
    results[mode] = {
        "free": sum(r["free"] == "right" for r in rows), "n": len(rows),
        "degenerate": sum(r["degenerate"] is not None for r in rows),
        "tokens_mean": round(sum(r["tokens"] for r in rows) / len(rows), 1),
        "seconds": round(time.time() - start), "rows": rows}
    print(mode, {k: v for k, v in results[mode].items() if k != "rows"}, flush=True)
    out.write_text(json.dumps(results, indent=1))
