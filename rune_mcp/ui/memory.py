"""What the dashboard shows of the library: adapters grouped by project, each with its
verification, lineage and lessons, and the forgetting of an adapter or a session.

Verifying an adapter hashes its files (megabytes each), so a verdict is kept per process for
as long as the files' sizes and modification times are unchanged (editing or truncating a
file changes them, and the adapter is hashed again), and one page load hashes for at most a
couple of seconds: adapters not reached yet are shown as not checked, and the next load goes
on where this one stopped.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rune_mcp.config import Settings
from rune_mcp.library import AdapterRecord, Library

Signature = tuple[tuple[str, int, int], ...]
# How the lesson compiler's example kinds read to a person (rune_mcp.distill.lessons), in the
# order it compiles them: singular and plural.
KIND_LABELS = {
    "episode": ("error → fix episode", "error → fix episodes"),
    "attempt": ("task → fix example", "task → fix examples"),
    "qa": ("question/answer", "questions/answers"),
    "final": ("final working state", "final working states"),
    "rehearsal": ("rehearsal example (keeps general knowledge)",
                  "rehearsal examples (keep general knowledge)"),
}


@dataclass
class AdapterView:
    """One adapter as a page shows it."""

    record: AdapterRecord
    problems: list[str] | None  # None: not checked yet
    children: list[str] = field(default_factory=list)
    current_base: bool = True

    @property
    def adapter_id(self) -> str:
        return self.record.adapter_id

    @property
    def parents(self) -> list[str]:
        return [str(p) for p in self.record.manifest.get("parents") or []]

    @property
    def training(self) -> dict[str, Any]:
        training = self.record.manifest.get("training")
        return training if isinstance(training, dict) else {}

    @property
    def lesson_count(self) -> int:
        return int(self.record.manifest.get("lesson_count") or 0)

    def lesson_kinds(self) -> list[str]:
        """`["2 error → fix episodes", "9 questions/answers"]`, in the compiler's order."""
        kinds = self.training.get("kinds")
        if not isinstance(kinds, dict):
            return []
        order = list(KIND_LABELS)
        ranked = sorted(kinds.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order
                                                       else len(order), str(kv[0])))
        out = []
        for kind, count in ranked:
            if isinstance(count, int | float):
                one, many = KIND_LABELS.get(str(kind), (str(kind), str(kind)))
                out.append(f"{int(count)} {one if count == 1 else many}")
        return out

    def digest(self) -> list[tuple[str, str]]:
        """What the session taught, as the index text records it after the task:
        `[("errors", "KeyError: 'user'"), ("files", "auth.py, test_login.py")]`."""
        rows = []
        for line in self.record.embed_text.splitlines()[1:]:
            head, sep, rest = line.partition(": ")
            if sep and head in ("errors", "fixes", "files", "commands"):
                rows.append((head, rest))
        return rows

    def losses(self) -> list[float]:
        values = self.training.get("losses")
        if not isinstance(values, list):
            return []
        return [float(v) for v in values if isinstance(v, int | float)]


@dataclass
class ProjectGroup:
    """The adapters of one project (newest first); `path` is None for adapters without one."""

    name: str
    path: str | None
    adapters: list[AdapterView]

    @property
    def sessions(self) -> int:
        return len({a.record.session_id for a in self.adapters if a.record.session_id})


