"""Reports of `rune bench memory` and `rune bench perf`: Markdown, PNG plots, one HTML page.

A benchmark's numbers are only worth what a reader can check, so each report states its
configuration next to the figures and the HTML page shows the same tables as the Markdown.
Plots need matplotlib (the `bench` extra); without it the report says so instead of failing.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rune_mcp.fsutil import atomic_write_text

log = logging.getLogger(__name__)
Table = tuple[list[str], list[list[str]]]


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ci(acc: dict[str, Any]) -> str:
    ci = acc.get("ci95")
    return "-" if not ci else f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}%"


def markdown_table(table: Table) -> str:
    head, rows = table
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def html_table(table: Table) -> str:
    head, rows = table
    out = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows]
    return "\n".join([*out, "</table>"])


def condition_table(summary: dict[str, Any]) -> Table:
    """Scored-choice and free-answer accuracy side by side (runs made before free answers
    show `-` in those columns)."""
    free_all = summary.get("free_accuracy", {})
    rows = []
    for cond, acc in summary["accuracy"].items():
        gen = summary["general_accuracy"].get(cond, {})
        free = free_all.get(cond, {})
        rows.append(
            [
                cond,
                _pct(acc["accuracy"]),
                _ci(acc),
                str(acc["n"]),
                _pct(free.get("accuracy")),
                _ci(free),
                _free_n(free),
                _pct(free.get("degenerate")),
                "-" if free.get("tokens_mean") is None else str(free["tokens_mean"]),
                _pct(gen.get("accuracy")),
                _ci(gen),
                str(summary["context_tokens"].get(cond, 0)),
            ]
        )
    return (
        [
            "condition",
            "scored choices",
            "95% CI",
            "probes",
            "free answers",
            "free 95% CI",
            "free probes (not scored)",
            "degenerate answers",
            "answer tokens (mean)",
            "general accuracy",
            "general 95% CI",
            "context tokens (mean)",
        ],
        rows,
    )


def probe_type_table(summary: dict[str, Any]) -> Table | None:
    """Per condition, the single-session, multi-session and control probes apart: what a
    condition adds on the one and costs on the others (None for runs without multi-session
    probes)."""
    multi = summary.get("multi_accuracy")
    if not multi:
        return None
    free, multi_free = summary.get("free_accuracy", {}), summary.get("multi_free_accuracy", {})
    rows = []
    for cond, acc in summary["accuracy"].items():
        rows.append([cond, _with_ci(acc), _with_ci(free.get(cond, {})),
                     _with_ci(multi.get(cond, {})), _with_ci(multi_free.get(cond, {})),
                     _with_ci(summary["general_accuracy"].get(cond, {}))])
    return (["condition", "single-session: scored (95% CI, n)", "single-session: free",
             "multi-session: scored", "multi-session: free", "control: scored"], rows)


def _with_ci(acc: dict[str, Any]) -> str:
    if acc.get("accuracy") is None:
        return "-"
    return f"{_pct(acc['accuracy'])} ({_ci(acc)}, n={acc['n']})"


def compared_table(summary: dict[str, Any]) -> Table | None:
    """The composition conditions against the best single adapter (multi-session probes) and
    against each session's own adapter (single-session probes), in points, paired."""
    compared = summary.get("compositions_compared")
    if not compared:
        return None
    rows = [[name, _points(part["scored"]), _points(part["free"])] for name, part in compared.items()]
    return (["probes: condition - compared with", "scored choices, points (paired 95% CI, n)",
             "free answers, points (paired 95% CI, n)"], rows)


def _points(part: dict[str, Any]) -> str:
    if part.get("points") is None:
        return "-"
    low, high = part["ci95"]
    return f"{part['points']:+.1f} ({low:+.1f} to {high:+.1f}, n={part['n']})"


def composition_lines(config: dict[str, Any]) -> list[str]:
    """What the composition conditions applied, project by project."""
    lines = []
    for project, part in (config.get("compositions") or {}).items():
        ids = part["adapters"]
        head = f"- {project}: {len(ids)} adapter{'s' if len(ids) != 1 else ''}"
        if part.get("sum_scale") is not None:
            head += f", summed at scale {part['sum_scale']:g} each"
        if part.get("ties"):
            head += (f"; ties merge {part['ties']['adapter_id'][:12]} (weights 1, density "
                     f"{part['ties']['density']:g})")
        lines.append(head)
        evolved = part.get("evolved")
        if evolved:
            best = evolved["best"]
            fit = "-" if best is None else f"{best['fitness']:.4f}"
            answer = _evolved_answer(evolved)
            cpu = f", {evolved['cpu_seconds']:.0f} s of CPU" if "cpu_seconds" in evolved else ""
            lines.append(f"- {project}, evolved: {evolved['evaluations']} compositions in "
                         f"{evolved['seconds']:.0f} s{cpu} ({evolved['status']}), fittest composition "
                         f"{fit} against best single {evolved['best_single']['fitness']:.4f}; "
                         f"answered with {answer}")
    return lines


