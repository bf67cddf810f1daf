"""Composition: stored merges (every PEFT method, with lineage), run-time sums on llama.cpp and
transformers equal to the stored `cat` merge, the vLLM materialisation, project compositions,
refusals, and forgetting that cascades through generations of merges.

The base is a tiny random llama GGUF in f32 (tests/helpers/compose.py), so every step is the
real one: PEFT merges, the GGUF export, llama.cpp and PEFT apply the adapters. f32 because on a
quantized base llama.cpp rounds activations to 8 bits before each product, and a last-bit
difference between two equal sums then shows (docs/evolution.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TEST_CACHE
from helpers.compose import IDS, PROJECT, store_adapter, tiny_stack
from helpers.tiny import FAKE_BASE, PEFT_WARNING

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.cli import main
from rune_mcp.config import Settings
from rune_mcp.distill.merge import merge_adapters
from rune_mcp.errors import IntegrityError, UsageError
from rune_mcp.library import Library
from rune_mcp.library.embed import Embedder
from rune_mcp.library.lineage import METHODS, lineage_of
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.catmerge import materialise
from rune_mcp.runtime.compose import compose, for_project
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from rune_mcp.runtime.transformers import TransformersBackend

pytestmark = pytest.mark.filterwarnings(PEFT_WARNING)
A_TARGETS = ["q_proj", "v_proj", "down_proj"]
B_TARGETS = ["q_proj", "v_proj", "up_proj"]  # a module each the other lacks


@dataclass
class Stack:
    settings: Settings
    info: BaseModelInfo
    lib: Library
    ids: dict[str, str]  # a, b (rank 4), c (rank 8), alien (another base)
    llama: LlamaCppBackend
    hf: TransformersBackend


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, real_embedder: Embedder) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("compose")
    settings, info = tiny_stack(folder, TEST_CACHE)
    lib = Library.open(settings, embedder=real_embedder)
    ids = {
        "a": store_adapter(lib, settings, info, folder, 1, A_TARGETS,
                           task="fix the failing login test after the cookie rename"),
        "b": store_adapter(lib, settings, info, folder, 2, B_TARGETS,
                           task="batch the inserts of the CSV import"),
        "c": store_adapter(lib, settings, info, folder, 3, ["q_proj", "v_proj"], rank=8,
                           task="make the date parser accept ISO weeks", project="/elsewhere"),
        "alien": store_adapter(lib, settings, info, folder, 4, A_TARGETS, base=FAKE_BASE,
                               task="an adapter of another base model"),
    }
    yield Stack(settings, info, lib, ids, LlamaCppBackend(settings, info),
                TransformersBackend(settings, info, device="cpu"))
    lib.close()


def _spec(stack: Stack, adapter_id: str) -> AdapterSpec:
    return AdapterSpec.from_record(stack.lib.get(adapter_id))


def _relative(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any], base: np.ndarray[Any, Any]) -> float:
    """|x - y| against the size of y's own effect over the base."""
    return float(np.abs(x - y).max() / np.abs(y - base).max())


def test_run_time_composition_equals_the_stored_cat_merge(stack: Stack) -> None:
    a, b = _spec(stack, stack.ids["a"]), _spec(stack, stack.ids["b"])
    merged = merge_adapters(stack.settings, [a.adapter_id, b.adapter_id], "cat", [0.5, 0.5],
                            library=stack.lib).record
    m = AdapterSpec.from_record(merged)
    for backend, tolerance in ((stack.llama, 1e-3), (stack.hf, 1e-5)):  # llama.cpp: f16 LoRA
        base = backend.logits(IDS)
        summed = backend.logits(IDS, [(a, 0.5), (b, 0.5)])
        stored = backend.logits(IDS, [(m, 1.0)])
        assert np.abs(summed - base).max() > 0.05  # the adapters do move the model
        assert _relative(stored, summed, base) < tolerance, backend.name
    # vLLM's materialised composition is the same sum (applied here by PEFT)
    folder = materialise(((a, 0.5), (b, 0.5)), stack.settings.cache_dir)
    assert materialise(((a, 0.5), (b, 0.5)), stack.settings.cache_dir) == folder  # written once
    served = AdapterSpec("materialised", stack.info.fingerprint, peft_dir=folder)
    base = stack.hf.logits(IDS)
    assert _relative(stack.hf.logits(IDS, [(served, 1.0)]),
                     stack.hf.logits(IDS, [(a, 0.5), (b, 0.5)]), base) < 1e-5
    # linear combines A and B separately: cross terms, so it is not the sum
    linear = merge_adapters(stack.settings, [a.adapter_id, b.adapter_id], "linear", [0.5, 0.5],
                            library=stack.lib).record
    summed = stack.llama.logits(IDS, [(a, 0.5), (b, 0.5)])
    assert _relative(stack.llama.logits(IDS, [(AdapterSpec.from_record(linear), 1.0)]), summed,
                     stack.llama.logits(IDS)) > 0.05