class Verifier:
    """`check_files` verdicts per adapter, kept while the files' stat signature holds."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[Signature, list[str]]] = {}
        self._lock = threading.Lock()

    def problems(self, lib: Library, record: AdapterRecord, hash_now: bool = True
                 ) -> list[str] | None:
        """The adapter's problems ([] when intact); None when it would need hashing and
        `hash_now` is False."""
        signature = _signature(record.path)
        with self._lock:
            cached = self._cache.get(record.adapter_id)
        if cached is not None and cached[0] == signature:
            return list(cached[1])
        if not hash_now:
            return None
        problems = lib.store.problems(record.adapter_id)
        with self._lock:
            self._cache[record.adapter_id] = (signature, problems)
        return list(problems)


def _signature(folder: Path) -> Signature:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return ()
    out = []
    for path in entries:
        try:
            stat = path.stat()
        except OSError:
            continue
        out.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(out)


def project_name(project: str | None) -> str:
    """`/home/me/acme-api/` -> `acme-api`; no project -> `(no project)`."""
    if not project:
        return "(no project)"
    return project.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1] or project


def current_fingerprint(lib: Library) -> str | None:
    """The configured base model's fingerprint, or None when it cannot be read (the page
    still lists the adapters)."""
    from rune_mcp.errors import RuneError

    try:
        return lib.base_fingerprint()
    except RuneError:
        return None


def adapter_views(lib: Library, verifier: Verifier, budget_s: float = 2.0) -> list[AdapterView]:
    """Every adapter, newest first, with the ids of the adapters built on it, verified as far
    as `budget_s` seconds of hashing allow."""
    deadline = time.monotonic() + budget_s
    records = lib.list()
    base = current_fingerprint(lib)
    children: dict[str, list[str]] = {}
    for record in records:
        for parent in record.manifest.get("parents") or []:
            children.setdefault(str(parent), []).append(record.adapter_id)
    return [
        AdapterView(r, verifier.problems(lib, r, time.monotonic() < deadline),
                    children.get(r.adapter_id, []), base is None or r.base_fingerprint == base)
        for r in records
    ]


def project_groups(views: list[AdapterView]) -> list[ProjectGroup]:
    """Adapters grouped by project, the project with the newest adapter first."""
    groups: dict[str, ProjectGroup] = {}
    for view in views:
        key = view.record.project or ""
        if key not in groups:
            groups[key] = ProjectGroup(project_name(key), key or None, [])
        groups[key].adapters.append(view)
    return list(groups.values())


def find_view(lib: Library, verifier: Verifier, adapter_id: str) -> AdapterView:
    """One adapter by id or unique prefix (AdapterNotFoundError otherwise)."""
    full = lib.store.resolve(adapter_id)
    for view in adapter_views(lib, verifier, budget_s=0.0):
        if view.adapter_id == full:
            view.problems = verifier.problems(lib, view.record)
            return view
    record = lib.store.read(full)  # present but unlisted: its manifest is unreadable
    return AdapterView(record, verifier.problems(lib, record))


@dataclass
class ForgetPlan:
    """What forgetting would remove: the adapters, and the session's queued jobs."""

    adapter_ids: list[str]
    session_id: str | None
    queued_jobs: list[str]
    tasks: dict[str, str]


def plan_forget(settings: Settings, lib: Library, adapter_id: str | None,
                session_id: str | None) -> ForgetPlan:
    """What `forget` would do, without doing it (the confirmation page shows it)."""
    from rune_mcp.distill.queue import JobQueue
    from rune_mcp.errors import UsageError

    if bool(adapter_id) == bool(session_id):
        raise UsageError("choose exactly one adapter or one session to forget.")
    if adapter_id:
        record = lib.store.read(lib.store.resolve(adapter_id))
        records = [record, *_composed_from(lib, [record.adapter_id])]
        return ForgetPlan([r.adapter_id for r in records], None, [],
                          {r.adapter_id: r.task for r in records})
    records = [r for r in lib.list() if r.session_id == session_id]
    records += _composed_from(lib, [r.adapter_id for r in records])
    queued = [j.id for j in JobQueue(settings).recent("queued", limit=1000)
              if j.session_id == session_id]
    return ForgetPlan([r.adapter_id for r in records], session_id, queued,
                      {r.adapter_id: r.task for r in records})


def _composed_from(lib: Library, ids: list[str]) -> list[AdapterRecord]:
    """The merges that forgetting `ids` removes too (rune_mcp.library.lineage)."""
    wanted = set(lib.descendants(ids))
    return [r for r in lib.list() if r.adapter_id in wanted]


def forget(settings: Settings, lib: Library, plan: ForgetPlan) -> tuple[list[str], list[str]]:
    """Remove what the plan names; returns the adapters removed and the jobs cancelled. A
    session's queued jobs are cancelled first, so the session is not learned again."""
    from rune_mcp.distill.queue import JobQueue

    if plan.session_id:
        cancelled = JobQueue(settings).cancel_session(plan.session_id)
        return list(lib.forget_session(plan.session_id)), cancelled
    return lib.remove_cascade(plan.adapter_ids[0]), []
