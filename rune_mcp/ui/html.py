"""Safe HTML for the dashboard: every value is escaped unless it is already `Markup`.

Pages are built from small functions rather than text templates, so no value can reach the
page without passing through `esc`: `el("td", record.task)` escapes the task, and only what
`el` itself returns (or `Markup` spelled out in this package) is trusted as HTML.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

# Elements HTML writes without a closing tag, and SVG shapes, which inline SVG must close
# with `/>` (the HTML parser does not close them by itself inside <svg>).
VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})
SVG_EMPTY = frozenset({"path", "circle", "line", "rect", "polyline"})
Child = object


class Markup(str):
    """Text that is already HTML (made by `el`, `join` or a literal in this package)."""

    __slots__ = ()


def esc(value: object) -> Markup:
    """`"<b>"` -> `"&lt;b&gt;"`; Markup passes unchanged; None is the empty string."""
    if isinstance(value, Markup):
        return value
    if value is None:
        return Markup("")
    return Markup(html.escape(str(value), quote=True))


def join(children: Iterable[Child], sep: str = "") -> Markup:
    """The children escaped and concatenated (lists and tuples are flattened)."""
    parts: list[str] = []
    for child in children:
        if isinstance(child, list | tuple):
            parts.append(join(child))
        elif child is not None and child is not False:
            parts.append(esc(child))
    return Markup(esc(sep).join(parts))


def attrs(values: dict[str, object]) -> Markup:
    """Attributes: `class_` -> `class`, `data_job` -> `data-job`; True is a bare attribute,
    None and False leave the attribute out."""
    out = []
    for key, value in values.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        out.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return Markup("".join(out))


def el(tag: str, *children: Child, **attributes: object) -> Markup:
    """One element: `el("a", "docs", href="/d")` -> `<a href="/d">docs</a>`."""
    if tag in VOID and not children:
        return Markup(f"<{tag}{attrs(attributes)}>")
    if tag in SVG_EMPTY and not children:
        return Markup(f"<{tag}{attrs(attributes)}/>")
    return Markup(f"<{tag}{attrs(attributes)}>{join(children)}</{tag}>")


def short(adapter_id: str | None, n: int = 12) -> str:
    return (adapter_id or "")[:n]
