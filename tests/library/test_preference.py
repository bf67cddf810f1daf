"""Recall's fitness preference: an evolved merge holding the best single-session hit goes first
when it is within `recall_fitness_margin` of it, and only then (rune_mcp/library/preference.py).

Real adapters, the real embedder and real Chroma (embedded, and a server where marked); the
merges are stored with the manifest `rune evolve` writes (`merge_meta`), so the rule is tested
on what is actually recorded. Margins are set from the similarities measured in each test, so
the tests hold whatever the embedder gives.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from helpers.tiny import FAKE_BASE, TINY_TARGETS, adapter_meta, adapter_variant

from rune_mcp.cli import main
from rune_mcp.library import AdapterRecord, Library
from rune_mcp.library.embed import Embedder
from rune_mcp.library.lineage import Lineage, merge_meta
from rune_mcp.library.records import RecallHit

TASKS = [
    "fix the flaky postgres connection timeout in the integration tests",
    "batch the inserts of the CSV import of orders",
    "cache the exchange rates for an hour",
]
# Written like the first session's task: that adapter is the most similar, the merge next.
QUERY = "the integration tests time out connecting to postgres"


def _singles(library: Library, variants: list[Path], base: str = FAKE_BASE) -> list[AdapterRecord]:
    return [library.add(variants[i], None, adapter_meta(i, task=task, base=base))
            for i, task in enumerate(TASKS)]


def _merge(library: Library, folder: Path, parents: Sequence[AdapterRecord],
           weights: Sequence[float], fitness: float | None = 0.61) -> AdapterRecord:
    """A merge stored as `rune evolve` stores one (`fitness` None: as `rune adapters merge`)."""
    lineage = Lineage(method="cat", weights=list(weights), fitness=fitness)
    meta = merge_meta(parents, lineage, 12, 24.0, TINY_TARGETS, 1.0)
    return library.add(folder, None, meta)


def _with_margin(library: Library, embedder: Embedder, margin: float) -> Library:
    return Library.open(library.settings.with_overrides(recall_fitness_margin=margin),
                        embedder=embedder)


def _recall(library: Library, k: int = 5, digests: bool = False) -> list[RecallHit]:
    return library.recall_checked(QUERY, k=k, base_fingerprint=FAKE_BASE, min_similarity=-1,
                                  digests=digests).hits


def _ids(hits: Sequence[RecallHit]) -> list[str]:
    return [h.record.adapter_id for h in hits]


def _similarity(hits: Sequence[RecallHit], record: AdapterRecord) -> float:
    return next(h.similarity for h in hits if h.record.adapter_id == record.adapter_id)


def test_an_evolved_merge_holding_the_best_hit_goes_first_within_the_margin(
    index_mode: str, library: Library, variants: list[Path], real_embedder: Embedder
) -> None:
    best, second, third = _singles(library, variants)
    off = _with_margin(library, real_embedder, 0.0)
    assert _recall(off)[0].record.adapter_id == best.adapter_id
    evolved = _merge(library, variants[3], [best, second, third], [0.9, 0.7, 0.0])
    pure = _recall(off)
    assert pure[0].record.adapter_id == best.adapter_id  # found by similarity alone
    gap = pure[0].similarity - _similarity(pure, evolved)
    assert gap > 0.02, "the query must read more like the first task than like the merge"

    within = _with_margin(library, real_embedder, gap + 0.01)
    hits = _recall(within)
    assert _ids(hits)[:2] == [evolved.adapter_id, best.adapter_id]
    assert hits[0].similarity == pytest.approx(_similarity(pure, evolved), abs=1e-4)
    reason = hits[0].reason
    assert reason is not None and best.adapter_id[:12] in reason and "1 more adapter," in reason
    assert "fitness 0.61" in reason and f"within {gap + 0.01:g}" in reason
    assert all(h.reason is None for h in hits[1:]) and len(hits) == len(pure)
    assert hits[0].to_dict()["reason"] == reason
    # What `adapter="auto"` asks for: one hit, its files hashed.
    auto = _recall(within, k=1, digests=True)
    assert _ids(auto) == [evolved.adapter_id] and auto[0].record.verified

    outside = _with_margin(library, real_embedder, gap - 0.01)
    assert _ids(_recall(outside)) == _ids(pure)
    assert all(h.reason is None for h in _recall(outside))


def test_a_merge_not_holding_the_best_hit_or_not_evolved_is_not_preferred(
    library: Library, variants: list[Path], real_embedder: Embedder, adapter_src: Path,
    tmp_path: Path,
) -> None:
    best, second, third = _singles(library, variants)
    wide = _with_margin(library, real_embedder, 1.0)  # every merge is within this margin
    foreign = library.add(adapter_variant(adapter_src, tmp_path / "foreign", seed=6), None,
                          adapter_meta(7, task=TASKS[1], project="/srv/other-repo"))

    def passed_over(merge: AdapterRecord) -> None:
        hits = _recall(wide, k=10)
        assert hits[0].record.adapter_id == best.adapter_id
        assert merge.adapter_id in _ids(hits) and all(h.reason is None for h in hits)

    passed_over(_merge(library, variants[3], [second, third], [0.8, 0.6]))  # not a parent
    passed_over(_merge(library, variants[4], [best, second, third], [0.0, 0.8, 0.6]))  # left out
    # Made by `rune adapters merge`: no fitness recorded. (Other files than the merges
    # above: a merge's id is its files, parents and method, not its lineage.)
    passed_over(_merge(library, adapter_variant(adapter_src, tmp_path / "chosen", seed=5),
                       [best, second, third], [0.9, 0.7, 0.5], fitness=None))
    across = _merge(library, adapter_variant(adapter_src, tmp_path / "across", seed=7),
                    [best, foreign], [0.9, 0.7])
    assert across.project is None  # its parents' projects differ
    passed_over(across)


def test_a_margin_of_0_restores_similarity_order(
    library: Library, variants: list[Path], real_embedder: Embedder
) -> None:
    best, second, third = _singles(library, variants)
    evolved = _merge(library, variants[3], [best, second, third], [0.9, 0.7, 0.5])
    assert _recall(_with_margin(library, real_embedder, 1.0))[0].record.adapter_id == (
        evolved.adapter_id)
    hits = _recall(_with_margin(library, real_embedder, 0.0))
    assert hits[0].record.adapter_id == best.adapter_id
    assert [h.similarity for h in hits] == sorted((h.similarity for h in hits), reverse=True)
    assert all(h.reason is None for h in hits)


def test_a_merge_stored_or_removed_after_a_recall_counts_in_the_next(
    library: Library, variants: list[Path], real_embedder: Embedder
) -> None:
    best, second, third = _singles(library, variants)
    wide = _with_margin(library, real_embedder, 1.0)
    assert _recall(wide, k=1)[0].record.adapter_id == best.adapter_id
    evolved = _merge(library, variants[3], [best, second, third], [0.9, 0.7, 0.5])
    assert _recall(wide, k=1)[0].record.adapter_id == evolved.adapter_id
    library.remove(evolved.adapter_id)
    assert _recall(wide, k=1)[0].record.adapter_id == best.adapter_id


def test_a_damaged_evolved_merge_is_skipped_and_named(
    library: Library, variants: list[Path], real_embedder: Embedder
) -> None:
    best, second, third = _singles(library, variants)
    evolved = _merge(library, variants[3], [best, second, third], [0.9, 0.7, 0.5])
    (evolved.path / "stray.pkl").write_bytes(b"not part of the adapter")
    found = _with_margin(library, real_embedder, 1.0).recall_checked(
        QUERY, k=1, base_fingerprint=FAKE_BASE, min_similarity=-1)
    assert _ids(found.hits) == [best.adapter_id]
    assert [d.adapter_id for d in found.skipped] == [evolved.adapter_id]


def test_rune_recall_says_why_the_merge_is_first(
    library: Library, variants: list[Path], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    best, second, third = _singles(library, variants, base=library.base_fingerprint())
    evolved = _merge(library, variants[3], [best, second, third], [0.9, 0.7, 0.5])
    monkeypatch.setenv("RUNE_RECALL_FITNESS_MARGIN", "1")
    assert main(["recall", QUERY, "--min-similarity", "-1", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["adapter_id"] == evolved.adapter_id and "evolved merge" in rows[0]["reason"]
    assert rows[1]["reason"] is None
    assert main(["recall", QUERY, "--min-similarity", "-1"]) == 0
    out = capsys.readouterr().out
    assert f"{evolved.adapter_id[:12]} is first: evolved merge holding {best.adapter_id[:12]}" in out
