"""The one interface every inference backend implements, and the values that cross it.

A backend loads the base model once and then only changes which adapters are applied: that is
what makes memory cheap. Requests may name their own adapter set (`generate(..., adapters=...)`)
so that concurrent callers never see each other's swaps; `activate`/`deactivate` set the default
set, used by requests that name none. A request fixes its adapter set when it starts and keeps
it to the end; which set it used comes back in `Generation.adapters`.
"""

from __future__ import annotations

import abc
import os
import resource
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rune_mcp.errors import BackendError, IntegrityError, UsageError

if TYPE_CHECKING:
    from rune_mcp.runtime.cache import AdapterCache

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}
BASE_ONLY = "__base__"


@dataclass(frozen=True)
class AdapterSpec:
    """An adapter the backend may load: its id, where its two forms live, and its base."""

    adapter_id: str
    base_fingerprint: str
    peft_dir: Path | None = None
    gguf_path: Path | None = None

    @classmethod
    def from_record(cls, record: Any) -> AdapterSpec:
        """Build from a library `AdapterRecord` (whose digests `Library.get` already verified)."""
        gguf = getattr(record, "gguf_path", None)
        peft = getattr(record, "peft_dir", None)
        return cls(
            adapter_id=str(record.adapter_id),
            base_fingerprint=str(record.manifest.get("base_fingerprint", "")),
            peft_dir=Path(peft) if peft else None,
            gguf_path=Path(gguf) if gguf else None,
        )


Active = tuple[tuple[AdapterSpec, float], ...]  # adapters with their scales, in order
Adapters = Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec]  # bare specs: scale 1.0
AdapterArg = Adapters | None  # None: the backend's active set


@dataclass
class Generation:
    """One finished generation and where its time went (milliseconds, tokens per second)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    adapters: tuple[tuple[str, float], ...] = ()  # (id, scale) actually applied


def normalize(adapters: Adapters) -> Active:
    """Accept bare specs (scale 1.0) or (spec, scale) pairs; reject duplicates.

    `[a, (b, 0.5)]` -> `((a, 1.0), (b, 0.5))`.
    """
    out: list[tuple[AdapterSpec, float]] = []
    for item in adapters:
        spec, scale = (item, 1.0) if isinstance(item, AdapterSpec) else item
        out.append((spec, float(scale)))
    ids = [spec.adapter_id for spec, _ in out]
    if len(set(ids)) != len(ids):
        raise UsageError(f"adapter ids {ids} repeat; name each adapter once with its scale.")
    return tuple(out)


def check_base(spec: AdapterSpec, fingerprint: str) -> None:
    """Refuse an adapter trained for another base model before anything is loaded."""
    if spec.base_fingerprint != fingerprint:
        raise IntegrityError(
            f"adapter {spec.adapter_id} was trained for base model "
            f"{spec.base_fingerprint[:12] or 'unknown'}..., not the loaded "
            f"{fingerprint[:12]}...; use the base it was trained on or remember the session again."
        )


def rss_mb() -> float:
    """Resident memory of this process in MiB (current where /proc exists, else the peak)."""
    try:
        with open("/proc/self/statm") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


class FairLock:
    """A first-come, first-served lock: requests (and swaps) get the model in arrival order.

    Python's own locks let the thread that just released re-acquire at once, so a client
    sending requests back to back could starve every other caller. Not re-entrant.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._next = 0
        self._serving = 0

    def __enter__(self) -> FairLock:
        with self._cond:
            ticket = self._next
            self._next += 1
            while self._serving != ticket:
                self._cond.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


def adapter_ids(target: Active) -> tuple[tuple[str, float], ...]:
    """`((spec, 0.5),)` -> `(("id", 0.5),)`: what `Generation.adapters` reports."""
    return tuple((spec.adapter_id, scale) for spec, scale in target)


@dataclass(frozen=True)
class Request:
    """One generation's settings; its adapter set travels beside it, resolved when it starts."""

    messages: Sequence[Message]
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int | None = None  # None: the configured seed


def stage_timings(start: float, swapped: float, first: float, end: float,
                  tokens: int) -> dict[str, float]:
    """Milliseconds of swap, prompt and generation, and decode speed, from perf_counter marks."""
    gen_s = end - first
    return {"swap": (swapped - start) * 1000, "prompt": (first - swapped) * 1000,
            "generation": gen_s * 1000,
            # the first token comes out of the prompt pass; the rest are decode steps
            "tokens_per_s": (tokens - 1) / gen_s if tokens > 1 and gen_s > 0 else 0.0}


