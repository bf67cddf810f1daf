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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rune_mcp.errors import IntegrityError, UsageError

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


@dataclass
class Generation:
    """One finished generation and where its time went (milliseconds, tokens per second)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    adapters: tuple[tuple[str, float], ...] = ()  # (id, scale) actually applied


def normalize(adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec]) -> Active:
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


class Backend(abc.ABC):
    """Base model loaded once; adapters activated, deactivated and used per request."""

    name: str = "backend"
    fingerprint: str = ""

    @abc.abstractmethod
    def activate(self, adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec]) -> float:
        """Make `adapters` the default set (loading any not yet loaded); returns the ms spent."""

    def deactivate(self) -> float:
        """Back to the bare base model; returns the ms spent."""
        return self.activate(())

    @property
    @abc.abstractmethod
    def active(self) -> Active:
        """The default adapter set now in force."""

    @abc.abstractmethod
    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec] | None = None,
    ) -> Generation:
        """Answer a chat; `adapters=None` uses the active set, `()` the bare base."""

    @abc.abstractmethod
    def stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        seed: int | None = None,
        adapters: Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec] | None = None,
    ) -> Iterator[str]:
        """Like `generate`, yielding text pieces as they are produced."""

    def stats(self) -> dict[str, Any]:
        """Loaded adapters and memory, for `rune bench runtime` and diagnostics."""
        return {"backend": self.name, "rss_mb": round(rss_mb(), 1)}

    def close(self) -> None:  # noqa: B027 (optional hook; most backends hold nothing to free)
        """Free what the backend holds; it is unusable afterwards."""


AdapterArg = Sequence[tuple[AdapterSpec, float]] | Sequence[AdapterSpec] | None


class StreamingBackend(Backend):
    """A backend whose one producer, `_run`, yields text pieces and fills in a `Generation`;
    `generate` and `stream` are the same loop consumed whole or piece by piece."""

    @abc.abstractmethod
    def _run(self, messages: Sequence[Message], max_tokens: int, temperature: float,
             seed: int | None, adapters: AdapterArg, result: Generation) -> Iterator[str]:
        """Yield the answer's text pieces, recording tokens, timings and adapters in `result`."""

    def generate(self, messages: Sequence[Message], *, max_tokens: int = 256,
                 temperature: float = 0.0, seed: int | None = None,
                 adapters: AdapterArg = None) -> Generation:
        result = Generation("", 0, 0)
        result.text = "".join(self._run(messages, max_tokens, temperature, seed, adapters, result))
        return result

    def stream(self, messages: Sequence[Message], *, max_tokens: int = 256,
               temperature: float = 0.0, seed: int | None = None,
               adapters: AdapterArg = None) -> Iterator[str]:
        """Yields text pieces; holds the backend until exhausted or closed."""
        return self._run(messages, max_tokens, temperature, seed, adapters, Generation("", 0, 0))
