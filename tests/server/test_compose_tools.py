"""Compositions over MCP: `run_with_memory(adapter="project" | "id:scale,...")`,
`recall_adapter(compose=...)`, and `forget` taking a parent's merges with it, on a tiny real
base served by llama.cpp (tests/helpers/compose.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_CACHE
from helpers.compose import tiny_base
from helpers.tiny import FAKE_BASE, PEFT_WARNING

from rune_mcp.config import Settings, load_settings
from rune_mcp.library import Library
from server.conftest import text_of

pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings(PEFT_WARNING)]
TASKS = ("fix the failing login test after the cookie rename",
         "batch the inserts of the CSV import")


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings (from the environment, as `rune serve` reads them) on the tiny base."""
    monkeypatch.setenv("RUNE_BASE_MODEL", str(tiny_base(tmp_path / "base")))
    for name, value in (("CONTEXT_SIZE", "256"), ("THREADS", "1"), ("BACKEND", "llamacpp"),
                        ("DEVICE", "cpu"), ("SEED", "0")):
        monkeypatch.setenv(f"RUNE_{name}", value)
    settings = load_settings()
    assert settings.cache_dir == TEST_CACHE
    return settings


@pytest.fixture
def stored(tiny: Settings, tmp_path: Path) -> dict[str, str]:
    from helpers.compose import store_adapter

    from rune_mcp.basemodel import resolve_base

    info = resolve_base(tiny)
    with Library.open(tiny) as lib:
        ids = {key: store_adapter(lib, tiny, info, tmp_path, n, ["q_proj", "v_proj"], task=task)
               for key, n, task in (("a", 1, TASKS[0]), ("b", 2, TASKS[1]))}
        ids["alien"] = store_adapter(lib, tiny, info, tmp_path, 3, ["q_proj", "v_proj"],
                                     base=FAKE_BASE, task="an adapter of another base")
    return ids


@pytest.fixture
async def client(tiny: Settings) -> AsyncIterator[Any]:
    from mcp import Client

    from rune_mcp.server import build_server

    async with Client(build_server(tiny, start_worker=False)) as c:
        yield c


def _applied(data: dict[str, Any]) -> list[tuple[str, float]]:
    return [(a["adapter_id"], a["scale"]) for a in data["adapters"]]


async def test_project_composition_over_mcp(client: Any, tiny: Settings,
                                            stored: dict[str, str]) -> None:
    from rune_mcp.distill.merge import merge_adapters

    a, b = stored["a"], stored["b"]
    run = {"prompt": "Say hello.", "max_tokens": 4}
    result = await client.call_tool("run_with_memory",
                                    {**run, "adapter": "project", "project": "tidewater"})
    assert not result.is_error, text_of(result)
    data = result.structured_content
    assert data["adapter_id"] is None and _applied(data) == [(a, 0.5), (b, 0.5)]
    assert f"[adapters {a[:12]} x0.5, {b[:12]} x0.5]" in text_of(result)

    # recall resolves the same composition (the project found from the task) for reuse
    recalled = await client.call_tool("recall_adapter", {"task": TASKS[0], "compose": "project"})
    composition = recalled.structured_content["composition"]
    assert composition["kind"] == "sum" and composition["project"] == "/home/dev/tidewater"
    assert [(x["adapter_id"], x["scale"]) for x in composition["adapters"]] == [(a, 0.5), (b, 0.5)]
    again = await client.call_tool("run_with_memory", {**run, "adapter": composition["adapter"]})
    assert _applied(again.structured_content) == [(a, 0.5), (b, 0.5)]
    assert again.structured_content["text"] == data["text"]

    # a stored merge covering the project's adapters is used instead, as one adapter
    with Library.open(tiny) as lib:
        merged = merge_adapters(tiny, [a, b], "cat", library=lib).record.adapter_id
    result = await client.call_tool("run_with_memory",
                                    {**run, "adapter": "project", "project": "tidewater"})
    assert result.structured_content["adapter_id"] == merged
    assert _applied(result.structured_content) == [(merged, 1.0)]
    listed = await client.call_tool("recall_adapter", {"task": TASKS[1], "compose": "project"})
    assert listed.structured_content["composition"]["kind"] == "merge"

    forgot = await client.call_tool("forget", {"adapter_id": a})
    assert forgot.structured_content["removed"] == [a, merged]


async def test_compositions_refused_over_mcp(client: Any, stored: dict[str, str]) -> None:
    b, alien = stored["b"], stored["alien"]
    run = {"prompt": "Say hello.", "max_tokens": 4}
    for adapter, words in (
        (f"{b}:0.5,{alien}:0.5", "different base models"),
        (f"{b}:lots", "not a number"),
        ("project", "needs a project"),  # an unrelated task recalls nothing to take it from
    ):
        result = await client.call_tool("run_with_memory", {**run, "adapter": adapter,
                                                            "task": "zzzz qqqq"})
        assert result.is_error and words in text_of(result), text_of(result)
        assert "Traceback" not in text_of(result)
    recalled = await client.call_tool("recall_adapter", {"task": "x", "compose": f"{b},{b}"})
    assert recalled.is_error and "named twice" in text_of(recalled)
    single = await client.call_tool("run_with_memory", {**run, "adapter": f"{b}:0.5"})
    data = single.structured_content
    assert data["adapter_id"] is None and _applied(data) == [(b, 0.5)]


async def test_auto_recall_prefers_an_evolved_merge_holding_the_best_hit_over_mcp(
    tiny: Settings, stored: dict[str, str]
) -> None:
    from mcp import Client

    from rune_mcp.distill.merge import merge_adapters
    from rune_mcp.server import build_server

    a, b = stored["a"], stored["b"]
    with Library.open(tiny) as lib:  # as `rune evolve` stores one: with the fitness it won by
        evolved = merge_adapters(tiny, [a, b], "cat", [0.8, 0.6], fitness=0.42,
                                 library=lib).record.adapter_id
    run = {"prompt": "Say hello.", "max_tokens": 4, "task": TASKS[0]}
    for margin, first in ((1.0, evolved), (0.0, a)):
        settings = tiny.with_overrides(recall_fitness_margin=margin)
        async with Client(build_server(settings, start_worker=False)) as client:
            recalled = await client.call_tool("recall_adapter", {"task": TASKS[0]})
            hits = recalled.structured_content["adapters"]
            assert hits[0]["adapter_id"] == first
            result = await client.call_tool("run_with_memory", {**run, "adapter": "auto"})
            assert not result.is_error, text_of(result)
            assert result.structured_content["adapter_id"] == first
        if first == evolved:
            assert hits[1]["adapter_id"] == a and hits[1]["reason"] is None
            assert "evolved merge holding" in hits[0]["reason"]
            assert f"[first: evolved merge holding {a[:12]}" in text_of(recalled)
        else:
            assert all(h["reason"] is None for h in hits)
