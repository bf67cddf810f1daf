"""The recall playground: a task and a question, answered with memory and without it.

Both answers come from `run_with_memory` on the same base model (greedy decoding), once with
the adapter recalled for the task and once with none, so the difference on the page is the
adapter's doing. The first run loads the base model, which takes a while; one run at a time,
since both share the model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.runtime.run import RunResult, run_with_memory
from rune_mcp.ui.html import Markup, el, join
from rune_mcp.ui.layout import adapter_link, hidden, notice, page

MAX_TEXT = 4000
DEFAULT_TOKENS = 96
MAX_TOKENS = 512
_RUN_LOCK = threading.Lock()
# Timings run_with_memory reports, in the order a request spends them.
TIMING_LABELS = (("embed", "embed task"), ("recall", "recall"), ("swap", "swap adapter"),
                 ("prompt", "read prompt"), ("generation", "generate"))


@dataclass
class Comparison:
    """The two answers and how long each took end to end (seconds)."""

    task: str
    question: str
    with_memory: RunResult
    without: RunResult
    seconds_with: float
    seconds_without: float


def compare(settings: Settings, task: str, question: str, max_tokens: int,
            backend: Any = None) -> Comparison:
    """Answer `question` with the adapter recalled for `task`, then with none."""
    with _RUN_LOCK:
        start = time.perf_counter()
        remembered = run_with_memory(settings, question, task=task or None, adapter="auto",
                                     max_tokens=max_tokens, backend=backend)
        middle = time.perf_counter()
        bare = run_with_memory(settings, question, task=task or None, adapter="none",
                               max_tokens=max_tokens, backend=backend)
        end = time.perf_counter()
    return Comparison(task, question, remembered, bare, middle - start, end - middle)


def form(csrf: str, task: str = "", question: str = "", max_tokens: int = DEFAULT_TOKENS) -> Markup:
    return el("form",
              hidden("csrf", csrf),
              el("label", "Task ", el("span", "what the agent is working on; recall matches it "
                                               "against the sessions remembered", class_="muted"),
                 el("input", type="text", name="task", value=task, maxlength=MAX_TEXT,
                    placeholder="fix the failing login test after the cookie rename")),
              el("label", "Question",
                 el("textarea", question, name="question", rows=3, maxlength=MAX_TEXT,
                    required=True, placeholder="Which command runs the tests in this project?")),
              el("label", "Answer length ",
                 el("input", type="number", name="max_tokens", value=max_tokens, min=1,
                    max=MAX_TOKENS), " tokens", class_="short"),
              el("button", "Ask with and without memory", type="submit", class_="primary"),
              el("span", "The first run loads the base model; later runs are quicker.",
                 class_="muted"),
              method="post", action="/recall", class_="playground", id="playground")


def _timings(result: RunResult, seconds: float) -> Markup:
    # Without an adapter nothing is embedded, recalled or swapped: no rows of zeros.
    skip = () if result.adapter_id else ("embed", "recall", "swap")
    rows = [(label, f"{result.timings[key]:.1f} ms") for key, label in TIMING_LABELS
            if key in result.timings and not (key in skip and result.timings[key] < 0.05)]
    if "tokens_per_s" in result.timings:
        rows.append(("speed", f"{result.timings['tokens_per_s']:.1f} tokens/s"))
    rows.append(("total", f"{seconds * 1000:.0f} ms"))
    return el("dl", [join([el("dt", k), el("dd", v)]) for k, v in rows], class_="timings")


def _answer(title: str, result: RunResult, seconds: float, memory: Markup) -> Markup:
    return el("section", el("h2", title), memory,
              el("pre", result.text.strip() or "(empty answer)", class_="answer"),
              _timings(result, seconds), class_="column")


def results(c: Comparison, threshold: float) -> Markup:
    hit = c.with_memory
    if hit.adapter_id:
        memory = el("p", "Recalled ", adapter_link(hit.adapter_id), " with similarity ",
                    el("strong", f"{hit.similarity:.3f}" if hit.similarity is not None else "-"),
                    class_="recalled")
    else:
        memory = el("p", f"No adapter was similar enough (threshold {threshold:.2f}); this "
                         "answer is the bare base model's too.", class_="muted")
    bare = el("p", "The base model alone.", class_="muted")
    return el("div", _answer("With memory", hit, c.seconds_with, memory),
              _answer("Without memory", c.without, c.seconds_without, bare),
              class_="compare", id="comparison")


def playground_page(csrf: str, *, comparison: Comparison | None = None, error: str = "",
                    task: str = "", question: str = "", max_tokens: int = DEFAULT_TOKENS,
                    threshold: float = 0.0) -> str:
    intro = el("p", "Ask the base model a question with the memory Rune recalls for a task, "
                    "and without it, side by side.", class_="lead")
    body: list[object] = [intro, form(csrf, task, question, max_tokens)]
    if error:
        body.append(el("p", error, class_="error", role="alert"))
    if comparison is not None:
        body.append(results(comparison, threshold))
    elif not error:
        body.append(notice("Nothing asked yet."))
    return page("Recall playground", "recall", *body, scripts=("playground.js",))
