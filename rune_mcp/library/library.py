"""`Library`: the store, the index and the embedder behind one object, safe across processes.

Every change holds the library lock (`<RUNE_HOME>/library.lock`): one writer at a time. A
writer marks the index dirty before touching anything and clears the mark when store and
index agree again, so if it is killed in between, the next process to use the index repairs
it from the manifests (the index is derived data). Readers need no lock to list or read
adapters; before querying an embedded index they reload it when another process changed it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypedDict, TypeVar, Unpack

from rune_mcp.config import Settings
from rune_mcp.errors import (
    AdapterNotFoundError,
    ModelError,
    RuneError,
    UsageError,
)
from rune_mcp.fsutil import locked
from rune_mcp.library.embed import Embedder, get_embedder
from rune_mcp.library.index import AdapterIndex, IndexEntry, IndexUnusable, shared_index
from rune_mcp.library.lineage import descendants
from rune_mcp.library.manifest import SELF_PROBES
from rune_mcp.library.preference import (
    MERGES_WHERE,
    floor,
    may_give_way,
    nearest_first,
    preferred,
    put_first,
    stands_in_for,
)
from rune_mcp.library.records import (
    AdapterDamaged,
    AdapterRecord,
    Damaged,
    Inventory,
    Problem,
    Recall,
    RecallHit,
)
from rune_mcp.library.selfprobes import SelfProbe
from rune_mcp.library.store import AdapterStore

log = logging.getLogger(__name__)
Answer = TypeVar("Answer")


class RecallOptions(TypedDict, total=False):
    """The keyword options of `Library.recall` (and of `recall_checked`, which adds `digests`)."""

    k: int | None
    project: str | None
    min_similarity: float | None
    base_fingerprint: str | None

ADAPTERS_DIR = "adapters"
INDEX_DIR = "index"
LOCK_FILE = "library.lock"
_EMBED_BATCH = 64
# A recall that meets damaged adapters asks the index for more, up to this many beyond `k`.
_MAX_SKIPPED = 16

# Aliases: inside the class, `list` is the method `Library.list`.
Vector = list[float]
Vectors = list[list[float]]
Records = list[AdapterRecord]
Rows = list[tuple[str, float]]
Hits = list[RecallHit]
Skipped = list[Damaged]
Problems = list[Problem]
Ids = list[str]
Probes = list[SelfProbe]


class Library:
    """The adapter library under `settings.home`. Open with `Library.open(settings)`."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self.store = AdapterStore(settings.home / ADAPTERS_DIR)
        self.store.check_format()
        self.lock_path = settings.home / LOCK_FILE
        self._embedder = embedder
        self._index: AdapterIndex | None = None
        self._base_fingerprint: str | None = None

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder | None = None) -> Library:
        """Open (or start) the library; cheap: the index and the embedder load on first use.

        `embedder` replaces the configured embedding model (tests and benchmarks use it).
        Raises LibraryError when the library was written by a newer Rune.
        """
        return cls(settings, embedder)

    def close(self) -> None:
        """Forget this object's handle on the index (the process keeps one shared client)."""
        self._index = None

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder(self.settings)
        return self._embedder

    @property
    def root(self) -> Path:
        """The folder holding one sub-folder per adapter."""
        return self.store.root

    def base_fingerprint(self) -> str:
        """The fingerprint of the configured base model (recall only returns its adapters)."""
        if self._base_fingerprint is None:
            self._base_fingerprint = current_base_fingerprint(self.settings)
        return self._base_fingerprint

    # --- writing ------------------------------------------------------------------------

    def add(self, peft_dir: Path, gguf_file: Path | None, meta: dict[str, Any],
            self_probes: Path | None = None) -> AdapterRecord:
        """Store an adapter and index it; adding the same content again returns the same record.

        `peft_dir` holds `adapter_config.json` + `adapter_model.safetensors` (as PEFT's
        `save_pretrained` writes them), `gguf_file` the llama.cpp LoRA (or None), and `meta`
        the keys base_fingerprint and task (required), method, rank, alpha, target_modules,
        agent, session_id, project, trajectory_id, embed_text, lesson_count, training (dict),
        parents (adapter ids). Unknown keys are kept under the manifest's `extra`.
        `self_probes` is the session's held-out lessons (`self_probes.json`), or None.
        """
        return self._add(peft_dir, gguf_file, meta, None, self_probes)[0]

    def add_verified(
        self,
        peft_dir: Path,
        gguf_file: Path | None,
        meta: dict[str, Any],
        created_at: str | None,
        self_probes: Path | None = None,
    ) -> tuple[AdapterRecord, bool]:
        """Store an adapter whose files and metadata came from elsewhere (an imported archive,
        checked against its digests by the caller), keeping its original creation time.

        The same write-once, atomic, locked path as `add`; returns the record and whether it
        is new (False: the intact adapter was already present and nothing changed).
        """
        return self._add(peft_dir, gguf_file, meta, created_at, self_probes)

    def _add(
        self, peft_dir: Path, gguf_file: Path | None, meta: dict[str, Any], created_at: str | None,
        self_probes: Path | None,
    ) -> tuple[AdapterRecord, bool]:
        with self._writing() as index:
            record, created = self.store.write(peft_dir, gguf_file, meta, created_at, self_probes)
            if created or not index.has(record.adapter_id):
                index.upsert([self._entry(record, self._embed([record.embed_text])[0])])
        if created:
            log.info("stored adapter %s (%s)", record.adapter_id[:12], record.task[:60])
        return record, created

    def remove(self, adapter_id: str) -> str:
        """Delete an adapter (and every adapter composed from it, as `remove_cascade`);
        return its full id."""
        return self.remove_cascade(adapter_id)[0]

    def remove_cascade(self, adapter_id: str) -> Ids:
        """Delete an adapter's files and its index record together, and every adapter
        descended from it (merges of it, merges of those, ...); return the ids removed, the
        adapter's own first.

        `adapter_id` may be a unique prefix of 6+ characters. AdapterNotFoundError otherwise.
        """
        with self._writing() as index:
            full = self.store.resolve(adapter_id)
            doomed = [full, *descendants(self.store.records(), [full])]
            self._delete(index, doomed)
        log.info("removed adapter %s and %d composed from it", full[:12], len(doomed) - 1)
        return doomed

    def forget_session(self, session_id: str) -> Ids:
        """Remove every adapter learned from `session_id`, and every adapter descended from
        one of them; return their ids ([] if none)."""
        with self._writing() as index:
            records = list(self.store.records())
            learned = [r.adapter_id for r in records if r.session_id == session_id]
            doomed = [*learned, *descendants(records, learned)]
            self._delete(index, doomed)
        return doomed

    def descendants(self, adapter_ids: Ids) -> Ids:
        """Ids of every adapter composed, at any depth, from one of `adapter_ids`: what
        removing them removes too."""
        return descendants(self.store.records(), adapter_ids)

    def _delete(self, index: AdapterIndex, doomed: Ids) -> None:
        """Delete adapters (caller holds the lock); each is hidden at once, before the index
        forgets it."""
        for adapter_id in doomed:
            self.store.delete(adapter_id)
        if doomed:
            index.delete(doomed)

    def reindex(self) -> int:
        """Rebuild the index from the manifests; return the number of adapters indexed."""
        with locked(self.lock_path):
            self.store.sweep()
            index = self._open_index()
            index.mark_dirty()
            index.reset()
            count = self._fill(index, list(self.store.records()))
            index.mark_clean()
        return count

    # --- reading ------------------------------------------------------------------------

    def get(self, adapter_id: str) -> AdapterRecord:
        """The adapter with this id (or unique 6+ character prefix), its files verified.

        AdapterNotFoundError names how to find ids; IntegrityError when a file was changed.
        """
        return self.store.read(self.store.resolve(adapter_id)).verify()

    def list(self, project: str | None = None, limit: int | None = None) -> Records:
        """Adapters newest first (manifests only, files not verified), optionally of a project
        (its path or folder name)."""
        records = [
            r for r in self.store.records() if project is None or _project_matches(r, project)
        ]
        records.sort(key=lambda r: (r.created_at, r.adapter_id), reverse=True)
        return records if limit is None else records[: max(0, limit)]

    def inventory(self, project: str | None = None, limit: int | None = None) -> Inventory:
        """The usable adapters as `list` gives them, less those whose files are missing,
        linked, of the wrong size or joined by stray files, plus every damaged adapter (of
        any project: a damaged manifest cannot be trusted to say which). Files are `lstat`ed,
        not hashed."""
        records, damaged = self.store.scan()
        records = [r for r in records if project is None or _project_matches(r, project)]
        records.sort(key=lambda r: (r.created_at, r.adapter_id), reverse=True)
        return Inventory(records if limit is None else records[: max(0, limit)], damaged)

    def find_by_trajectory(self, trajectory_id: str) -> AdapterRecord | None:
        """The newest adapter learned from this trajectory, or None."""
        matches = [r for r in self.list() if r.trajectory_id == trajectory_id]
        return matches[0] if matches else None

    def recall(self, task: str, **options: Unpack[RecallOptions]) -> Hits:
        """Adapters whose task is most similar to `task`, best first, at most `k`.

        Only adapters for the current base model (or `base_fingerprint`) and, when given, for
        `project` (path or folder name) are considered; hits below `min_similarity` (default:
        the `recall_min_similarity` setting) are dropped, so an unrelated task gets []. The
        records' files are verified when their paths are first used. Damaged adapters are
        left out (`recall_checked`, which takes the same options, names them).
        """
        return self.recall_checked(task, **options).hits

    def recall_checked(
        self,
        task: str,
        k: int | None = None,
        project: str | None = None,
        min_similarity: float | None = None,
        base_fingerprint: str | None = None,
        digests: bool = False,
    ) -> Recall:
        """`recall`, with the damaged adapters it met and skipped: the next hits take their
        places. Each hit's folder is checked as `inventory` checks it, and with `digests`
        its files are hashed too (the hits are then verified, ready to load)."""
        if not task or not task.strip():
            raise UsageError("recall needs a task text.")
        k = self.settings.recall_k if k is None else k
        if not 1 <= k <= 100:
            raise UsageError(f"k must be between 1 and 100, got {k}.")
        threshold = (
            self.settings.recall_min_similarity if min_similarity is None else min_similarity
        )
        if self.store.is_empty():
            return Recall([], [])  # an empty library is not an error, and needs no model
        fingerprint = base_fingerprint or self.base_fingerprint()
        vector = self._embed([task])[0]
        ask = k
        while True:
            rows = self._query(vector, ask, fingerprint, project)
            hits, skipped = self._usable(rows, threshold, k, digests)
            exhausted = len(rows) < ask or not rows or rows[-1][1] < threshold
            if len(hits) >= k or not skipped or exhausted or ask >= k + _MAX_SKIPPED:
                return self._prefer_evolved(Recall(hits, skipped), vector, threshold, k, digests)
            ask = min(ask + k - len(hits), k + _MAX_SKIPPED)  # more rows for the places lost

    def _usable(self, rows: Rows, threshold: float, k: int, digests: bool) -> tuple[Hits, Skipped]:
        """The first `k` hits of `rows` above `threshold` that pass their checks, and the
        damaged ones met before them."""
        hits: Hits = []
        skipped: Skipped = []
        for adapter_id, similarity in rows:
            if similarity < threshold or len(hits) >= k:
                break
            try:
                record = self.store.read(adapter_id)
                hits.append(RecallHit(record.verify() if digests else record.check(), similarity))
            except AdapterNotFoundError:
                continue  # removed by another process after the index answered
            except AdapterDamaged as exc:
                log.warning("recall skips damaged adapter %s: %s", adapter_id[:12], exc)
                skipped.append(exc.damage)
        return hits, skipped

    def _prefer_evolved(
        self, found: Recall, vector: Vector, threshold: float, k: int, digests: bool
    ) -> Recall:
        """`found` with an evolved merge first when one may stand in for its best hit, as
        `rune_mcp.library.preference` says; unchanged otherwise. A damaged merge is passed
        over for the next and named among the skipped."""
        if not found.hits or not may_give_way(found.hits[0].record):
            return found
        top = found.hits[0]
        least = floor(top, self.settings.recall_fitness_margin, threshold)
        if least is None:
            return found
        merges = self._ask(lambda index: index.matching(MERGES_WHERE))
        rows = nearest_first(vector, str(top.record.project), merges)
        skipped = list(found.skipped)
        for adapter_id, similarity in rows:
            if similarity < least:
                break  # most similar first: none of the rest is near enough either
            try:
                record = self.store.read(adapter_id)
                if not stands_in_for(record, top.record):
                    continue
                checked = record.verify() if digests else record.check()
            except AdapterNotFoundError:
                continue  # removed by another process after the index answered
            except AdapterDamaged as exc:
                log.warning("recall skips damaged adapter %s: %s", adapter_id[:12], exc)
                if exc.damage not in skipped:
                    skipped.append(exc.damage)
                continue
            margin = self.settings.recall_fitness_margin
            first = preferred(RecallHit(checked, similarity), top, margin)
            return Recall(put_first(found.hits, first, k), skipped)
        return Recall(found.hits, skipped)

    def verify(self) -> Problems:
        """Check every adapter's files and the index against the manifests; [] means clean.

        Torn or tampered adapters, stray files (a pickle, say) and index records that do not
        match the adapters present are all reported; nothing is loaded or changed.
        """
        problems = []
        for adapter_id in self.store.ids():
            for text in self.store.problems(adapter_id):
                problems.append(Problem(adapter_id, self.store.folder(adapter_id), text))
        problems += self._index_problems()
        return problems

    def self_probes(self, adapter_id: str) -> Probes:
        """The held-out lessons stored with an adapter (its files verified first); [] for an
        adapter that has none (a merge, or one remembered before self-probes existed)."""
        from rune_mcp.library.selfprobes import read_self_probes

        record = self.get(adapter_id)
        if SELF_PROBES not in record.manifest["files"]:
            return []
        return read_self_probes(record.path / SELF_PROBES)

    def index_ids(self) -> set[str]:
        """Ids in the index (after any pending repair): for checks and tests."""
        return self._reading_index().ids()

    # --- internals ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _writing(self) -> Iterator[AdapterIndex]:
        """Hold the library lock with a consistent index; mark it dirty while changing it."""
        with locked(self.lock_path):
            self.store.check_format()
            self.store.ensure_library_file()
            self.store.sweep()  # nobody else writes while we hold the lock
            index = self._open_index()
            if index.is_dirty():
                self._repair(index)
            index.mark_dirty()
            yield index
            index.mark_clean()

    def _open_index(self) -> AdapterIndex:
        """The index, opened (under the lock) and usable; a broken one is rebuilt."""
        if self._index is None:
            self._index = shared_index(
                self.settings.home / INDEX_DIR,
                self.settings.chroma_url,
                self.store.ensure_library_file(),
            )
        index = self._index
        try:
            index.open(self.embedder.name, self.embedder.dim)
            index.refresh()
        except IndexUnusable as exc:
            log.warning("rebuilding the index: %s", exc)
            index.destroy()
            index.open(self.embedder.name, self.embedder.dim)
            index.mark_dirty()
        return index

    def _reading_index(self) -> AdapterIndex:
        """The index for a query: repaired if a writer died, reloaded if another process wrote."""
        index = self._index
        if index is None or not index.is_open() or index.stale() or index.is_dirty():
            with locked(self.lock_path):
                self.store.ensure_library_file()
                index = self._open_index()
                if index.is_dirty() or index.count() != len(self.store.ids()):
                    self._repair(index)
        return index

    def _repair(self, index: AdapterIndex) -> None:
        """Make the index hold exactly the adapters present (caller holds the lock).

        A damaged adapter keeps the record it has: a recall that meets it then says it was
        skipped, instead of passing over it in silence.
        """
        index.mark_dirty()
        present = {r.adapter_id: r for r in self.store.records()}
        indexed = index.ids()
        extra = sorted(indexed - set(self.store.ids()))
        missing = [present[i] for i in sorted(set(present) - indexed)]
        if extra:
            index.delete(extra)
        added = self._fill(index, missing)
        index.mark_clean()
        if extra or added:
            log.info("repaired the index: %d added, %d removed", added, len(extra))

    def _fill(self, index: AdapterIndex, records: Records) -> int:
        for start in range(0, len(records), _EMBED_BATCH):
            batch = records[start : start + _EMBED_BATCH]
            vectors = self._embed([r.embed_text for r in batch])
            index.upsert([self._entry(r, v) for r, v in zip(batch, vectors, strict=True)])
        return len(records)

    def _query(self, vector: Vector, k: int, fingerprint: str, project: str | None) -> Rows:
        where = _where(fingerprint, project)

        def accept(meta: dict[str, Any]) -> bool:
            return meta.get("base_fingerprint") == fingerprint and (
                not project or project in (meta.get("project"), meta.get("project_name"))
            )

        return self._ask(lambda index: index.query(vector, k, where, accept, narrow=bool(project)))

    def _ask(self, question: Callable[[AdapterIndex], Answer]) -> Answer:
        """`question` put to the index, once more after reloading it if it was unusable."""
        index = self._reading_index()
        try:
            return question(index)
        except IndexUnusable:
            # Another process changed the files under our feet: reload once and retry.
            with locked(self.lock_path):
                index.close()
                index = self._open_index()
                self._repair(index)
            return question(index)

    def _index_problems(self) -> Problems:
        place = self.settings.home / INDEX_DIR
        if not self.store.ids() and self._index is None and not place.exists():
            return []
        try:
            indexed = self._reading_index().ids()
        except RuneError as exc:
            return [Problem(None, place, f"index unusable: {exc}", "index")]
        present = set(self.store.ids())
        usable = {r.adapter_id for r in self.store.records()}  # reindexing cannot add the rest
        problems = [
            Problem(i, self.store.folder(i), "adapter missing from the index; run "
                    "`rune library reindex`", "index") for i in sorted((present & usable) - indexed)
        ]
        problems += [
            Problem(i, place, "index record for an adapter that is not present; run "
                    "`rune library reindex`", "index") for i in sorted(indexed - present)
        ]
        return problems

    def _embed(self, texts: Ids) -> Vectors:
        return self.embedder.embed(texts)

    @staticmethod
    def _entry(record: AdapterRecord, vector: Vector) -> IndexEntry:
        return IndexEntry(
            adapter_id=record.adapter_id,
            embedding=vector,
            metadata={
                "project": record.project or "",
                "project_name": _project_name(record.project),
                "agent": record.agent or "",
                "session_id": record.session_id or "",
                "trajectory_id": record.trajectory_id or "",
                "base_fingerprint": record.base_fingerprint,
                "created_at": record.created_at,
            },
        )


