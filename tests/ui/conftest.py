"""Dashboard fixtures: a library of tiny real adapters in two projects (one built on another),
a job queue with a job in each state, and a client on the guarded app.

The adapters are stored through `Library.add` for the configured base model, as distillation
stores them, with the lessons and training summary `remember` records; nothing is trained.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.tiny import adapter_meta, adapter_variant, make_gguf_lora, make_peft_adapter
from starlette.testclient import TestClient

from rune_mcp.config import Settings, load_settings
from rune_mcp.distill.queue import JobQueue
from rune_mcp.library import Library
from rune_mcp.ui import UiOptions, create_app

BASE_URL = "http://127.0.0.1:8787"
ORIGIN = {"Origin": BASE_URL}

ADAPTERS: list[dict[str, Any]] = [
    {"task": "fix the failing login test after the session cookie was renamed to sid",
     "project": "/home/dev/tidewater", "session_id": "sess-login",
     "embed_text": "fix the failing login test after the session cookie was renamed to sid\n"
                   "errors: KeyError: 'session'\nfixes: read request.cookies['sid']\n"
                   "files: auth.py, test_login.py\ncommands: pytest tests/test_login.py",
     "kinds": {"episode": 1, "attempt": 1, "qa": 8, "final": 1}, "lessons": 2},
    {"task": "make the date parser accept ISO week dates like 2024-W05-3",
     "project": "/home/dev/tidewater", "session_id": "sess-dates",
     "embed_text": "make the date parser accept ISO week dates like 2024-W05-3\n"
                   "errors: ValueError: unconverted data remains: -W05-3\n"
                   "fixes: strptime with %G-W%V-%u\nfiles: dates.py",
     "kinds": {"episode": 1, "attempt": 1, "qa": 6, "final": 1}, "lessons": 2},
    {"task": "speed up the CSV import by batching inserts",
     "project": "/srv/ledgerly", "session_id": "sess-csv",
     "embed_text": "speed up the CSV import by batching inserts\n"
                   "files: importer.py\ncommands: make bench-import",
     "kinds": {"qa": 5, "final": 1}, "lessons": 1},
]


def add_job_state(settings: Settings, job_id: str, **columns: Any) -> None:
    """Put a job in a state only a worker reaches (running with progress, failed)."""
    names = ", ".join(f"{k} = ?" for k in columns)
    with sqlite3.connect(settings.home / "jobs.sqlite3") as conn:
        conn.execute(f"UPDATE jobs SET {names} WHERE id = ?", [*columns.values(), job_id])


def generic_transcript(n: int) -> str:
    return json.dumps({
        "task": f"make the report exporter write UTF-8 (variant {n})",
        "session_id": f"queued-{n}", "project": "/home/dev/tidewater",
        "steps": [
            {"kind": "user", "text": "the export breaks on accented names"},
            {"kind": "tool_call", "tool": "Bash", "tool_id": "t1",
             "input": {"command": "python export.py"}},
            {"kind": "tool_result", "tool_id": "t1", "is_error": True,
             "output": "UnicodeEncodeError: 'ascii' codec can't encode character"},
            {"kind": "assistant", "text": "Open the file with encoding='utf-8'."},
            {"kind": "tool_call", "tool": "Edit", "tool_id": "t2",
             "input": {"file_path": "export.py", "new_string": "open(p, 'w', encoding='utf-8')"}},
            {"kind": "tool_result", "tool_id": "t2", "output": "ok"},
        ],
    })


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def peft_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_peft_adapter(tmp_path_factory.mktemp("ui-peft") / "adapter", seed=0)


@pytest.fixture
def adapters(settings: Settings, tmp_path: Path, peft_src: Path) -> list[str]:
    """Three adapters: two in tidewater (the second built on the first), one in ledgerly."""
    from rune_mcp.basemodel import resolve_base

    base = resolve_base(settings).fingerprint
    ids: list[str] = []
    with Library.open(settings) as lib:
        for n, spec in enumerate(ADAPTERS):
            peft = adapter_variant(peft_src, tmp_path / f"peft{n}", seed=n)
            gguf = make_gguf_lora(tmp_path / f"a{n}.gguf", seed=n)
            training = {"steps": 30, "final_loss": round(0.9 - 0.2 * n, 3), "seconds": 41.5,
                        "examples": sum(spec["kinds"].values()), "kinds": spec["kinds"],
                        "device": "cpu", "losses": [2.4, 1.9, 1.5, 1.2, 1.0, 0.9 - 0.2 * n]}
            meta = adapter_meta(n, task=spec["task"], base=base, project=spec["project"],
                                session_id=spec["session_id"], embed_text=spec["embed_text"],
                                lesson_count=spec["lessons"], training=training,
                                parents=[ids[0]] if n == 1 else [])
            ids.append(lib.add(peft, gguf, meta).adapter_id)
            time.sleep(0.002)  # distinct creation times: the newest is listed first
    return ids


@pytest.fixture
def jobs(settings: Settings, adapters: list[str]) -> dict[str, str]:
    """One job in each state: queued, running (with progress), done (it made the third
    adapter), failed (with its reason)."""
    queue = JobQueue(settings)
    made = {state: queue.enqueue(text=generic_transcript(i), source="cli").id
            for i, state in enumerate(("queued", "running", "done", "failed"))}
    now = time.time()
    add_job_state(settings, made["running"], state="running", started=now, progress_step=12,
                  progress_total=30, progress_message="training: step 12/30, loss 1.42")
    add_job_state(settings, made["done"], state="done", finished=now, adapter_id=adapters[2])
    add_job_state(settings, made["failed"], state="failed", finished=now, attempts=1,
                  error="session queued-3 has too little to learn from (no error fixed and no "
                        "working action); nothing was stored.")
    return made


def make_client(settings: Settings, **options: Any) -> TestClient:
    options.setdefault("stream_seconds", 0.0)
    options.setdefault("poll_seconds", 0.05)
    return TestClient(create_app(settings, UiOptions(**options)), base_url=BASE_URL)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with make_client(settings) as c:
        yield c


def plain(response: Any) -> str:
    """A page's text with entities decoded (apostrophes are escaped on the page)."""
    import html

    return html.unescape(response.text)


def csrf_of(page: str) -> str:
    """The form token a page embeds."""
    marker = 'name="csrf" value="'
    start = page.index(marker) + len(marker)
    return page[start : page.index('"', start)]
