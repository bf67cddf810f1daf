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
    from llama_cpp import Llama

    start = time.monotonic()
    try:
        llm = Llama(model_path=str(info.path), n_ctx=2048, n_threads=settings.threads,
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
    text = str(out["choices"][0]["message"]["content"] or "").strip()  # type: ignore[index]
    print("\n".join("  " + line for line in text.splitlines()))
    tokens = int(out["usage"]["completion_tokens"])  # type: ignore[index]
    print(f"\n  {tokens} tokens in {seconds:.2f} s ({tokens / max(seconds, 1e-9):.0f} tokens/s)",
          file=sys.stderr)
    return 0