@pytest.mark.parametrize("method", METHODS)
def test_each_method_makes_a_loadable_adapter_with_its_lineage(stack: Stack, method: str) -> None:
    parents = [stack.ids["a"], stack.ids["b"]]
    density = 0.5 if method in ("ties", "dare_ties", "dare_linear") else None
    result = merge_adapters(stack.settings, [p[:10] for p in parents], method, [0.7, 0.3],
                            density, library=stack.lib)
    record = stack.lib.get(result.record.adapter_id)
    assert record.manifest["parents"] == parents and record.method == f"merge:{method}"
    lineage = lineage_of(record)
    assert lineage is not None and lineage.method == method and lineage.weights == [0.7, 0.3]
    assert lineage.density == density and lineage.fitness is None
    assert lineage.seed == (0 if method.startswith("dare") else None)
    assert record.project == PROJECT and record.session_id is None
    assert record.embed_text.splitlines() == [stack.lib.get(p).task for p in parents]
    assert record.gguf_path is not None
    spec = AdapterSpec.from_record(record)
    for backend in (stack.llama, stack.hf):  # the GGUF loads in llama.cpp, the PEFT folder in PEFT
        assert np.abs(backend.logits(IDS, [(spec, 1.0)]) - backend.logits(IDS)).max() > 1e-3
    again = merge_adapters(stack.settings, parents, method, [0.7, 0.3], density, library=stack.lib)
    assert again.record.adapter_id == record.adapter_id  # content-addressed: the same adapter


def test_refusals_in_one_sentence(stack: Stack) -> None:
    a, b, c, alien = (stack.ids[k] for k in ("a", "b", "c", "alien"))
    settings, lib = stack.settings, stack.lib
    for ids in ([a, alien], [alien, a]):
        with pytest.raises(IntegrityError, match="different base models") as info:
            merge_adapters(settings, ids, "cat", library=lib)
        assert not re.search(r"\.\s+[A-Z]", str(info.value))  # one sentence
        with pytest.raises(IntegrityError, match="different base models"):
            compose(lib, f"{ids[0]}:0.5,{ids[1]}:0.5", stack.info.fingerprint, "any task")
    with pytest.raises(IntegrityError, match="trained for base model"):
        compose(lib, f"{alien}:0.5", stack.info.fingerprint, "any task")
    with pytest.raises(UsageError, match="one rank"):
        merge_adapters(settings, [a, c], "ties", density=0.5, library=lib)
    refusals = [
        ([a, b], "ties", None, "needs --density"),
        ([a, b], "cat", 0.5, "density applies only"),
        ([a, b], "median", None, "must be one of"),
        ([a], "cat", None, "at least two"),
        ([a, a[:8]], "cat", None, "named twice"),
    ]
    for ids, method, density, words in refusals:
        with pytest.raises(UsageError, match=words):
            merge_adapters(settings, ids, method, density=density, library=lib)
    with pytest.raises(UsageError, match="one weight per adapter"):
        merge_adapters(settings, [a, b], "cat", [1.0], library=lib)
    wide = merge_adapters(settings, [a, c], "cat", library=lib).record  # cat adds ranks up
    assert wide.manifest["rank"] == 12 and json.loads(
        (wide.peft_dir / "adapter_config.json").read_text())["r"] == 12


@pytest.fixture
def fresh(stack: Stack, tmp_path: Path, rune_home: Path, real_embedder: Embedder,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Settings, Library, dict[str, str]]]:
    """A library of its own (at RUNE_HOME, so the CLI sees it) with adapters a, b, c."""
    settings = stack.settings.model_copy(update={"home": rune_home})
    monkeypatch.setenv("RUNE_BASE_MODEL", str(settings.base_model))
    lib = Library.open(settings, embedder=real_embedder)
    ids = {key: store_adapter(lib, settings, stack.info, tmp_path, n, targets, task=task)
           for key, n, targets, task in (
               ("a", 1, A_TARGETS, "fix the failing login test after the cookie rename"),
               ("b", 2, B_TARGETS, "batch the inserts of the CSV import"),
               ("c", 5, A_TARGETS, "cache the exchange rates for an hour"))}
    yield settings, lib, ids
    lib.close()


