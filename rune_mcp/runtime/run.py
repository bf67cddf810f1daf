"""Run with memory: recall the adapter for a task, put it on the base model, answer.

This is the whole point of Rune in one call: the task (or the prompt itself) is embedded, the
library returns the most similar adapter above the similarity threshold, the runtime swaps it
in, and the answer comes back with where each millisecond went. `adapter="none"` answers with
the bare base model; an explicit id uses exactly that adapter (verified, and refused if it
was trained for another base, or damaged). With `adapter="auto"` a damaged best match does not
fail the call: it is skipped for the next one (or none), and the answer names it in `skipped`.
`adapter="project"` or ids with scales compose several adapters (rune_mcp.runtime.compose).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError
from rune_mcp.runtime.base import AdapterSpec, Backend, Message, check_base

if TYPE_CHECKING:
    from rune_mcp.library.records import Damaged
    from rune_mcp.runtime.compose import Composition


@dataclass
class RunResult:
    """An answer, the adapter that shaped it (None for the bare base) and the timings (ms)."""

    text: str
    adapter_id: str | None
    similarity: float | None
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    task: str | None = None
    skipped: list[Damaged] = field(default_factory=list)
    adapters: list[tuple[str, float]] = field(default_factory=list)  # (id, scale) applied

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "adapter_id": self.adapter_id,
            "adapters": [{"adapter_id": i, "scale": s} for i, s in self.adapters],
            "similarity": None if self.similarity is None else round(self.similarity, 4),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "backend": self.backend,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "skipped": [damage.to_dict() for damage in self.skipped],
        }


@dataclass
class Choice:
    """The adapter picked for a run (None: the bare base), its similarity when recalled, and
    the damaged adapters passed over on the way; or the composition asked for."""

    spec: AdapterSpec | None
    similarity: float | None = None
    skipped: list[Damaged] = field(default_factory=list)
    composition: Composition | None = None

    def target(self) -> list[tuple[AdapterSpec, float]]:
        """The adapters to apply, with their scales."""
        if self.composition is not None:
            return self.composition.target()
        return [(self.spec, 1.0)] if self.spec else []


class _TimedEmbedder:
    """Wraps the process's embedder so recall's own embedding call is timed, not repeated."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name: str = inner.name
        self.dim: int = inner.dim
        self.seconds = 0.0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        start = time.perf_counter()
        try:
            return list(self.inner.embed(texts))
        finally:
            self.seconds += time.perf_counter() - start


def choose_adapter(
    settings: Settings, query: str, adapter: str, fingerprint: str, timings: dict[str, float]
) -> tuple[AdapterSpec | None, float | None]:
    """The adapter to use (or None) and its similarity; fills `embed` and `recall` timings."""
    choice = select_adapter(settings, query, adapter, fingerprint, timings)
    return choice.spec, choice.similarity


def select_adapter(
    settings: Settings, query: str, adapter: str, fingerprint: str, timings: dict[str, float],
    project: str | None = None,
) -> Choice:
    """`choose_adapter`, with the damaged adapters automatic recall skipped.

    An explicit id that is unknown, damaged or for another base raises (one sentence); `auto`
    takes the best hit whose files pass their digests, so the time to hash the chosen
    adapter's files counts as recall. A composition (`project`, ids with scales) is resolved
    and verified as a whole; `project` names the project for `adapter="project"`.
    """
    from rune_mcp.library import Library, get_embedder
    from rune_mcp.runtime.compose import PROJECT, compose, is_composition

    timings.setdefault("embed", 0.0)
    timings.setdefault("recall", 0.0)
    if adapter == "none":
        return Choice(None)
    if is_composition(adapter):
        # Only `project` without a project recalls (to find the task's project).
        recalls = adapter.strip() == PROJECT and project is None
        embedder = _TimedEmbedder(get_embedder(settings)) if recalls else None
        start = time.perf_counter()
        composition = compose(Library.open(settings, embedder=embedder), adapter, fingerprint,
                              query, project)
        spent = embedder.seconds if embedder is not None else 0.0
        timings["embed"] = spent * 1000
        timings["recall"] = (time.perf_counter() - start - spent) * 1000
        return Choice(None, composition=composition)
    if adapter != "auto":
        start = time.perf_counter()
        record = Library.open(settings).get(adapter)  # unknown id / damage raise here
        spec = AdapterSpec.from_record(record)
        check_base(spec, fingerprint)
        timings["recall"] = (time.perf_counter() - start) * 1000
        return Choice(spec)
    embedder = _TimedEmbedder(get_embedder(settings))
    start = time.perf_counter()
    found = Library.open(settings, embedder=embedder).recall_checked(
        query, k=1, base_fingerprint=fingerprint, digests=True
    )
    total = time.perf_counter() - start
    timings["embed"] = embedder.seconds * 1000
    timings["recall"] = (total - embedder.seconds) * 1000
    if not found.hits:
        return Choice(None, skipped=found.skipped)
    hit = found.hits[0]
    spec = AdapterSpec.from_record(hit.record)
    check_base(spec, fingerprint)
    return Choice(spec, hit.similarity, found.skipped)


def run_with_memory(
    settings: Settings,
    prompt: str,
    task: str | None = None,
    adapter: str = "auto",
    max_tokens: int | None = None,
    backend: Backend | None = None,
    messages: Sequence[Message] | None = None,
    project: str | None = None,
) -> RunResult:
    """Answer `prompt` with the adapter recalled for `task` (or the prompt), one given by id,
    a composition (`"project"`, ids with scales), or none (`adapter="none"`). Greedy
    decoding, so the same call gives the same answer."""
    if not prompt or not prompt.strip():
        raise UsageError("the prompt is empty; say what the model should do.")
    if not adapter or not adapter.strip():
        raise UsageError("adapter must be 'auto', 'none', 'project', an adapter id or ids "
                         "with scales.")
    from rune_mcp.runtime import get_backend

    engine = backend or get_backend(settings)
    timings: dict[str, float] = {}
    query = task.strip() if task and task.strip() else prompt
    choice = select_adapter(settings, query, adapter.strip(), engine.fingerprint, timings,
                            project)
    chat = list(messages) if messages else [{"role": "user", "content": prompt}]
    target = choice.target()
    out = engine.generate(chat, max_tokens=max_tokens or settings.max_tokens, adapters=target)
    timings.update(out.timings)
    applied = [(spec.adapter_id, scale) for spec, scale in target]
    # One adapter at scale 1 (a recalled one, or a stored merge) is named as before; a
    # composition of several is listed in `adapters` only.
    single = applied[0][0] if len(applied) == 1 and applied[0][1] == 1.0 else None
    return RunResult(text=out.text, adapter_id=single,
                     similarity=choice.similarity, timings=timings, backend=engine.name,
                     prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                     task=task, skipped=choice.skipped, adapters=applied)
