"""Benchmark results on the dashboard: the JSON that `rune bench ... --json` writes, drawn.

The shapes are the ones `rune_mcp.bench.report` and `rune_mcp.bench.perfreport` read (memory
results, ablations, the perf bundle, recall and remember timings); their tables are reused as
they are, the plots are inline SVG. A file of any other shape is shown as a key/value table,
so a new benchmark appears without changes here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rune_mcp.ui.html import Markup, el, join
from rune_mcp.ui.svg import bar_chart, line_chart

MAX_FILES = 50
MAX_BYTES = 50 * 1024 * 1024
GENERIC_ROWS = 60


@dataclass
class BenchFile:
    """One results file: its kind and data, or the sentence saying why it cannot be shown."""

    path: Path
    kind: str
    data: Any = None
    error: str | None = None


def find_files(places: Sequence[Path]) -> list[Path]:
    """The JSON files named, and those under the folders named (newest first per folder)."""
    found: list[Path] = []
    for place in places:
        if place.is_dir():
            found += sorted(place.rglob("*.json"), key=str)
        elif place.suffix == ".json" or place.is_file():
            found.append(place)
    return list(dict.fromkeys(found))[:MAX_FILES]


def kind_of(data: Any) -> str:
    if not isinstance(data, dict):
        return "other"
    if isinstance(data.get("ablations"), dict):
        return "ablation"
    if isinstance(data.get("summary"), dict) and "accuracy" in data["summary"]:
        return "memory"
    if isinstance(data.get("parts"), dict) and "machine" in data:
        return "perf"
    if data.get("benchmark") == "remember":
        return "remember"
    sizes = data.get("sizes")
    if isinstance(sizes, list) and sizes and isinstance(sizes[0], dict) and "recall" in sizes[0]:
        return "recall"
    return "other"


def load(path: Path) -> BenchFile:
    try:
        if path.stat().st_size > MAX_BYTES:
            return BenchFile(path, "other", error=f"{path} is larger than 50 MB; not shown.")
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return BenchFile(path, "other", error=f"{path} does not exist; check --bench-json.")
    except (OSError, UnicodeDecodeError) as exc:
        return BenchFile(path, "other", error=f"{path} cannot be read ({exc}).")
    except json.JSONDecodeError as exc:
        return BenchFile(path, "other", error=f"{path} is not valid JSON ({exc.msg} at line "
                                               f"{exc.lineno}).")
    return BenchFile(path, kind_of(data), data)


TITLES = {
    "memory": "Memory benchmark (rune bench memory)",
    "ablation": "Ablations (rune bench memory --ablation)",
    "perf": "Performance (rune bench perf)",
    "recall": "Recall latency (rune bench recall)",
    "remember": "Remember time (rune bench remember)",
    "other": "Results",
}


def render(bench: BenchFile) -> Markup:
    """One file's section; a file whose fields are not what its kind promises says so."""
    head = el("h2", TITLES[bench.kind], " ", el("span", shown_path(bench.path), class_="path"))
    if bench.error:
        return el("section", head, el("p", bench.error, class_="error"), class_="bench")
    try:
        body = RENDERERS[bench.kind](bench.data)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        body = join([el("p", f"{bench.path} does not have the fields of a {bench.kind} result "
                             f"(missing or odd {exc}); shown as key/value pairs.", class_="error"),
                     _generic(bench.data)])
    return el("section", head, body, class_="bench")


