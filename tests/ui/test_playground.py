"""The recall playground on the real base model: the recalled adapter, its similarity, and the
answers with and without it, each the very text the backend gives for that adapter."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime.models import adapter_a, llama, runtime_settings
from starlette.testclient import TestClient

from rune_mcp.config import Settings
from rune_mcp.library import AdapterRecord, Library
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from ui.conftest import ORIGIN, csrf_of, make_client, plain

__all__ = ["adapter_a", "llama"]  # fixtures shared with the runtime tests

TASK = "fix the failing acme database connection test by using open_pool instead of connect"
QUESTION = "Write a function that fetches all orders from the acme database."


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return runtime_settings(rune_home)


def store(settings: Settings, spec: AdapterSpec) -> AdapterRecord:
    assert spec.peft_dir is not None
    files = settings.home / "src"
    files.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (files / name).write_bytes((spec.peft_dir / name).read_bytes())
    meta = {"base_fingerprint": spec.base_fingerprint, "task": TASK, "method": "lora",
            "rank": 8, "alpha": 16.0, "session_id": "s-acme", "trajectory_id": "t-acme",
            "project": "/home/dev/acme"}
    return Library.open(settings).add(files, spec.gguf_path, meta)


@pytest.fixture
def client(settings: Settings, llama: LlamaCppBackend) -> Iterator[TestClient]:
    with make_client(settings, backend=llama) as c:
        yield c


def answers(page: str) -> list[str]:
    return [html.unescape(a) for a in re.findall(r'<pre class="answer">(.*?)</pre>', page, re.S)]


def test_answers_with_and_without_the_recalled_adapter(
    client: TestClient, settings: Settings, llama: LlamaCppBackend, adapter_a: AdapterSpec
) -> None:
    record = store(settings, adapter_a)
    token = csrf_of(client.get("/recall").text)
    page = client.post("/recall", headers=ORIGIN, data={
        "csrf": token, "task": "connect to the acme database", "question": QUESTION,
        "max_tokens": "8"})
    assert page.status_code == 200, plain(page)
    text = page.text
    assert f'href="/adapters/{record.adapter_id}"' in text
    similarity = re.search(r"with similarity <strong>([0-9.]+)</strong>", text)
    assert similarity and float(similarity.group(1)) >= settings.recall_min_similarity
    chat = [{"role": "user", "content": QUESTION}]
    spec = AdapterSpec.from_record(record)
    expected = [llama.generate(chat, max_tokens=8, adapters=[spec]).text.strip(),
                llama.generate(chat, max_tokens=8, adapters=()).text.strip()]
    assert answers(text) == [e or "(empty answer)" for e in expected]
    for label in ("embed task", "recall", "swap adapter", "generate", "tokens/s", "total"):
        assert label in text, label
    assert "connect to the acme database" in text  # the form keeps what was asked


def test_an_unrelated_task_recalls_nothing(
    client: TestClient, settings: Settings, adapter_a: AdapterSpec
) -> None:
    store(settings, adapter_a)
    token = csrf_of(client.get("/recall").text)
    page = client.post("/recall", headers=ORIGIN, data={
        "csrf": token, "task": "translate good morning into French", "question": "Bonjour?",
        "max_tokens": "4"})
    assert page.status_code == 200
    assert "No adapter was similar enough" in page.text
    assert len(answers(page.text)) == 2


def test_bad_requests_are_one_sentence(client: TestClient) -> None:
    token = csrf_of(client.get("/recall").text)
    empty = client.post("/recall", headers=ORIGIN, data={"csrf": token, "question": " "})
    assert empty.status_code == 400 and "Write a question" in empty.text
    long = client.post("/recall", headers=ORIGIN,
                       data={"csrf": token, "question": "hi", "max_tokens": "100000"})
    assert long.status_code == 400 and "between 1 and 512 tokens" in long.text
    foreign = client.post("/recall", data={"csrf": token, "question": "hi"})
    assert foreign.status_code == 403 and "dashboard's own page" in plain(foreign)
    assert "Traceback" not in empty.text + long.text + foreign.text