def gain_table(summary: dict[str, Any]) -> Table | None:
    """Per hypernetwork condition, on the single-session probes: its gain over `none` and the
    share of the gradient adapter's gain (`oracle_adapter` over `none`) it closes."""
    closed = summary.get("hyper_gain_closed")
    if not closed:
        return None
    first = next(iter(closed.values()))
    scored, free = first["scored"]["oracle_gain"], first["free"]["oracle_gain"]
    rows = [["oracle_adapter", _points(scored), _all_of(scored), _points(free), _all_of(free)]]
    rows += [[cond, _points(part["scored"]["gain"]), _share(part["scored"]["share"]),
              _points(part["free"]["gain"]), _share(part["free"]["share"])]
             for cond, part in closed.items()]
    return (["condition", "scored: gain over none, points (paired 95% CI, n)",
             "scored: share of the gradient adapter's gain", "free: gain over none, points",
             "free: share of the gradient adapter's gain"], rows)


def _share(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.0f}%"


def _all_of(gain: dict[str, Any]) -> str:
    """The gradient adapter's own share: all of its gain, where it gained anything."""
    return _share(1.0 if (gain.get("points") or 0) > 0 else None)


def hyper_lines(config: dict[str, Any]) -> list[str]:
    """The hypernetwork the run used and what each of its conditions made."""
    hyper = config.get("hypernetwork")
    if not hyper:
        return []
    lines = [f"- checkpoint {hyper['folder']}: step {hyper['step']}, weights "
             f"{hyper['sha256'][:12]}, source {hyper['source']}, rank {hyper['rank']}; "
             f"oracle_adapter made by method {hyper.get('oracle_method')}"]
    trained = hyper.get("trained_on")
    if trained is None:
        lines.append("- the checkpoint records no training sessions: whether it was trained on "
                     "this run's sessions is unknown")
    elif trained:
        lines.append(f"- warning: the network was trained on {len(trained)} of this run's "
                     f"sessions ({', '.join(trained)}): on those it recalls, not generalises")
    else:
        lines.append("- none of this run's sessions is among the network's training sessions")
    for cond in ("generated_adapter", "hyper_lora_5", "hyper_lora_10"):
        if cond in hyper:
            part = hyper[cond]
            lines.append(f"- {cond}: {len(part['adapters'])} adapters, gradient steps "
                         f"{part['steps']}, {part['seconds']} s")
    if "bias_only" in hyper:
        lines.append(f"- bias_only: adapter {hyper['bias_only']['adapter_id'][:12]}")
    multi = hyper.get("multitask_lora")
    if multi:
        lines.append(f"- multitask_lora: adapter {multi['adapter_id'][:12]}, {multi['steps']} of "
                     f"{multi['planned_steps']} steps of {multi['batch_tokens']} tokens on "
                     f"{multi['lessons']} lessons of {multi['sessions']} sessions "
                     f"({multi['seconds']} s)")
    return lines


def _free_n(free: dict[str, Any]) -> str:
    if not free:
        return "-"
    return f"{free.get('n', 0)} ({free.get('not_scored', 0)})"


def _evolved_answer(evolved: dict[str, Any]) -> str:
    """What the evolved condition answered with; records before the routing bar name their
    best single adapter."""
    chosen = str(evolved.get("adapter_id") or "")
    if evolved["merged"]:
        return f"its stored merge {chosen[:12]}"
    if chosen:
        return f"its best single adapter {chosen[:12]}"
    return "recall's single adapter for each probe (no merge stored)"


