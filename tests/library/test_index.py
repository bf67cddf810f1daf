"""Recall and the index, run against the embedded index and a real `chroma run` server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers.tiny import FAKE_BASE, adapter_meta

from rune_mcp.config import Settings
from rune_mcp.errors import UsageError
from rune_mcp.library import Library
from rune_mcp.library.embed import Embedder

TASKS = [
    "fix the flaky postgres connection timeout in the integration tests",
    "add a dark mode toggle to the React settings page",
    "speed up the image thumbnail resize pipeline",
    "write a CSV export endpoint for the orders API",
    "fix the login redirect loop after OAuth callback",
]


def _fill(library: Library, variants: list[Path], **meta: str) -> list[str]:
    return [
        library.add(path, None, adapter_meta(i, task=task, **meta)).adapter_id
        for i, (path, task) in enumerate(zip(variants, TASKS, strict=True))
    ]


def test_recall_ranks_the_matching_task_first(
    index_mode: str, library: Library, variants: list[Path]
) -> None:
    ids = _fill(library, variants)
    hits = library.recall(
        "the database connection times out during integration tests",
        k=3, min_similarity=0.0, base_fingerprint=FAKE_BASE,
    )
    assert hits[0].record.adapter_id == ids[0]
    assert 0.4 < hits[0].similarity <= 1.0
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    assert len(hits) <= 3
    exact = library.recall(TASKS[3], k=1, min_similarity=0.99, base_fingerprint=FAKE_BASE)
    assert [h.record.adapter_id for h in exact] == [ids[3]]
    assert exact[0].record.peft_dir.is_dir()  # verified on use


def test_recall_threshold_base_and_project_filters(
    index_mode: str, library: Library, variants: list[Path], adapter_src: Path
) -> None:
    _fill(library, variants)
    other = library.add(adapter_src, None, adapter_meta(
        50, task=TASKS[0], project="/srv/other-repo", trajectory_id="e" * 64))
    unrelated = "bake a sourdough loaf with a crispy crust"
    assert library.recall(unrelated, min_similarity=0.5, base_fingerprint=FAKE_BASE) == []
    assert library.recall(TASKS[0], base_fingerprint="f" * 64, min_similarity=-1) == []
    in_other = library.recall(TASKS[0], project="other-repo", base_fingerprint=FAKE_BASE)
    assert [h.record.adapter_id for h in in_other] == [other.adapter_id]
    by_path = library.recall(TASKS[0], project="/srv/other-repo", base_fingerprint=FAKE_BASE)
    assert [h.record.adapter_id for h in by_path] == [other.adapter_id]
    tidewater = library.recall(TASKS[0], project="tidewater", k=10, base_fingerprint=FAKE_BASE,
                               min_similarity=-1)
    assert other.adapter_id not in {h.record.adapter_id for h in tidewater}
    assert len(tidewater) == 5


def test_recall_uses_the_current_base_model_by_default(
    index_mode: str, library: Library, adapter_src: Path
) -> None:
    current = library.base_fingerprint()
    mine = library.add(adapter_src, None, adapter_meta(60, task=TASKS[2], base=current))
    library.add(adapter_src, None, adapter_meta(61, task=TASKS[2]))  # another base
    assert [h.record.adapter_id for h in library.recall(TASKS[2], k=5)] == [mine.adapter_id]


def test_empty_library_recalls_nothing(index_mode: str, library: Library) -> None:
    assert library.recall("anything at all") == []
    assert library.verify() == []
    with pytest.raises(UsageError):
        library.recall("   ")


def test_remove_drops_files_and_index_record_together(
    index_mode: str, library: Library, variants: list[Path]
) -> None:
    ids = _fill(library, variants)
    library.remove(ids[0])
    hits = library.recall(TASKS[0], k=5, min_similarity=-1, base_fingerprint=FAKE_BASE)
    assert ids[0] not in {h.record.adapter_id for h in hits}
    assert library.index_ids() == set(ids[1:]) == set(library.store.ids())


def test_deleted_index_is_rebuilt_automatically(
    index_mode: str, settings: Settings, real_embedder: Embedder, variants: list[Path]
) -> None:
    library = Library.open(settings, embedder=real_embedder)
    ids = _fill(library, variants)
    if index_mode == "server":
        index = library._open_index()
        index._client.delete_collection(index.collection_name)
        index.close()
    else:
        library._open_index().close()
        shutil.rmtree(settings.home / "index")
    fresh = Library.open(settings, embedder=real_embedder)
    hits = fresh.recall(TASKS[4], k=1, base_fingerprint=FAKE_BASE)
    assert [h.record.adapter_id for h in hits] == [ids[4]]
    assert fresh.index_ids() == set(ids) and fresh.verify() == []


def test_corrupt_embedded_index_is_rebuilt(
    settings: Settings, real_embedder: Embedder, variants: list[Path]
) -> None:
    library = Library.open(settings, embedder=real_embedder)
    ids = _fill(library, variants)
    library._open_index().close()
    for path in (settings.home / "index" / "chroma").rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage" * 64)
    fresh = Library.open(settings, embedder=real_embedder)
    hits = fresh.recall(TASKS[1], k=1, base_fingerprint=FAKE_BASE)
    assert [h.record.adapter_id for h in hits] == [ids[1]]
    assert fresh.verify() == []


def test_index_missing_a_record_is_reported_then_repaired_by_reindex(
    index_mode: str, library: Library, variants: list[Path]
) -> None:
    ids = _fill(library, variants)
    index = library._open_index()
    index.delete([ids[2]])
    problems = library.verify()
    assert [(p.adapter_id, "reindex" in p.problem) for p in problems] == [(ids[2], True)]
    assert library.reindex() == 5
    assert library.verify() == [] and library.index_ids() == set(ids)


def test_index_built_by_another_embedder_is_rebuilt(
    settings: Settings, real_embedder: Embedder, variants: list[Path]
) -> None:
    from helpers.embedding import TableEmbedder

    library = Library.open(settings, embedder=real_embedder)
    ids = _fill(library, variants)
    table = TableEmbedder.build(real_embedder, TASKS)
    renamed = TableEmbedder("another/model", table.dim, table.table)
    other = Library.open(settings, embedder=renamed)
    assert other.index_ids() == set(ids)
    state = (settings.home / "index" / "state.json").read_text()
    assert "another/model" in state


def test_selective_filter_falls_back_to_chroma_filtering(
    library: Library, adapter_src: Path
) -> None:
    for n in range(24):  # the nearest 20 are all in another project
        library.add(adapter_src, None, adapter_meta(100 + n, task=TASKS[0]))
    lone = library.add(adapter_src, None, adapter_meta(
        200, task=TASKS[2], project="/srv/lonely"))
    hits = library.recall(TASKS[0], k=1, project="lonely", min_similarity=-1,
                          base_fingerprint=FAKE_BASE)
    assert [h.record.adapter_id for h in hits] == [lone.adapter_id]
    assert len(library.recall(TASKS[0], k=30, min_similarity=-1, base_fingerprint=FAKE_BASE)) == 25


def test_query_asks_for_k_first_then_widens_past_other_bases(
    library: Library, adapter_src: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(3):  # the nearest records belong to another base model
        library.add(adapter_src, None, adapter_meta(300 + n, task=TASKS[0], base="c" * 64))
    mine = library.add(adapter_src, None, adapter_meta(310, task=TASKS[0] + " again"))
    index = library._reading_index()
    calls: list[dict[str, object]] = []
    real = index._call

    def spy(method: str, **kwargs: object) -> object:
        calls.append({"method": method, "n": kwargs.get("n_results"), "where": "where" in kwargs})
        return real(method, **kwargs)

    monkeypatch.setattr(index, "_call", spy)
    hits = library.recall(TASKS[0], k=1, min_similarity=-1, base_fingerprint=FAKE_BASE)
    assert [h.record.adapter_id for h in hits] == [mine.adapter_id]
    queries = [c for c in calls if c["method"] == "query"]
    assert [(c["n"], c["where"]) for c in queries] == [(1, False), (20, False)]
    calls.clear()
    library.recall(TASKS[0], k=1, min_similarity=-1, base_fingerprint="c" * 64)
    assert [(c["n"], c["where"]) for c in calls if c["method"] == "query"] == [(1, False)]


def test_unreachable_chroma_server_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, real_embedder: Embedder, adapter_src: Path
) -> None:
    import socket

    from rune_mcp.config import load_settings
    from rune_mcp.errors import LibraryError

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("RUNE_CHROMA_URL", f"http://127.0.0.1:{port}")
    library = Library.open(load_settings(), embedder=real_embedder)
    with pytest.raises(LibraryError, match="Chroma server"):
        library.add(adapter_src, None, adapter_meta(300))
    assert library.list() == []  # nothing half-stored
