"""Fixtures for the server tests: settings on the test's RUNE_HOME, a Claude Code session in
a fake `~/.claude/projects`, a generic transcript, and a library with tiny real adapters."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.config import Settings, load_settings

SESSION_ID = "1af7fc5e-8455-4414-9ccd-011d40f70b2a"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def claude_session(settings: Settings, transcripts_dir: Path) -> Path:
    """A real Claude Code transcript placed where Claude Code keeps it."""
    src = transcripts_dir / "claude-code" / "d-kimuson-claude-code-viewer" / f"{SESSION_ID}.jsonl"
    dst = settings.claude_dir / "projects" / "-home-dev-viewer" / f"{SESSION_ID}.jsonl"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def generic_transcript(n: int = 0) -> str:
    """A small session in the generic JSON format: an error, a diagnosis, a fix."""
    return json.dumps(
        {
            "task": f"make the date parser accept ISO weeks (variant {n})",
            "session_id": f"generic-{n}",
            "project": "/home/dev/tidewater",
            "steps": [
                {"kind": "user", "text": "make parse_date accept 2024-W05-3"},
                {"kind": "tool_call", "tool": "Bash", "tool_id": "t1",
                 "input": {"command": "pytest tests/test_dates.py"}},
                {"kind": "tool_result", "tool_id": "t1", "is_error": True,
                 "output": "ValueError: unconverted data remains: -W05-3"},
                {"kind": "assistant", "text": "strptime needs %G-W%V-%u for ISO weeks."},
                {"kind": "tool_call", "tool": "Edit", "tool_id": "t2",
                 "input": {"file_path": "dates.py", "new_string": "'%G-W%V-%u'"}},
                {"kind": "tool_result", "tool_id": "t2", "output": "ok"},
                {"kind": "tool_call", "tool": "Bash", "tool_id": "t3",
                 "input": {"command": "pytest tests/test_dates.py"}},
                {"kind": "tool_result", "tool_id": "t3", "output": "3 passed"},
            ],
        }
    )


@pytest.fixture
def library_with_adapters(settings: Settings, tmp_path: Path) -> list[str]:
    """Three tiny real adapters (PEFT + GGUF) for the current base model; their ids."""
    from helpers.tiny import adapter_meta, adapter_variant, make_gguf_lora, make_peft_adapter

    from rune_mcp.basemodel import resolve_base
    from rune_mcp.library import Library

    base = resolve_base(settings).fingerprint
    src = make_peft_adapter(tmp_path / "peft0")
    tasks = [
        "fix the failing login test after the session cookie rename",
        "speed up the CSV import by batching inserts",
        "make the date parser accept ISO week dates",
    ]
    ids = []
    with Library.open(settings) as lib:
        for n, task in enumerate(tasks):
            peft = adapter_variant(src, tmp_path / f"peft{n + 1}", seed=n)
            gguf = make_gguf_lora(tmp_path / f"a{n}.gguf", seed=n)
            record = lib.add(peft, gguf, adapter_meta(n, task=task, base=base,
                                                       embed_text=task + " Lessons: use care."))
            ids.append(record.adapter_id)
    return ids


def text_of(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Any]:
    """An in-memory SDK client on a server that queues but never trains."""
    from mcp import Client

    from rune_mcp.server import build_server

    async with Client(build_server(settings, start_worker=False)) as c:
        yield c