def general_table(summary: dict[str, Any]) -> Table | None:
    """Per adapter condition: NLL per token minus the base's on both corpora (mean and range
    over the adapters it used) and coding questions passed against the base."""
    general = summary.get("general")
    if not general:
        return None
    rows = []
    for cond, part in general["conditions"].items():
        std, ans, code = part["nll_stdlib_delta"], part["nll_answers_delta"], part["coding_passed"]
        rows.append([cond, str(part["adapters"]), _span(std, "{:+.4f}"), _span(ans, "{:+.4f}"),
                     _span(code, "{:.1f}"), f"{part['coding_base_passed']}/{part['coding_total']}"])
    return (["condition", "adapters", "stdlib NLL delta (mean, min..max)",
             "own-answers NLL delta (mean, min..max)", "coding passed (mean, min..max)",
             "coding passed by the base"], rows)


def _span(span: dict[str, Any], fmt: str) -> str:
    if span.get("mean") is None:
        return "-"
    return f"{fmt.format(span['mean'])} ({fmt.format(span['min'])}..{fmt.format(span['max'])})"


def _general_lines(summary: dict[str, Any], corpus: dict[str, Any] | None) -> list[str]:
    base = summary.get("general", {}).get("base")
    if not base:
        return []
    lines = [f"- base: NLL per token {base['nll_stdlib']:.4f} on {base['stdlib_tokens']} standard "
             f"library tokens, {base['nll_answers']:.4f} on {base['answer_tokens']} tokens of its own "
             f"answers; coding {base['coding_passed']}/{base['coding_total']}"]
    if corpus:
        std = corpus["stdlib"]
        lines.append(f"- corpus: Python {std['python']} standard library sample, SHA-256 "
                     f"{std['sha256'][:16]}..., {std['check']}; {corpus['prompts']} prompts")
    return lines


def kind_table(summary: dict[str, Any], key: str = "by_kind") -> Table:
    conds = list(summary["accuracy"])
    rows = [[kind, *(_pct(v.get(c)) for c in conds)] for kind, v in summary.get(key, {}).items()]
    return (["kind", *conds], rows)


