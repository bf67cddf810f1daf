"""Plots as inline SVG: grouped bars with intervals, lines over a (log) axis, a sparkline.

The dashboard ships no chart library: a benchmark's figures are a handful of numbers, and an
SVG written here is exact, styled by the page's CSS, and readable without JavaScript.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rune_mcp.ui.html import Markup, el, join

PALETTE = ("#3b6fb6", "#e08a2e", "#4a9d5b", "#b8475a", "#7a5cb0", "#5f8f9e", "#a5793a")
Interval = tuple[float, float] | None
Bars = dict[str, list[tuple[float, Interval]]]

LEFT, RIGHT, TOP, BOTTOM = 56, 16, 34, 86
HEIGHT = 300


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `top`: `nice_ticks(0.83)` -> [0, 0.2, ..., 1.0]."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 10) for i in range(n + 1)]


def _label(value: float, percent: bool) -> str:
    if percent:
        return f"{100 * value:.0f}%"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:.3g}"


def _legend(names: Sequence[str]) -> Markup:
    items = []
    x = float(LEFT)
    for i, name in enumerate(names):
        items.append(el("rect", x=x, y=8, width=12, height=12, fill=PALETTE[i % len(PALETTE)]))
        items.append(el("text", name, x=x + 17, y=18, class_="legend"))
        x += 30 + 7.2 * len(name)
    return join(items) if len(names) > 1 else Markup("")


def _y_axis(ticks: list[float], width: float, percent: bool, label: str) -> Markup:
    top = ticks[-1] or 1.0
    parts = []
    for tick in ticks:
        y = TOP + (HEIGHT - TOP - BOTTOM) * (1 - tick / top)
        parts.append(el("line", x1=LEFT, x2=width - RIGHT, y1=y, y2=y, class_="gridline"))
        parts.append(el("text", _label(tick, percent), x=LEFT - 6, y=y + 4, class_="tick",
                        text_anchor="end"))
    if label:
        mid = TOP + (HEIGHT - TOP - BOTTOM) / 2
        parts.append(el("text", label, x=14, y=mid, class_="axis",
                        transform=f"rotate(-90 14 {mid})", text_anchor="middle"))
    return join(parts)


def _svg(title: str, width: float, *children: Markup) -> Markup:
    return el("svg", el("title", title), *children, xmlns="http://www.w3.org/2000/svg",
              viewBox=f"0 0 {width:.0f} {HEIGHT}", role="img", aria_label=title,
              class_="chart", width=f"{width:.0f}", height=str(HEIGHT))


def bar_chart(
    labels: Sequence[str], series: Bars, title: str, *, percent: bool = False, ylabel: str = ""
) -> Markup:
    """Grouped bars, one group per label and one bar per series, with interval whiskers."""
    group_w = max(56.0, 26.0 * len(series) + 22)
    width = LEFT + RIGHT + group_w * max(1, len(labels))
    values = [v for bars in series.values() for v, ci in bars for v in (v, *(ci or ()))]
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0] if percent else nice_ticks(max(values, default=1.0))
    top = ticks[-1] or 1.0
    plot_h = HEIGHT - TOP - BOTTOM
    bar_w = (group_w - 18) / max(1, len(series))
    parts = [_y_axis(ticks, width, percent, ylabel)]

    def y_of(v: float) -> float:
        return TOP + plot_h * (1 - min(max(v, 0.0), top) / top)

    for gi, label in enumerate(labels):
        x0 = LEFT + gi * group_w + 9
        for si, (name, bars) in enumerate(series.items()):
            value, ci = bars[gi]
            x = x0 + si * bar_w
            tip = f"{label} · {name}: {_label(value, percent)}"
            if ci:
                tip += f" (95% CI {_label(ci[0], percent)}–{_label(ci[1], percent)})"
            parts.append(el("rect", el("title", tip), x=f"{x:.1f}", y=f"{y_of(value):.1f}",
                            width=f"{bar_w - 3:.1f}", height=f"{HEIGHT - BOTTOM - y_of(value):.1f}",
                            fill=PALETTE[si % len(PALETTE)]))
            if ci:
                cx = x + (bar_w - 3) / 2
                parts.append(el("path", class_="whisker",
                                d=f"M{cx:.1f} {y_of(ci[0]):.1f}V{y_of(ci[1]):.1f}"
                                  f"M{cx - 4:.1f} {y_of(ci[0]):.1f}h8M{cx - 4:.1f} "
                                  f"{y_of(ci[1]):.1f}h8"))
        lx, ly = x0 + (group_w - 18) / 2, HEIGHT - BOTTOM + 14
        parts.append(el("text", label, x=f"{lx:.1f}", y=ly, class_="tick", text_anchor="end",
                        transform=f"rotate(-30 {lx:.1f} {ly})"))
    parts.append(el("line", x1=LEFT, x2=width - RIGHT, y1=HEIGHT - BOTTOM, y2=HEIGHT - BOTTOM,
                    class_="axisline"))
    parts.append(_legend(list(series)))
    return _svg(title, width, *parts)


def line_chart(
    xs: Sequence[float], lines: Mapping[str, Sequence[float]], title: str, *, xlabel: str = "",
    ylabel: str = "", logx: bool = False,
) -> Markup:
    """Lines through (x, y) points with a marker at each; x on a log scale when asked."""
    width = 560.0
    ys = [y for line in lines.values() for y in line]
    ticks = nice_ticks(max(ys, default=1.0))
    top = ticks[-1] or 1.0
    plot_w, plot_h = width - LEFT - RIGHT - 20, HEIGHT - TOP - BOTTOM
    pos = [math.log10(x) if logx and x > 0 else x for x in xs]
    lo, hi = min(pos, default=0.0), max(pos, default=1.0)
    span = (hi - lo) or 1.0

    def at(i: int, y: float) -> tuple[float, float]:
        return LEFT + 10 + plot_w * (pos[i] - lo) / span, TOP + plot_h * (1 - y / top)

    parts = [_y_axis(ticks, width, False, ylabel)]
    for i, x in enumerate(xs):
        px, _ = at(i, 0.0)
        parts.append(el("text", _label(x, False), x=f"{px:.1f}", y=HEIGHT - BOTTOM + 18,
                        class_="tick", text_anchor="middle"))
    if xlabel:
        parts.append(el("text", xlabel, x=LEFT + plot_w / 2, y=HEIGHT - BOTTOM + 44,
                        class_="axis", text_anchor="middle"))
    for si, (name, line) in enumerate(lines.items()):
        color = PALETTE[si % len(PALETTE)]
        points = [at(i, y) for i, y in enumerate(line)]
        parts.append(el("polyline", fill="none", stroke=color, stroke_width=2,
                        points=" ".join(f"{x:.1f},{y:.1f}" for x, y in points)))
        for i, (x, y) in enumerate(points):
            parts.append(el("circle", el("title", f"{name}: {_label(line[i], False)} at "
                                                  f"{_label(xs[i], False)}"),
                            cx=f"{x:.1f}", cy=f"{y:.1f}", r=4, fill=color))
    parts.append(el("line", x1=LEFT, x2=width - RIGHT, y1=HEIGHT - BOTTOM, y2=HEIGHT - BOTTOM,
                    class_="axisline"))
    parts.append(_legend(list(lines)))
    return _svg(title, width, *parts)


def sparkline(values: Sequence[float], title: str, width: int = 180, height: int = 36) -> Markup:
    """A small line of a series (a training loss curve), its first and last values labelled."""
    if len(values) < 2:
        return Markup("")
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = (width - 4) / (len(values) - 1)
    points = " ".join(
        f"{2 + i * step:.1f},{2 + (height - 4) * (1 - (v - lo) / span):.1f}"
        for i, v in enumerate(values)
    )
    return el("svg", el("title", title),
              el("polyline", points=points, fill="none", stroke=PALETTE[0], stroke_width=1.5),
              xmlns="http://www.w3.org/2000/svg", viewBox=f"0 0 {width} {height}",
              width=width, height=height, role="img", aria_label=title, class_="spark")