class Backend(abc.ABC):
    """Base model loaded once; adapters activated, deactivated and used per request.

    A subclass sets `_lock` (what requests and loads take turns under) and `_cache` (the
    adapters it holds loaded) in its constructor, and implements the generation hooks.
    Backends that can read the model's logits also implement `tokenize`, `detokenize`,
    `chat_tokens` and `logits`, which probe scoring (`rune_mcp.runtime.scoring`) uses.
    """

    name: str = "backend"
    fingerprint: str = ""
    _active: Active = ()
    _lock: AbstractContextManager[Any]
    _cache: AdapterCache[Any]

    # --- adapters ---------------------------------------------------------------------
    @property
    def active(self) -> Active:
        """The default adapter set now in force."""
        return self._active

    def activate(self, adapters: Adapters) -> float:
        """Make `adapters` the default set (loading any not yet loaded); returns the ms spent.

        Loading happens here; a request picks the new set up when it starts, so a swap to
        loaded adapters never waits for a generation in progress."""
        start = time.perf_counter()
        target = self._resolve(adapters)
        self._prepare(target)
        self._active = target  # one reference assignment: atomic for readers
        return (time.perf_counter() - start) * 1000

    def deactivate(self) -> float:
        """Back to the bare base model; returns the ms spent."""
        return self.activate(())

    def _resolve(self, adapters: AdapterArg) -> Active:
        """The set a request names (`None`: the active set), refused if trained for another base."""
        if adapters is None:
            return self._active
        target = normalize(adapters)
        for spec, _ in target:
            check_base(spec, self.fingerprint)
        return target

    def _prepare(self, target: Active) -> None:
        """Load what `target` lacks; the lock is taken only then, so that a swap between
        loaded adapters never queues behind a request."""
        if not self._cache.holds(target):
            with self._lock:
                self._cache.ensure(target)

    # --- generation -------------------------------------------------------------------
    def generate(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
                 seed: int | None = None, adapters: AdapterArg = None) -> Generation:
        """Answer a chat; `adapters=None` uses the active set, `()` the bare base."""
        return self._generate(Request(messages, max_tokens, temperature, seed), self._resolve(adapters))

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256, temperature: float = 0.0,
               seed: int | None = None, adapters: AdapterArg = None) -> Iterator[str]:
        """Like `generate`, yielding text pieces as they are produced; the adapter set is fixed
        by this call. Holds the backend until exhausted or closed."""
        return self._stream(Request(messages, max_tokens, temperature, seed), self._resolve(adapters))

    @abc.abstractmethod
    def _generate(self, request: Request, target: Active) -> Generation:
        """Answer `request` with exactly the adapters of `target`."""

    @abc.abstractmethod
    def _stream(self, request: Request, target: Active) -> Iterator[str]:
        """`_generate`, piece by piece."""

    # --- tokens and logits (probe scoring) ----------------------------------------------
    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Tokens of `text`, no BOS added; `special`: control tokens written as text count."""
        raise self._no_logits()

    def detokenize(self, tokens: Sequence[int]) -> str:
        """Text of `tokens`; a character cut at either end is dropped."""
        raise self._no_logits()

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        """The model's chat template around `messages`, with the generation prompt, as tokens."""
        raise self._no_logits()

    def logits(self, tokens: str | Sequence[int], adapters: Adapters = (), first: int = 0) -> Any:
        """Next-token logits (numpy, rows x vocabulary) at positions `first`.. of `tokens`
        under `adapters` (default: the bare base); text is tokenized with special tokens.
        The backend's default adapter set does not change."""
        raise self._no_logits()

    def _no_logits(self) -> BackendError:
        return BackendError(f"the {self.name} backend does not expose the model's logits; "
                            "set RUNE_BACKEND=llamacpp (or transformers) to score probes.")

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in the served model's vocabulary."""
        return len(self.tokenize(text))

    def truncate_tokens(self, text: str, limit: int) -> str:
        """`text` cut to at most about `limit` tokens, keeping its start and end (a session's
        task and its outcome matter most)."""
        tokens = self.tokenize(text)
        if len(tokens) <= limit:
            return text
        half = max(1, limit // 2 - 4)
        return f"{self.detokenize(tokens[:half])}\n[...]\n{self.detokenize(tokens[-half:])}"

    # --- the rest ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Loaded adapters and memory, for `rune bench runtime` and diagnostics."""
        return {"backend": self.name, "rss_mb": round(rss_mb(), 1)}

    def close(self) -> None:  # noqa: B027 (optional hook; most backends hold nothing to free)
        """Free what the backend holds; it is unusable afterwards."""


class StreamingBackend(Backend):
    """A backend whose one producer, `_run`, yields text pieces and fills in a `Generation`;
    `generate` and `stream` are the same loop consumed whole or piece by piece."""

    @abc.abstractmethod
    def _run(self, request: Request, target: Active, result: Generation) -> Iterator[str]:
        """Yield the answer's text pieces, recording tokens, timings and adapters in `result`."""

    def _generate(self, request: Request, target: Active) -> Generation:
        result = Generation("", 0, 0)
        result.text = "".join(self._run(request, target, result))
        return result

    def _stream(self, request: Request, target: Active) -> Iterator[str]:
        return self._run(request, target, Generation("", 0, 0))