def test_forgetting_cascades_through_two_generations(
    fresh: tuple[Settings, Library, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    _, lib, ids = fresh
    assert main(["adapters", "merge", ids["a"], ids["b"][:12], "--method", "ties",
                 "--weights", "0.5,0.5", "--density", "0.5", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)["adapter_id"]
    assert main(["adapters", "merge", first, ids["c"], "--method", "cat", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)["adapter_id"]
    assert main(["adapters", "show", second[:12], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    tree = shown["lineage"]
    assert [p["adapter_id"] for p in tree["parents"]] == [first, ids["c"]]
    assert tree["method"] == "cat" and tree["weights"] == [0.5, 0.5]
    assert tree["parents"][0]["method"] == "ties" and tree["parents"][0]["density"] == 0.5
    assert [p["adapter_id"] for p in tree["parents"][0]["parents"]] == [ids["a"], ids["b"]]
    assert main(["adapters", "show", ids["a"][:12]]) == 0
    assert f"composed into: {first[:12]}, {second[:12]}" in capsys.readouterr().out
    assert main(["adapters", "show", second[:12]]) == 0
    text = capsys.readouterr().out
    assert "lineage: cat merge, weights 0.5, 0.5" in text
    assert f"{first[:12]} [ties merge, weights 0.5, 0.5, density 0.5]" in text
    assert ids["a"][:12] in text and "(session session-1)" in text

    assert main(["adapters", "rm", "--session", "session-1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"removed {ids['a']}",
                   f"removed {first} (composed from a removed adapter)",
                   f"removed {second} (composed from a removed adapter)"]
    left = {r.adapter_id for r in lib.list()}
    assert left == {ids["b"], ids["c"]} and lib.index_ids() == left


def test_removing_a_parent_removes_its_merges(
    fresh: tuple[Settings, Library, dict[str, str]]
) -> None:
    settings, lib, ids = fresh
    first = merge_adapters(settings, [ids["a"], ids["b"]], "cat", library=lib).record.adapter_id
    second = merge_adapters(settings, [ids["c"], first], "svd", library=lib).record.adapter_id
    other = merge_adapters(settings, [ids["a"], ids["c"]], "linear", library=lib).record.adapter_id
    assert lib.descendants([ids["b"]]) == [first, second]
    assert lib.remove_cascade(ids["b"][:8]) == [ids["b"], first, second]
    assert {r.adapter_id for r in lib.list()} == {ids["a"], ids["c"], other}
    assert lib.remove(ids["c"]) == ids["c"]  # `remove` cascades too, returning its own id
    assert {r.adapter_id for r in lib.list()} == {ids["a"]}
    assert lib.forget_session("no-such-session") == []


def test_project_composition(fresh: tuple[Settings, Library, dict[str, str]]) -> None:
    settings, lib, ids = fresh
    fingerprint = lib.base_fingerprint()
    summed = for_project(lib, "tidewater", fingerprint)  # a project by its folder name
    assert summed.kind == "sum" and summed.project == "tidewater"
    assert sorted((r.adapter_id, s) for r, s in summed.adapters) == sorted(
        (i, 1 / 3) for i in ids.values())
    partial = merge_adapters(settings, [ids["a"], ids["b"]], "cat", library=lib).record
    assert for_project(lib, PROJECT, fingerprint).kind == "sum"  # c is not in that merge
    full = merge_adapters(settings, [partial.adapter_id, ids["c"]], "cat", library=lib).record
    chosen = for_project(lib, PROJECT, fingerprint)
    assert chosen.kind == "merge" and [(r.adapter_id, s) for r, s in chosen.adapters] == [
        (full.adapter_id, 1.0)]
    # without a project, the task's own project (that of the adapter recall finds) is used
    found = compose(lib, "project", fingerprint, "the login test fails after a cookie rename")
    assert found.kind == "merge" and found.project == PROJECT
    given = compose(lib, f"{ids['a'][:8]}:0.25,{ids['b']}", fingerprint, "any task")
    assert given.kind == "given" and given.value == f"{ids['a']}:0.25,{ids['b']}:1"
    with pytest.raises(UsageError, match="has no adapters"):
        for_project(lib, "/no/such/project", fingerprint)
