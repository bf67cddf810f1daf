"""The task-embedding index: one Chroma record per adapter, derived from the manifests.

By default Chroma runs embedded (`PersistentClient` under `<RUNE_HOME>/index/chroma`); with
`chroma_url` set it talks to a Chroma server (`chroma run`) through `HttpClient`. Embeddings
are always passed in explicitly: Chroma's own default embedding function would download a
model. Nothing here is precious: a missing, corrupt or outdated index is rebuilt from the
manifests; a damaged one (Chroma cannot open it, or a file stands where its folder should be)
is first moved aside, never deleted (`rune_mcp/quarantine.py`), so what broke can be looked
at. Beside Chroma's files live two of ours: `state.json` (which embedder built the
index, and a generation number bumped by every change, so other processes know to reload an
embedded index) and `dirty` (present while a writer is changing the library; if a writer dies,
the next one finds it and repairs the index).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from rune_mcp.errors import ConfigError, LibraryError
from rune_mcp.fsutil import atomic_write_json, fsync_dir
from rune_mcp.heal import integrity
from rune_mcp.quarantine import Quarantined, quarantine

log = logging.getLogger(__name__)

STATE_VERSION = 1
STATE_FILE = "state.json"
DIRTY_FILE = "dirty"
CHROMA_DIR = "chroma"
_PAGE = 5000


class IndexUnusable(LibraryError):
    """The index cannot be read (corrupt files, another embedder): rebuild it."""


@dataclass(frozen=True)
class IndexEntry:
    adapter_id: str
    embedding: list[float]
    metadata: dict[str, str]


@dataclass(frozen=True)
class Match:
    """A record `AdapterIndex.matching` found: its id, metadata and stored embedding."""

    adapter_id: str
    metadata: dict[str, Any]
    embedding: list[float]


def _chroma_settings() -> Any:
    from chromadb.config import Settings as ChromaSettings

    return ChromaSettings(anonymized_telemetry=False, allow_reset=True)


def _http_client(url: str) -> Any:
    import chromadb

    parsed = urlparse(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"chroma_url {url!r} is not an http(s) URL like http://127.0.0.1:8000.")
    port = parsed.port or (443 if parsed.scheme == "https" else 8000)
    try:
        return chromadb.HttpClient(
            host=parsed.hostname,
            port=port,
            ssl=parsed.scheme == "https",
            settings=_chroma_settings(),
        )
    except Exception as exc:  # chromadb raises plain exceptions for connection failures
        raise LibraryError(
            f"cannot reach the Chroma server at {url} ({exc}); start it with `chroma run` or "
            "unset RUNE_CHROMA_URL to use the embedded index."
        ) from exc


class AdapterIndex:
    """A Chroma collection of adapter task embeddings. Writers call it under the library lock."""

    def __init__(self, folder: Path, chroma_url: str | None, library_id: str) -> None:
        self.folder = folder
        self.chroma_url = chroma_url
        # One collection per library, so libraries sharing a Chroma server never mix.
        self.collection_name = f"rune-adapters-{library_id[:16] or 'default'}"
        self._client: Any = None
        self._collection: Any = None
        self._generation = -1
        self._epoch: Any = None
        self._matching: tuple[tuple[str, tuple[int, Any]], list[Match]] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def is_open(self) -> bool:
        return self._collection is not None

    def open(self, embedder_name: str, dim: int) -> None:
        """Connect and check that this index was built by the same embedder (else unusable)."""
        state = self._state()
        if state and (state.get("embedder"), state.get("dim")) != (embedder_name, dim):
            raise IndexUnusable(
                f"the index was built with embedder {state.get('embedder')!r} "
                f"(dim {state.get('dim')}), not {embedder_name!r} (dim {dim})"
            )
        if self._collection is not None:
            return
        try:
            self._client = self._make_client()
            self._collection = self._client.get_or_create_collection(
                self.collection_name,
                metadata={"hnsw:space": "cosine"},
                embedding_function=None,
            )
            self._collection.count()
        except LibraryError:
            self.close()
            raise
        except ImportError as exc:  # a broken install, not a broken index: leave it be
            self.close()
            raise LibraryError(
                f"chromadb cannot be imported ({exc}); reinstall it with "
                "`pip install --force-reinstall chromadb`."
            ) from exc
        except Exception as exc:  # any failure of Chroma's own files means: rebuild
            self.close()
            if self.chroma_url:  # a server that does not answer is not a corrupt index
                raise LibraryError(
                    f"cannot use the Chroma server at {self.chroma_url} ({exc}); start it with "
                    "`chroma run` or unset RUNE_CHROMA_URL to use the embedded index."
                ) from exc
            self.set_aside(f"Chroma could not open it: {exc}")
            raise IndexUnusable(f"the index could not be opened ({exc})") from exc
        if not state:
            self._write_state({"embedder": embedder_name, "dim": dim, "generation": 0,
                               "epoch": secrets.token_hex(8)})
        state = self._state()
        self._generation = int(state.get("generation", 0))
        self._epoch = state.get("epoch")

    def _make_client(self) -> Any:
        if self.chroma_url:
            return _http_client(self.chroma_url)
        import chromadb

        path = self.folder / CHROMA_DIR
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=_chroma_settings())

    def damage(self) -> str | None:
        """Why the embedded index's files are damaged, as far as can be told without opening
        Chroma (for `rune doctor`): a file where a folder should be, or a Chroma database that
        fails SQLite's integrity check. None when nothing is wrong, or for a Chroma server."""
        if self.chroma_url:
            return None
        for place in (self.folder, self.folder / CHROMA_DIR):
            if os.path.lexists(place) and not place.is_dir():
                return f"{place} is a file where a folder should be"
        db = self.folder / CHROMA_DIR / "chroma.sqlite3"
        if not db.exists():
            return None
        found = integrity(db)
        return None if found is None else f"its Chroma database {db}: {found}"

    def set_aside(self, reason: str) -> list[Quarantined]:
        """Move a damaged embedded index aside (caller holds the library lock); the next open
        starts an empty one, which the library fills from the manifests."""
        moved: list[Quarantined] = []
        if self.chroma_url:
            return moved
        self.close()
        outcome = ("a new index is built from the adapters' manifests in its place, so nothing "
                   "is lost (the index holds only what they say)")
        if os.path.lexists(self.folder) and not self.folder.is_dir():
            moved.append(quarantine(self.folder, what="the adapter index folder",
                                    reason=reason, outcome=outcome))
        elif os.path.lexists(self.folder / CHROMA_DIR):
            moved.append(quarantine(self.folder / CHROMA_DIR, what="the adapter index",
                                    reason=reason, outcome=outcome))
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (self.folder / STATE_FILE).unlink()
        for item in moved:
            log.warning("%s", item.sentence())
        return moved

    def close(self) -> None:
        """Drop the client; an embedded one is evicted from Chroma's per-path cache so the
        next open reads the files afresh (another process may have changed them)."""
        client, self._client, self._collection = self._client, None, None
        self._matching = None
        if self.chroma_url:
            return
        # Even without a client: a failed open leaves a half-started system in Chroma's cache.
        _evict_embedded(client, self.folder / CHROMA_DIR)

    def stale(self) -> bool:
        """True when another process changed an embedded index since we loaded it, or built
        a new one in its place (a new epoch: the generation starts again at 0)."""
        if self.chroma_url or self._collection is None:
            return False
        state = self._state()
        return (int(state.get("generation", 0)), state.get("epoch")) != (
            self._generation, self._epoch
        )

    def refresh(self) -> None:
        """Reload an embedded index another process changed (caller holds the lock)."""
        if self.stale():
            embedder, dim = self._state().get("embedder", ""), self._state().get("dim", 0)
            self.close()
            self.open(str(embedder), int(dim))

    def destroy(self) -> None:
        """Delete the index entirely (caller holds the lock); `open` starts an empty one."""
        if self.chroma_url:
            with contextlib.suppress(Exception):
                self._client = self._client or _http_client(self.chroma_url)
                self._client.delete_collection(self.collection_name)
        self.close()
        if not self.chroma_url:
            import shutil

            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                shutil.rmtree(self.folder / CHROMA_DIR)
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            (self.folder / STATE_FILE).unlink()

    def reset(self) -> None:
        """Empty the collection (caller holds the lock)."""
        self._require()
        try:
            self._client.delete_collection(self.collection_name)
            self._collection = self._client.get_or_create_collection(
                self.collection_name, metadata={"hnsw:space": "cosine"}, embedding_function=None
            )
        except Exception as exc:
            raise IndexUnusable(f"the index could not be reset ({exc})") from exc
        self._bump()

    # --- the dirty mark -------------------------------------------------------------------

    def is_dirty(self) -> bool:
        return (self.folder / DIRTY_FILE).exists()

    def mark_dirty(self) -> None:
        path = self.folder / DIRTY_FILE
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
            fsync_dir(self.folder)

    def mark_clean(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / DIRTY_FILE)
            fsync_dir(self.folder)

    # --- records --------------------------------------------------------------------------

    def upsert(self, entries: list[IndexEntry]) -> None:
        if not entries:
            return
        self._call(
            "upsert",
            ids=[e.adapter_id for e in entries],
            embeddings=[e.embedding for e in entries],
            metadatas=[e.metadata for e in entries],
        )
        self._bump()

    def delete(self, ids: list[str]) -> None:
        if ids:
            self._call("delete", ids=ids)
            self._bump()

    def has(self, adapter_id: str) -> bool:
        return bool(self._call("get", ids=[adapter_id], include=[])["ids"])

    def ids(self) -> set[str]:
        found: set[str] = set()
        offset = 0
        while True:
            page = self._call("get", include=[], limit=_PAGE, offset=offset)["ids"]
            found.update(page)
            if len(page) < _PAGE:
                return found
            offset += _PAGE

    def count(self) -> int:
        return int(self._call("count"))

    def query(
        self,
        vector: list[float],
        k: int,
        where: dict[str, Any],
        accept: Callable[[dict[str, Any]], bool],
        narrow: bool = False,
    ) -> list[tuple[str, float]]:
        """Up to `k` (id, cosine similarity) pairs whose metadata match, most similar first.

        `where` and `accept` state the same filter, for Chroma and in Python. Chroma's filtered
        search first collects every matching id (far slower than an unfiltered search; figures
        in docs/library.md#performance), and usually nearly every adapter matches (same base
        model), so the nearest few are fetched unfiltered and filtered here, widening once, and
        only when too few survive does Chroma run the exact filtered search. Every metadata
        row fetched costs time, so the first try asks for just `k` unless a project filter
        makes misses likely.
        """
        # Asking for more than the index holds returns all of it; no count() round trip first
        # (a sizeable share of a recall; docs/library.md#performance).
        tries = [max(4 * k, 20)] if narrow else [k, max(4 * k, 20)]
        for n in tries:
            result = self._call(
                "query", query_embeddings=[vector], n_results=n, include=["distances", "metadatas"]
            )
            ids = result["ids"][0]
            rows = [
                (i, 1.0 - float(d))  # Chroma's cosine distance is 1 - cosine similarity
                for i, d, m in zip(ids, result["distances"][0], result["metadatas"][0], strict=True)
                if accept(dict(m or {}))
            ]
            if len(rows) >= k or len(ids) < n:
                return rows[:k]
        result = self._call(
            "query", query_embeddings=[vector], n_results=k, where=where, include=["distances"]
        )
        return [
            (i, 1.0 - float(d))
            for i, d in zip(result["ids"][0], result["distances"][0], strict=True)
        ]

    def matching(self, where: dict[str, Any]) -> list[Match]:
        """Every record matching `where`, with its metadata and embedding, kept until the
        index changes (its generation moves): for a filter few records match (the merges),
        which recall weighs on every call, while Chroma's filtered search collects the
        matches at a cost that grows with the whole index (figures in
        docs/library.md#performance). So it is asked once per change, not once per recall."""
        key = (json.dumps(where, sort_keys=True), self._version())
        if self._matching is None or self._matching[0] != key:
            result = self._call("get", where=where, include=["embeddings", "metadatas"])
            ids = list(result["ids"])
            metadatas = result["metadatas"] if ids else []
            embeddings = result["embeddings"] if ids else []  # an array, or None when empty
            found = [
                Match(i, dict(m or {}), [float(v) for v in e])
                for i, m, e in zip(ids, metadatas, embeddings, strict=True)
            ]
            self._matching = (key, found)
        return self._matching[1]

    # --- helpers --------------------------------------------------------------------------

    def _require(self) -> None:
        if self._collection is None:
            raise IndexUnusable("the index is not open")

    def _call(self, method: str, **kwargs: Any) -> Any:
        self._require()
        try:
            return getattr(self._collection, method)(**kwargs)
        except LibraryError:
            raise
        except Exception as exc:  # Chroma's errors carry no common base worth trusting here
            raise IndexUnusable(f"the index failed during {method} ({exc})") from exc

    def _state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.folder / STATE_FILE).read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError, OSError):
            return {}
        if not isinstance(data, dict) or data.get("format_version") != STATE_VERSION:
            return {}
        return data

    def _version(self) -> tuple[int, Any]:
        """The generation and epoch `state.json` holds now: they move with every change any
        process makes to this index, and when it is built anew."""
        state = self._state()
        return int(state.get("generation", 0)), state.get("epoch")

    def _write_state(self, values: dict[str, Any]) -> None:
        atomic_write_json(self.folder / STATE_FILE, {"format_version": STATE_VERSION, **values})

    def _bump(self) -> None:
        state = self._state()
        self._generation = int(state.get("generation", 0)) + 1
        self._write_state({**state, "generation": self._generation})


def _evict_embedded(client: Any, path: Path) -> None:
    """Close the client and drop Chroma's cached in-process system for `path`, so the next
    client reads the files afresh instead of reusing what this process loaded earlier."""
    from chromadb.api.shared_system_client import SharedSystemClient

    if client is not None:
        with contextlib.suppress(Exception):
            client.close()
    system = SharedSystemClient._identifier_to_system.pop(str(path), None)
    SharedSystemClient._identifier_to_refcount.pop(str(path), None)
    if system is not None:
        with contextlib.suppress(Exception):
            system.stop()


_SHARED: dict[tuple[Path, str | None, str], AdapterIndex] = {}
_SHARED_LOCK = threading.Lock()


def shared_index(folder: Path, chroma_url: str | None, library_id: str) -> AdapterIndex:
    """One `AdapterIndex` per index per process: Chroma caches one system per path, so two
    objects on the same files would reload each other's client from under them."""
    key = (folder.resolve(), chroma_url, library_id)
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = AdapterIndex(folder, chroma_url, library_id)
        return _SHARED[key]
