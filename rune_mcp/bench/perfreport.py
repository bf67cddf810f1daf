"""`performance.md` and its plots from `rune bench perf` JSON.

Each benchmark's JSON is shown as its owner wrote it: known shapes (recall latency per size,
remember time per session length) get a table and a plot, anything else a flat key/value
table, so a new figure appears on the page without changes here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rune_mcp.bench.report import markdown_table, pyplot, save_plot
from rune_mcp.fsutil import atomic_write_text


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """`{"a": {"b": 1}, "c": [2]}` -> `[("a.b", "1"), ("c[0]", "2")]`."""
    if isinstance(data, dict):
        return [row for k, v in data.items() for row in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(data, list):
        return [row for i, v in enumerate(data) for row in flatten(v, f"{prefix}[{i}]")]
    return [(prefix, str(data))]


def _plot(
    path: Path,
    xs: list[float],
    lines: dict[str, list[float]],
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, ys in lines.items():
        ax.plot(xs, ys, marker="o", label=name)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    save_plot(plt, fig, ax, path, ylabel, title, legend=True)
    return True


def _recall(data: dict[str, Any], out: Path) -> list[str]:
    rows = data.get("sizes") or []
    table = (
        ["adapters", "recall p50 ms", "recall p95 ms", "embedding p50 ms", "PyTorch embedding p50 ms"],
        [
            [
                str(r["adapters"]),
                str(r["recall"]["p50_ms"]),
                str(r["recall"]["p95_ms"]),
                str(r["embedding"]["p50_ms"]),
                str(r.get("embedding_eager", {}).get("p50_ms", "-")),
            ]
            for r in rows
        ],
    )
    lines = [markdown_table(table)]
    if q := data.get("query_path"):
        lines.append(
            f"\nQuery path: {q['kind']}; the first query built it in {q['first_query_s']} s and "
            f"added {q['rss_added_mb']} MB resident."
        )
    xs = [float(r["adapters"]) for r in rows]
    if rows and _plot(
        out / "perf-recall.png",
        xs,
        {"p50": [r["recall"]["p50_ms"] for r in rows], "p95": [r["recall"]["p95_ms"] for r in rows]},
        "adapters in the library",
        "ms",
        "Recall latency",
        logx=True,
    ):
        lines.append("\n![recall latency](perf-recall.png)")
    return lines


def _remember(data: dict[str, Any], out: Path) -> list[str]:
    rows = data.get("sizes") or []
    table = (
        ["session tokens", "examples", "excluding load s", "including load s", "training s"],
        [
            [
                str(r.get("session_tokens")),
                str(r.get("examples")),
                str(r.get("seconds_excluding_load")),
                str(r.get("seconds_including_load")),
                str(r.get("train_seconds")),
            ]
            for r in rows
        ],
    )
    lines = [markdown_table(table), "", f"Settings: {data.get('settings')}"]
    xs = [float(r.get("session_tokens") or 0) for r in rows]
    if rows and _plot(
        out / "perf-remember.png",
        xs,
        {
            "excluding load": [r.get("seconds_excluding_load") or 0 for r in rows],
            "including load": [r.get("seconds_including_load") or 0 for r in rows],
        },
        "session tokens",
        "seconds",
        "Remember time vs session length",
    ):
        lines.append("\n![remember time](perf-remember.png)")
    return lines


def _generic(data: Any) -> list[str]:
    rows = flatten(data)[:80]
    return [markdown_table((["figure", "value"], [[k, v] for k, v in rows]))]


SECTIONS = {"recall": _recall, "remember": _remember}
TITLES = {
    "parse": "Parsing and redacting a transcript",
    "recall": "Recall latency",
    "runtime": "Runtime: swap, load, generation speed, memory",
    "remember": "Remember time",
}


def write_performance(data: dict[str, Any], out: Path, command: str) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    m = data["machine"]
    md = [
        "# Performance",
        "",
        f"Produced by `{command}`. Every figure below comes from that one run; rerun it to check.",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu')} ({m.get('cpus')} cores visible, {m.get('threads')} threads used)",
        f"- memory: {m.get('memory_gib')} GiB; GPU: {m.get('gpu') or 'none'}",
        f"- {m.get('platform')}, Python {m.get('python')}, torch {m.get('torch')}, "
        f"llama-cpp-python {m.get('llama_cpp')}, transformers {m.get('transformers')}, "
        f"chromadb {m.get('chromadb')}",
        f"- load average (1 min) before {data['load_average']['before']}, after "
        f"{data['load_average']['after']}: on a shared machine, figures are slower when it is high",
        f"- peak resident memory of the whole run: {data['peak_rss_mb']} MiB",
        "",
    ]
    for name, part in data["parts"].items():
        md += [f"## {TITLES.get(name, name)} (`rune bench {name}`)", ""]
        if part["status"] != "ok":
            md += [f"Not measured: {part['status']} ({part.get('reason', '')}).", ""]
            continue
        md += [f"Took {part['seconds']} s.", ""]
        md += [*SECTIONS.get(name, lambda d, _o: _generic(d))(part["data"], out), ""]
    page = out / "performance.md"
    atomic_write_text(page, "\n".join(md))
    return page
