"""The adapters a backend holds loaded, the least recently used freed beyond a byte budget.

Every backend keeps what it has loaded here: llama.cpp its LoRA handles, transformers the PEFT
adapter names, vLLM the adapters it has registered with its server (no budget there: the
server keeps its own). Sizes are known before loading, so the budget is made room for first
and is never exceeded, even for a moment.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from rune_mcp.runtime.base import Active, AdapterSpec

H = TypeVar("H")


@dataclass
class _Entry(Generic[H]):
    handle: H
    size_bytes: int


def _nothing(_ids: frozenset[str]) -> None:
    return None


class AdapterCache(Generic[H]):
    """Loaded adapters by id, in use order. Not thread-safe: the backend calls it under its lock.

    `size(spec)` is the bytes an adapter will take, `load(spec)` loads it and returns its
    handle, `free(handle)` releases one; `before_free(ids)` runs before handles are freed, so
    the backend can first detach them from whatever still uses them.
    """

    def __init__(self, limit_bytes: int | None, load: Callable[[AdapterSpec], H],
                 free: Callable[[H], None], size: Callable[[AdapterSpec], int] = lambda _: 0,
                 before_free: Callable[[frozenset[str]], None] = _nothing) -> None:
        self._limit = limit_bytes  # None: no budget
        self._load, self._free, self._size, self._before_free = load, free, size, before_free
        self._items: OrderedDict[str, _Entry[H]] = OrderedDict()
        self.loads = 0
        self.evictions = 0

    @property
    def size_bytes(self) -> int:
        return sum(item.size_bytes for item in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, adapter_id: object) -> bool:
        return adapter_id in self._items

    def holds(self, target: Active) -> bool:
        """Whether every adapter of `target` is loaded already."""
        return all(spec.adapter_id in self._items for spec, _ in target)

    def ensure(self, target: Active) -> list[H]:
        """The handles of `target`'s adapters in order, loading the missing ones; adapters of
        `target` are never evicted to make room for each other."""
        keep = frozenset(spec.adapter_id for spec, _ in target)
        return [self.get(spec, keep) for spec, _ in target]

    def get(self, spec: AdapterSpec, keep: frozenset[str] = frozenset()) -> H:
        """The handle of `spec`, loading it (and evicting others, never `keep`) if needed."""
        item = self._items.get(spec.adapter_id)
        if item is not None:
            self._items.move_to_end(spec.adapter_id)
            return item.handle
        size = self._size(spec)
        self._evict(size, keep | {spec.adapter_id})
        handle = self._load(spec)
        self._items[spec.adapter_id] = _Entry(handle, size)
        self.loads += 1
        return handle

    def _evict(self, incoming: int, keep: frozenset[str]) -> None:
        if self._limit is None:
            return
        victims: list[str] = []
        total = self.size_bytes + incoming
        for adapter_id, item in self._items.items():
            if total <= self._limit:
                break
            if adapter_id not in keep:
                victims.append(adapter_id)
                total -= item.size_bytes
        self._drop(victims)

    def _drop(self, ids: list[str]) -> None:
        if not ids:
            return
        self._before_free(frozenset(ids))
        for adapter_id in ids:
            self._free(self._items.pop(adapter_id).handle)
            self.evictions += 1

    def clear(self) -> None:
        """Free every loaded adapter."""
        self._drop(list(self._items))

    def stats(self) -> dict[str, Any]:
        return {"adapters_loaded": len(self), "adapter_cache_mb": round(self.size_bytes / (1 << 20), 2),
                "adapter_loads": self.loads, "adapter_evictions": self.evictions}