def shown_path(path: Path) -> str:
    """The path relative to the working folder when it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return str(path)


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> Markup:
    return el("table", el("thead", el("tr", [el("th", h) for h in head])),
              el("tbody", [el("tr", [el("td", c) for c in row]) for row in rows]))


def _accuracy_series(part: dict[str, Any], conds: list[str]) -> list[tuple[float, Any]]:
    out = []
    for cond in conds:
        acc = part.get(cond) or {}
        ci = acc.get("ci95")
        out.append((float(acc.get("accuracy") or 0.0),
                    (float(ci[0]), float(ci[1])) if ci else None))
    return out


def _memory(data: dict[str, Any]) -> Markup:
    from rune_mcp.bench.report import condition_table, kind_table

    summary, config = data["summary"], data.get("config") or {}
    conds = list(summary["accuracy"])
    series = {"session knowledge": _accuracy_series(summary["accuracy"], conds)}
    general = summary.get("general_accuracy") or {}
    if any((general.get(c) or {}).get("n") for c in conds):
        series["general knowledge"] = _accuracy_series(general, conds)
    tokens = summary.get("context_tokens") or {}
    recall = summary.get("recall") or {}
    facts = []
    if recall:
        facts.append(f"Recall picked the source session's adapter for "
                     f"{_pct(recall.get('accuracy'))} of {recall.get('n', 0)} probes.")
    if "rag_retrieval_accuracy" in summary:
        facts.append(f"RAG retrieval found the source session for "
                     f"{_pct(summary['rag_retrieval_accuracy'])}.")
    setup = ", ".join(f"{k} {config[k]}" for k in ("probes", "train_steps", "lora_rank", "seed",
                                                     "base_model") if k in config)
    sessions = config.get("sessions")
    if isinstance(sessions, list):
        setup = f"{len(sessions)} sessions, " + setup
    return join([
        el("div", el("figure", bar_chart(conds, series, "Probe accuracy per condition",
                                          percent=True, ylabel="accuracy"),
                     el("figcaption", "Probe accuracy per condition, with 95% bootstrap "
                                      "intervals.")),
           el("figure", bar_chart(conds, {"tokens": [(float(tokens.get(c) or 0), None)
                                                     for c in conds]},
                                  "Context tokens per condition", ylabel="tokens (mean)"),
              el("figcaption", "Tokens spent in the prompt per condition: an adapter costs "
                               "none.")), class_="figures"),
        table(*condition_table(summary)),
        el("ul", [el("li", f) for f in facts]) if facts else "",
        el("details", el("summary", "Accuracy per kind of quirk"), table(*kind_table(summary)))
        if summary.get("by_kind") else "",
        el("p", "Configuration: ", setup, class_="muted") if setup else "",
    ])


def _ablation(data: dict[str, Any]) -> Markup:
    from rune_mcp.bench.report import ablation_table

    runs = data["ablations"]
    names = list(runs)
    oracle = {n: runs[n]["summary"]["accuracy"]["oracle_adapter"] for n in names}
    chart = bar_chart(names, {"oracle adapter": _accuracy_series(oracle, names)},
                      "Oracle-adapter accuracy per variant", percent=True, ylabel="accuracy")
    return join([el("figure", chart, el("figcaption", "Accuracy with the source session's own "
                                                      "adapter, per variant (95% intervals).")),
                 el("div", table(*ablation_table(runs)), class_="wide compact")])


def _recall(data: dict[str, Any]) -> Markup:
    rows = data.get("sizes") or []
    xs = [float(r["adapters"]) for r in rows]
    chart = line_chart(xs, {"p50": [float(r["recall"]["p50_ms"]) for r in rows],
                            "p95": [float(r["recall"]["p95_ms"]) for r in rows]},
                       "Recall latency", xlabel="adapters in the library", ylabel="ms",
                       logx=True)
    head = ["adapters", "recall p50 ms", "recall p95 ms", "embedding p50 ms"]
    body = [[r["adapters"], r["recall"]["p50_ms"], r["recall"]["p95_ms"],
             (r.get("embedding") or {}).get("p50_ms", "-")] for r in rows]
    return join([el("figure", chart, el("figcaption", "Recall latency (embedding + query) as "
                                                      "the library grows.")), table(head, body)])


def _remember(data: dict[str, Any]) -> Markup:
    rows = data.get("sizes") or []
    xs = [float(r.get("session_tokens") or 0) for r in rows]
    lines = {"excluding load": [float(r.get("seconds_excluding_load") or 0) for r in rows],
             "including load": [float(r.get("seconds_including_load") or 0) for r in rows]}
    chart = line_chart(xs, lines, "Remember time", xlabel="session tokens", ylabel="seconds")
    head = ["session tokens", "examples", "excluding load s", "including load s", "training s"]
    body = [[r.get("session_tokens"), r.get("examples"), r.get("seconds_excluding_load"),
             r.get("seconds_including_load"), r.get("train_seconds")] for r in rows]
    return join([el("figure", chart, el("figcaption", "Time to remember a session by its "
                                                      "length.")), table(head, body)])


def _perf(data: dict[str, Any]) -> Markup:
    machine = data.get("machine") or {}
    out = [el("p", f"Machine: {machine.get('cpu', '?')}, {machine.get('cpus', '?')} cores, "
                   f"{machine.get('memory_gib', '?')} GiB; GPU {machine.get('gpu') or 'none'}.",
              class_="muted")]
    for name, part in data["parts"].items():
        out.append(el("h3", name))
        if part.get("status") != "ok":
            out.append(el("p", f"Not measured: {part.get('status')} ({part.get('reason', '')}).",
                          class_="muted"))
            continue
        sub = PERF_PARTS.get(name, _generic)
        out.append(sub(part.get("data")))
    return join(out)


def _generic(data: Any) -> Markup:
    from rune_mcp.bench.perfreport import flatten

    rows = flatten(data)
    shown = [[k, v] for k, v in rows[:GENERIC_ROWS]]
    more = (el("p", f"{len(rows) - GENERIC_ROWS} more values not shown.", class_="muted")
            if len(rows) > GENERIC_ROWS else "")
    return el("details", el("summary", f"{len(rows)} values"), table(["figure", "value"], shown),
              more, open=len(rows) <= 20)


def _pct(value: Any) -> str:
    return "-" if value is None else f"{100 * float(value):.1f}%"


Renderer = Callable[[Any], Markup]
PERF_PARTS: dict[str, Renderer] = {"recall": _recall, "remember": _remember}
RENDERERS: dict[str, Renderer] = {"memory": _memory, "ablation": _ablation, "perf": _perf, "recall": _recall,
             "remember": _remember, "other": _generic}