def pyplot() -> Any:
    """matplotlib's pyplot drawing to files only, or None (said once in the log) without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install 'rune-mcp[bench]'); no plots")
        return None
    return plt


def save_plot(plt: Any, fig: Any, ax: Any, path: Path, ylabel: str, title: str, legend: bool) -> None:
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if legend:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _images(plots: Sequence[Path]) -> str:
    """The plots inlined as data URLs, so the HTML page is one self-contained file."""
    return "".join(
        f'<p><img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}"></p>'
        for p in plots
    )


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"{_STYLE}</head><body>{body}</body></html>\n")


def _bar_plot(
    path: Path,
    labels: Sequence[str],
    series: dict[str, tuple[list[float], list[tuple[float, float]]]],
    ylabel: str,
    title: str,
) -> bool:
    plt = pyplot()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels)), 3.8))
    width = 0.8 / max(1, len(series))
    for i, (name, (values, cis)) in enumerate(series.items()):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(labels))]
        err = None
        if cis:
            err = [
                [max(0.0, v - lo) for v, (lo, _) in zip(values, cis, strict=True)],
                [max(0.0, hi - v) for v, (_, hi) in zip(values, cis, strict=True)],
            ]
        ax.bar(xs, values, width, yerr=err, capsize=3, label=name)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right")
    save_plot(plt, fig, ax, path, ylabel, title, legend=len(series) > 1)
    return True


def _series(summary_part: dict[str, Any], conds: list[str]) -> tuple[list[float], list[tuple[float, float]]]:
    values = [summary_part[c]["accuracy"] or 0.0 for c in conds]
    cis = [tuple(summary_part[c]["ci95"] or (0.0, 0.0)) for c in conds]
    return values, [(float(a), float(b)) for a, b in cis]


def memory_plots(summary: dict[str, Any], out: Path) -> list[Path]:
    conds = list(summary["accuracy"])
    plots = []
    acc = out / "accuracy.png"
    series = {"session knowledge": _series(summary["accuracy"], conds)}
    free = summary.get("free_accuracy", {})
    if any(free.get(c, {}).get("n") for c in conds):
        series["free answers"] = _series({c: free.get(c) or {"accuracy": None, "ci95": None}
                                          for c in conds}, conds)
    if any(v["n"] for v in summary["general_accuracy"].values()):
        series["general knowledge"] = _series(summary["general_accuracy"], conds)
    if _bar_plot(acc, conds, series, "accuracy", "Probe accuracy per condition (95% bootstrap CI)"):
        plots.append(acc)
    tokens = out / "context_tokens.png"
    if _bar_plot(
        tokens,
        conds,
        {"tokens": ([summary["context_tokens"][c] for c in conds], [])},
        "tokens in the prompt (mean)",
        "Context tokens spent per condition",
    ):
        plots.append(tokens)
    return plots


def _config_lines(config: dict[str, Any]) -> list[str]:
    keys = (
        "sessions",
        "probes",
        "quick",
        "train_steps",
        "train_batch_tokens",
        "lora_rank",
        "lora_alpha",
        "target_modules",
        "learning_rate",
        "lessons",
        "recall_min_similarity",
        "context_size",
        "seed",
        "free_answer_tokens",
        "threads",
        "seconds",
    )
    return [f"- {k}: {config[k]}" for k in keys if k in config]


def write_report(data: dict[str, Any], out: Path) -> Path:
    """report.md, report.html, accuracy.png and context_tokens.png in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    summary, config = data["summary"], data["config"]
    plots = memory_plots(summary, out)
    recall = summary.get("recall", {})
    facts = [
        f"- recall accuracy (recalled adapter is the source session's): {_pct(recall.get('accuracy'))}"
        f" of {recall.get('n', 0)} probes; an adapter above the threshold for "
        f"{_pct(recall.get('above_threshold'))}",
        f"- rag retrieval accuracy (best-matching session is the source): "
        f"{_pct(summary.get('rag_retrieval_accuracy'))}",
        f"- remember: {summary['remember']['sessions']} sessions, "
        f"{summary['remember']['seconds_mean']} s and {summary['remember']['examples_mean']} "
        "examples per session on average",
    ]
    general = general_table(summary)
    general_md = ([] if general is None else
                  ["## General ability, adapter against base", "", markdown_table(general), "",
                   *_general_lines(summary, data.get("general", {}).get("corpus")), ""])
    types = probe_type_table(summary)
    compared = compared_table(summary)
    composed = composition_lines(config)
    types_md = ([] if types is None else
                ["## Single-session, multi-session and control probes", "", markdown_table(types), ""])
    composed_md = [] if not composed else ["## Compositions", "", *composed, ""]
    if compared is not None:
        composed_md = [*composed_md, "## Compositions compared, paired", "", markdown_table(compared), ""]
    gains, hyper = gain_table(summary), hyper_lines(config)
    hyper_md = [] if not hyper else ["## Hypernetwork", "", *hyper, ""]
    if gains is not None:
        hyper_md = [*hyper_md, "## Share of the gradient adapter's gain closed", "",
                    markdown_table(gains), ""]
    md = [
        "# rune bench memory",
        "",
        "## Accuracy per condition",
        "",
        markdown_table(condition_table(summary)),
        "",
        *facts,
        "",
        *types_md,
        *composed_md,
        *hyper_md,
        "## Accuracy per kind of quirk",
        "",
        markdown_table(kind_table(summary)),
        "",
        *(["## Free-answer accuracy per kind of quirk", "",
           markdown_table(kind_table(summary, "free_by_kind")), ""] if summary.get("free_by_kind") else []),
        *general_md,
        "## Configuration",
        "",
        *_config_lines(config),
        "",
        *(f"![{p.stem}]({p.name})" for p in plots),
        "",
    ]
    atomic_write_text(out / "report.md", "\n".join(md))
    body = (
        f"<h1>rune bench memory</h1><h2>Accuracy per condition</h2>"
        f"{html_table(condition_table(summary))}<ul>"
        + "".join(f"<li>{html.escape(f[2:])}</li>" for f in facts)
        + "</ul>"
        + ("" if types is None else
           f"<h2>Single-session, multi-session and control probes</h2>{html_table(types)}")
        + ("" if not composed else
           "<h2>Compositions</h2><ul>" + "".join(f"<li>{html.escape(c[2:])}</li>" for c in composed)
           + "</ul>")
        + ("" if compared is None else f"<h2>Compositions compared, paired</h2>{html_table(compared)}")
        + ("" if not hyper else
           "<h2>Hypernetwork</h2><ul>" + "".join(f"<li>{html.escape(h[2:])}</li>" for h in hyper)
           + "</ul>")
        + ("" if gains is None else
           f"<h2>Share of the gradient adapter's gain closed</h2>{html_table(gains)}")
        + f"<h2>Accuracy per kind of quirk</h2>{html_table(kind_table(summary))}"
        + (f"<h2>Free-answer accuracy per kind of quirk</h2>{html_table(kind_table(summary, 'free_by_kind'))}"
           if summary.get("free_by_kind") else "")
        + ("" if general is None else
           f"<h2>General ability, adapter against base</h2>{html_table(general)}<ul>"
           + "".join(f"<li>{html.escape(g[2:])}</li>"
                     for g in _general_lines(summary, data.get("general", {}).get("corpus")))
           + "</ul>")
        + _images(plots)
        + "<h2>Configuration</h2><ul>"
        + "".join(f"<li>{html.escape(c[2:])}</li>" for c in _config_lines(config))
        + "</ul>"
    )
    atomic_write_text(out / "report.html", _page("rune bench memory", body))
    return out / "report.md"


