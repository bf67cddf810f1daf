"""The memory pages: projects -> adapters -> lessons, one adapter in full, the full
verification, and the two steps of forgetting (what would go, then what went)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rune_mcp.library import Problem
from rune_mcp.ui.html import Markup, el, join
from rune_mcp.ui.layout import adapter_link, hidden, notice, page, plural, size, when_iso
from rune_mcp.ui.memory import AdapterView, ForgetPlan, ProjectGroup
from rune_mcp.ui.svg import sparkline

EMPTY = ("The library holds no adapters yet: remember a session with `rune remember PATH`, "
         "queue one with `rune jobs add PATH`, or let `rune watch` pick up finished sessions.")


def verified_badge(view: AdapterView) -> Markup:
    if view.problems is None:
        return el("span", "… not checked yet", class_="badge", title="reload the page to go on "
                  "checking, or verify everything")
    if not view.problems:
        return el("span", "✓ verified", class_="badge ok", title="every file matches its sha256")
    return el("span", "✗ failed", class_="badge bad", title="; ".join(view.problems))


def base_badge(view: AdapterView) -> Markup:
    fingerprint = view.record.base_fingerprint
    if view.current_base:
        return el("span", el("code", fingerprint[:12]), class_="base", title=fingerprint)
    return el("span", el("code", fingerprint[:12]), " other base", class_="base other",
              title="trained for another base model: recall does not use it with this one")


def forget_button(csrf: str, label: str, *, adapter_id: str = "", session_id: str = "") -> Markup:
    """A form that leads to the confirmation page (nothing is removed by this button)."""
    return el("form",
              hidden("csrf", csrf),
              hidden("adapter_id", adapter_id) if adapter_id else "",
              hidden("session_id", session_id) if session_id else "",
              el("button", label, type="submit", class_="danger"),
              method="post", action="/forget", class_="inline")


def lessons_line(view: AdapterView) -> Markup:
    """`3 lessons · 14 examples: 2 error → fix episodes, 9 question/answer lessons, ...`."""
    examples = view.training.get("examples")
    kinds = ", ".join(view.lesson_kinds())
    head = plural(view.lesson_count, "lesson")
    if isinstance(examples, int):
        head += f" · {plural(examples, 'training example')}"
    return el("p", el("strong", head), f": {kinds}" if kinds else "", class_="lessons")


def digest_list(view: AdapterView) -> Markup:
    rows = view.digest()
    if not rows:
        return Markup("")
    return el("dl", [join([el("dt", head), el("dd", text)]) for head, text in rows],
              class_="digest")


def lineage(view: AdapterView) -> Markup:
    parts: list[object] = []
    if view.parents:
        parts += ["built on ", join([adapter_link(p, 8) for p in view.parents], ", ")]
    if view.children:
        parts += ["; " if parts else "", "parent of ",
                  join([adapter_link(c, 8) for c in view.children], ", ")]
    return el("span", *parts) if parts else el("span", "original", class_="muted")


def adapter_card(view: AdapterView, csrf: str) -> Markup:
    record = view.record
    facts = [
        ("created", when_iso(record.created_at)),
        ("base", base_badge(view)),
        ("digest", verified_badge(view)),
        ("lineage", lineage(view)),
        ("session", el("code", record.session_id or "-")),
        ("agent", record.agent or "-"),
    ]
    actions = [forget_button(csrf, "Forget adapter…", adapter_id=view.adapter_id)]
    if record.session_id:
        actions.append(forget_button(csrf, "Forget session…", session_id=record.session_id))
    return el("article",
              el("header", adapter_link(view.adapter_id), el("h3", record.task, class_="task")),
              el("dl", [join([el("dt", k), el("dd", v)]) for k, v in facts], class_="facts"),
              lessons_line(view), digest_list(view),
              el("div", *actions, class_="actions"),
              class_="adapter" + (" damaged" if view.problems else ""),
              id=f"a-{view.adapter_id[:12]}")


def capture_notice(state: dict[str, Any]) -> Markup:
    """Whether automatic capture runs, and what is never remembered
    (`rune_mcp.capture.control.capture_state`)."""
    if state["paused_everywhere"]:
        since = f" since {state['paused_since']}" if state["paused_since"] else ""
        text = f"Automatic capture is paused everywhere{since}; `rune resume` restarts it."
    elif state["paused_projects"]:
        text = ("Automatic capture is on, except for "
                + ", ".join(p["project"] for p in state["paused_projects"])
                + " (paused; `rune resume --project P` restarts it).")
    else:
        text = "Automatic capture is on (`rune pause` stops it)."
    if state["exclude_projects"]:
        text += " Never remembered (exclude_projects): " + ", ".join(state["exclude_projects"]) + "."
    if state["problem"]:
        text += " " + state["problem"]
    return notice(text, "bad" if state["problem"] else "info")


def library_page(
    groups: Sequence[ProjectGroup], csrf: str, total: int, capture: Markup | str = ""
) -> str:
    if not total:
        return page("Memory", "library", notice(EMPTY), capture)
    damaged = sum(1 for g in groups for a in g.adapters if a.problems)
    unchecked = sum(1 for g in groups for a in g.adapters if a.problems is None)
    sessions = sum(g.sessions for g in groups)
    summary = (f"{plural(total, 'adapter')} in {plural(len(groups), 'project')}, learned from "
               f"{plural(sessions, 'session')}.")
    banner = notice(f"{plural(damaged, 'adapter')} failed verification and will never be "
                    "loaded; forget them or restore their files.", "bad") if damaged else ""
    pending = notice(f"{plural(unchecked, 'adapter')} not checked yet (each page load hashes "
                     "for a few seconds); reload to go on.") if unchecked else ""
    toc = el("ul", [el("li", el("a", g.name, href=f"#p-{i}"), f" ({len(g.adapters)})")
                    for i, g in enumerate(groups)], class_="toc")
    sections = [
        el("section",
           el("h2", g.name, " ", el("span", g.path or "", class_="path")),
           el("p", f"{plural(len(g.adapters), 'adapter')} from {plural(g.sessions, 'session')}",
              class_="muted"),
           [adapter_card(a, csrf) for a in g.adapters],
           class_="project", id=f"p-{i}")
        for i, g in enumerate(groups)
    ]
    intro = el("p", summary, " Each adapter is one session's lessons, stored in LoRA weights; ",
               el("a", "verify everything", href="/verify"), " (files and index).", class_="lead")
    return page("Memory", "library", intro, capture, banner, pending,
                toc if len(groups) > 1 else "", *sections)


def _kv(rows: Sequence[tuple[str, object]]) -> Markup:
    return el("dl", [join([el("dt", k), el("dd", v)]) for k, v in rows], class_="facts wide")


def adapter_page(view: AdapterView, csrf: str) -> str:
    record, manifest, training = view.record, view.record.manifest, view.training
    files = manifest.get("files") or {}
    losses = view.losses()
    remembers = el("section", el("h2", "What it remembers"),
                   el("p", record.task, class_="task big"), digest_list(view),
                   el("details", el("summary", "The text it is recalled by"),
                      el("pre", record.embed_text)))
    lessons = el("section", el("h2", "Lessons"), lessons_line(view),
                 _kv([("training steps", training.get("steps", "-")),
                      ("final loss", training.get("final_loss", "-")),
                      ("training time", f"{training.get('seconds', '-')} s"),
                      ("device", training.get("device", "-")),
                      ("loss curve", join([sparkline(losses, "training loss per step"), " ",
                                           el("span", f"{losses[0]:.2f} → {losses[-1]:.2f}",
                                              class_="muted")])
                       if len(losses) > 1 else "-")]))
    source = el("section", el("h2", "Where it came from"),
                _kv([("project", record.project or "-"), ("agent", record.agent or "-"),
                     ("session", el("code", record.session_id or "-")),
                     ("trajectory", el("code", record.trajectory_id or "-")),
                     ("created", when_iso(record.created_at)), ("lineage", lineage(view))]))
    weights = el("section", el("h2", "Weights"),
                 _kv([("base model", base_badge(view)), ("method", record.method),
                      ("rank / alpha", f"{manifest.get('rank')} / {manifest.get('alpha')}"),
                      ("targets", ", ".join(manifest.get("target_modules") or []) or "-"),
                      ("digest", verified_badge(view))]),
                 el("table", el("thead", el("tr", el("th", "file"), el("th", "size"),
                                            el("th", "sha256"))),
                    el("tbody", [el("tr", el("td", el("code", name)),
                                    el("td", size(int(info.get("size", 0)))),
                                    el("td", el("code", str(info.get("sha256", ""))[:16] + "…"),
                                       title=str(info.get("sha256", ""))))
                                 for name, info in sorted(files.items())])))
    problems = el("ul", [el("li", p) for p in view.problems], class_="error") \
        if view.problems else ""
    actions = [forget_button(csrf, "Forget this adapter…", adapter_id=view.adapter_id)]
    if record.session_id:
        actions.append(forget_button(csrf, "Forget its whole session…",
                                     session_id=record.session_id))
    head = el("p", el("code", view.adapter_id), class_="muted")
    return page(f"Adapter {view.adapter_id[:12]}", "library", head, problems,
                el("div", remembers, lessons, source, weights, class_="grid"),
                el("div", *actions, class_="actions"))


def verify_page(problems: Sequence[Problem], adapters: int) -> str:
    if not problems:
        body = notice(f"All {plural(adapters, 'adapter')} verified: every file matches its "
                      "sha256 and the index holds exactly these adapters.", "ok")
    else:
        body = join([
            notice(f"{plural(len(problems), 'problem')} found; damaged adapters are never "
                   "loaded.", "bad"),
            el("table", el("thead", el("tr", el("th", "adapter"), el("th", "problem"))),
               el("tbody", [el("tr", el("td", adapter_link(p.adapter_id) if p.adapter_id
                                         else "index"), el("td", p.problem))
                            for p in problems])),
        ])
    return page("Verification", "library", body, el("p", el("a", "Back to the memory", href="/")))


def _plan_list(plan: ForgetPlan) -> Markup:
    return el("ul", [el("li", el("code", a[:12]), " ", plan.tasks.get(a, ""))
                     for a in plan.adapter_ids], class_="plan")


def confirm_page(plan: ForgetPlan, csrf: str) -> str:
    what = f"session {plan.session_id}" if plan.session_id else f"adapter {plan.adapter_ids[0][:12]}"
    whose = "this adapter's" if len(plan.adapter_ids) == 1 else "these adapters'"
    lines: list[Any] = [el("p", f"Forgetting {what} deletes {whose} weights for good; the base "
                                "model and every other adapter stay as they are.")]
    if plan.adapter_ids:
        lines.append(_plan_list(plan))
    else:
        lines.append(el("p", "No adapter was learned from this session yet.", class_="muted"))
    if plan.queued_jobs:
        lines.append(el("p", f"{plural(len(plan.queued_jobs), 'queued job')} of this session "
                             "will be cancelled, so it is not learned again."))
    form = el("form",
              hidden("csrf", csrf), hidden("confirm", "yes"),
              hidden("adapter_id", plan.adapter_ids[0] if not plan.session_id else ""),
              hidden("session_id", plan.session_id or ""),
              el("button", f"Yes, forget {what}", type="submit", class_="danger"),
              " ", el("a", "Cancel", href="/", class_="button"),
              method="post", action="/forget/confirm", class_="confirm")
    return page("Forget?", "library", el("div", *lines, form, class_="card"))


def forgotten_page(removed: Sequence[str], cancelled: Sequence[str]) -> str:
    if removed:
        text = f"Removed {plural(len(removed), 'adapter')}: {', '.join(r[:12] for r in removed)}."
    else:
        text = "No adapter matched; nothing was removed."
    if cancelled:
        text += f" Cancelled {plural(len(cancelled), 'queued job')}."
    return page("Forgotten", "library", notice(text, "ok"),
                el("p", el("a", "Back to the memory", href="/")))
