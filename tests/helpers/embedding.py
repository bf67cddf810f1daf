"""A table of real embeddings, so child processes can index without loading the model.

Tests that start many processes (concurrent writers, a writer killed at random points) would
spend most of their time loading all-MiniLM-L6-v2 in every child. Instead the parent embeds
the few task texts once with the real model and hands the vectors over; the child's
`TableEmbedder` answers with exactly those vectors (same name and dimension as the real
embedder, so the parent can recall from the same index with the real model).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rune_mcp.library.embed import Embedder


class TableEmbedder:
    """Looks texts up in a {text: vector} table computed by a real embedder."""

    def __init__(self, name: str, dim: int, table: dict[str, list[float]]) -> None:
        self.name = name
        self.dim = dim
        self.table = table

    @classmethod
    def build(cls, real: Embedder, texts: Sequence[str]) -> TableEmbedder:
        unique = list(dict.fromkeys(texts))
        return cls(real.name, real.dim, dict(zip(unique, real.embed(unique), strict=True)))

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        missing = [t for t in texts if t not in self.table]
        if missing:
            raise KeyError(f"text not in the precomputed table: {missing[0][:60]!r}")
        return [self.table[t] for t in texts]

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps({"name": self.name, "dim": self.dim, "table": self.table}))
        return path

    @classmethod
    def load(cls, path: Path) -> TableEmbedder:
        data = json.loads(path.read_text())
        return cls(data["name"], data["dim"], data["table"])


class CachingEmbedder:
    """A real embedder that remembers each text's vector for the rest of the process.

    Test suites embed the same few task texts again and again (once per index mode); the
    vectors are the model's own, computed once.
    """

    def __init__(self, real: Embedder) -> None:
        self.real = real
        self.name = real.name
        self.dim = real.dim
        self.cache: dict[str, list[float]] = {}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            self.cache.update(zip(todo, self.real.embed(todo), strict=True))
        return [self.cache[t] for t in texts]