def paired_difference(
    base: list[dict[str, Any]], other: list[dict[str, Any]], condition: str, reps: int = 2000
) -> tuple[float, float, float] | None:
    """Mean difference in correctness (other - base) on the knowledge probes both scored under
    `condition`, with a 95% paired bootstrap interval: the variants answer the same probes, so
    resampling probes keeps each probe's pair together and shows less noise than two intervals.
    """
    import numpy as np

    def correct(rows: list[dict[str, Any]]) -> dict[str, bool]:
        return {
            r["probe_id"]: bool(r["correct"])
            for r in rows
            if r["condition"] == condition and r["source_session"] is not None
        }

    a, b = correct(base), correct(other)
    ids = sorted(a.keys() & b.keys())
    if not ids:
        return None
    diff = np.asarray([float(b[i]) - float(a[i]) for i in ids])
    rng = np.random.default_rng(0)
    means = diff[rng.integers(0, len(diff), size=(reps, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _delta(pair: tuple[float, float, float] | None) -> str:
    if pair is None:
        return "-"
    mean, low, high = pair
    return f"{100 * mean:+.1f} ({100 * low:+.1f} to {100 * high:+.1f})"


def ablation_table(runs: dict[str, dict[str, Any]]) -> Table:
    rows = []
    base = runs.get("baseline", {}).get("results")
    for name, data in runs.items():
        s, c = data["summary"], data["config"]
        acc = s["accuracy"]
        paired = (
            paired_difference(base, data["results"], "oracle_adapter")
            if base is not None and name != "baseline"
            else None
        )
        rows.append(
            [
                name,
                str(c["train_steps"]),
                str(c["lora_rank"]),
                ",".join(c["target_modules"]),
                "/".join(k for k, v in c["lessons"].items() if v) or "none",
                *(
                    f"{_pct(acc[k]['accuracy'])} ({_ci(acc[k])})"
                    for k in ("none", "oracle_adapter", "recalled_adapter", "mismatched_adapter")
                    if k in acc
                ),
                _delta(paired),
                _pct(s["general_accuracy"].get("oracle_adapter", {}).get("accuracy")),
                _pct(s["general_accuracy"].get("mismatched_adapter", {}).get("accuracy")),
                str(s["remember"]["seconds_mean"]),
            ]
        )
    return (
        [
            "variant",
            "steps",
            "rank",
            "targets",
            "lessons",
            "none",
            "oracle adapter",
            "recalled adapter",
            "mismatched adapter",
            "oracle vs baseline, points (paired 95% CI)",
            "general (base)",
            "general (any adapter)",
            "remember s/session",
        ],
        rows,
    )


def write_ablation_report(runs: dict[str, dict[str, Any]], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    table = ablation_table(runs)
    names = list(runs)
    plots = []
    png = out / "ablation.png"
    oracle = {n: runs[n]["summary"]["accuracy"]["oracle_adapter"] for n in names}
    if _bar_plot(
        png,
        names,
        {"oracle adapter": _series(oracle, names)},
        "accuracy",
        "Oracle-adapter accuracy per ablation (95% bootstrap CI)",
    ):
        plots.append(png)
    first = next(iter(runs.values()))["config"]
    md = [
        "# rune bench memory --ablation",
        "",
        markdown_table(table),
        "",
        f"Sessions: {', '.join(first['sessions'])}; probes: {first['probes']}.",
        "",
        *(f"![{p.stem}]({p.name})" for p in plots),
        "",
    ]
    atomic_write_text(out / "ablation.md", "\n".join(md))
    atomic_write_text(out / "ablation.html", _page("rune bench memory --ablation",
                                                   f"<h1>Ablations</h1>{html_table(table)}{_images(plots)}"))
    return out / "ablation.md"


_STYLE = (
    "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}</style>"
)