_FINGERPRINTS: dict[tuple[Path | None, Path], str] = {}


def current_base_fingerprint(settings: Settings) -> str:
    """SHA-256 of the configured base GGUF (what `BaseModelInfo.fingerprint` holds), memoized
    per process; unlike `resolve_base` it does not parse the GGUF's metadata, which takes
    seconds and recall does not need."""
    from rune_mcp.basemodel import embedded_gguf_path, file_sha256

    key = (settings.base_model, settings.cache_dir)
    if key not in _FINGERPRINTS:
        path = (
            embedded_gguf_path() if settings.base_model is None
            else settings.base_model.expanduser()
        )
        if not path.is_file():
            raise ModelError(f"base model {path} does not exist; fix RUNE_BASE_MODEL.")
        _FINGERPRINTS[key] = file_sha256(path, settings.cache_dir)
    return _FINGERPRINTS[key]


def _project_name(project: str | None) -> str:
    """`/home/me/acme-api/` -> `acme-api`."""
    if not project:
        return ""
    return project.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def _project_matches(record: AdapterRecord, project: str) -> bool:
    return project in (record.project, _project_name(record.project))


def _where(fingerprint: str, project: str | None) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = [{"base_fingerprint": fingerprint}]
    if project:
        clauses.append({"$or": [{"project": project}, {"project_name": project}]})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
