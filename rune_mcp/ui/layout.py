"""The page shell every dashboard page shares: head, navigation, the error page, and the small
formatting helpers (times, sizes, ids) the pages use."""

from __future__ import annotations

import time
from datetime import datetime

from rune_mcp import __version__
from rune_mcp.ui.html import Markup, el, esc, join

NAV = (
    ("library", "/", "Memory"),
    ("jobs", "/jobs", "Jobs"),
    ("recall", "/recall", "Recall playground"),
    ("bench", "/bench", "Benchmarks"),
)


def page(title: str, active: str, *body: object, scripts: tuple[str, ...] = ()) -> str:
    """A whole HTML document: every asset comes from /static (no CDN, no inline script)."""
    logo = el("img", src="/static/favicon.svg", alt="", width=24, height=24, class_="logo")
    nav = el("nav", el("a", logo, "Rune", href="/", class_="brand"),
             el("ul", [el("li", el("a", label, href=href,
                                   aria_current="page" if key == active else None))
                       for key, href, label in NAV]))
    doc = join([
        Markup("<!doctype html>"),
        el("html",
           el("head", el("meta", charset="utf-8"),
              el("meta", name="viewport", content="width=device-width, initial-scale=1"),
              el("title", f"{title} · Rune"),
              el("link", rel="stylesheet", href="/static/style.css"),
              el("link", rel="icon", href="/static/favicon.svg", type="image/svg+xml"),
              [el("script", src=f"/static/{s}", defer=True) for s in scripts]),
           el("body", el("header", nav), el("main", el("h1", title), *body),
              el("footer", f"Rune {__version__} · served on this machine only")),
           lang="en"),
    ])
    return str(doc)


def prose(sentence: str) -> Markup:
    """A sentence with its `commands` set as code: "run `rune ls`" -> run <code>rune ls</code>."""
    parts = sentence.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick: leave the text as it is
        return esc(sentence)
    return join([el("code", part) if i % 2 else part for i, part in enumerate(parts)])


def plural(n: int, word: str, words: str | None = None) -> str:
    """`plural(1, "adapter")` -> "1 adapter"; `plural(3, "adapter")` -> "3 adapters"."""
    return f"{n} {word if n == 1 else (words or word + 's')}"


def error_page(sentence: str, title: str = "Something went wrong") -> str:
    return page(title, "", el("p", prose(sentence), class_="error", role="alert"),
                el("p", el("a", "Back to the memory", href="/")))


def notice(sentence: object, kind: str = "info") -> Markup:
    text = prose(sentence) if isinstance(sentence, str) and not isinstance(sentence, Markup) \
        else sentence
    return el("p", text, class_=f"notice {kind}", role="status")


def when_iso(stamp: str) -> str:
    """`2025-12-02T06:40:11.123Z` -> `2025-12-02 06:40 UTC`; unparsable text as it is."""
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return stamp or "-"
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def when_epoch(seconds: float | None) -> str:
    if not seconds:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def size(n: int) -> str:
    """`2048` -> `2.0 KiB`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


def adapter_link(adapter_id: str, n: int = 12) -> Markup:
    return el("a", el("code", adapter_id[:n]), href=f"/adapters/{adapter_id}", title=adapter_id)


def hidden(name: str, value: str) -> Markup:
    return el("input", type="hidden", name=name, value=value)
