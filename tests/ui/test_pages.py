"""`rune ui` pages through the guarded app: the memory, one adapter, verification, jobs and
their event stream, benchmarks, and every failure as one sentence on a page."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import REPO
from helpers.tiny import adapter_meta, adapter_variant
from starlette.testclient import TestClient

from rune_mcp.config import Settings
from rune_mcp.library import Library
from ui.conftest import ADAPTERS, make_client


def test_memory_page_groups_adapters_by_project(client: TestClient, adapters: list[str]) -> None:
    page = client.get("/")
    assert page.status_code == 200
    text = page.text
    assert "3 adapters in 2 projects, learned from 3 sessions." in text
    sections = {re.search(r"<h2>([^<]+?) <", part).group(1): part  # type: ignore[union-attr]
                for part in text.split('<section class="project"')[1:]}
    assert list(sections) == ["ledgerly", "tidewater"]  # the newest adapter's project first
    for adapter_id, spec in zip(adapters, ADAPTERS, strict=True):
        section = sections[spec["project"].rsplit("/", 1)[1]]
        assert f'href="/adapters/{adapter_id}"' in section and spec["task"] in section
    assert sections["tidewater"].index(ADAPTERS[1]["task"]) < sections["tidewater"].index(
        ADAPTERS[0]["task"])  # newest first within a project
    assert text.count("✓ verified") == 3
    assert "2 lessons · 11 training examples" in text
    assert ("2 lessons · 11 training examples</strong>: 1 error → fix episode, 1 task → fix "
            "example, 8 questions/answers, 1 final working state") in text
    assert "KeyError: &#x27;session&#x27;" in text  # the digest, escaped
    built_on = re.search(r"built on <a href=\"/adapters/(\w+)\"", text)
    assert built_on and built_on.group(1) == adapters[0]
    assert "parent of" in text


def test_an_empty_library_says_how_to_fill_it(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert "The library holds no adapters yet" in page.text


def test_text_from_a_session_is_escaped(
    client: TestClient, settings: Settings, peft_src: Path, tmp_path: Path
) -> None:
    from rune_mcp.basemodel import resolve_base

    base = resolve_base(settings).fingerprint
    peft = adapter_variant(peft_src, tmp_path / "evil", seed=9)
    with Library.open(settings) as lib:
        lib.add(peft, None, adapter_meta(9, task="<script>alert('x')</script> & <b>", base=base,
                                         project="/p/<img src=x onerror=alert(1)>"))
    text = client.get("/").text
    assert "<script>alert" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;" in text


def test_adapter_page_shows_lessons_lineage_and_files(
    client: TestClient, adapters: list[str]
) -> None:
    page = client.get(f"/adapters/{adapters[1][:12]}")
    assert page.status_code == 200
    text = page.text
    for expected in ("What it remembers", ADAPTERS[1]["task"], "adapter_model.safetensors",
                     "adapter.gguf", "✓ verified", "training loss per step", "sess-dates",
                     f'href="/adapters/{adapters[0]}"', "Forget its whole session"):
        assert expected in text, expected
    parent = client.get(f"/adapters/{adapters[0]}").text
    assert "parent of" in parent and f'href="/adapters/{adapters[1]}"' in parent


def test_unknown_adapter_is_one_sentence(client: TestClient, adapters: list[str]) -> None:
    page = client.get("/adapters/0123456789ab")
    assert page.status_code == 404
    assert "no adapter has the id &#x27;0123456789ab&#x27;" in page.text
    assert "Traceback" not in page.text


def test_a_damaged_adapter_is_marked_and_verify_reports_it(
    client: TestClient, adapters: list[str], settings: Settings
) -> None:
    assert "All 3 adapters verified" in client.get("/verify").text
    weights = settings.home / "adapters" / adapters[2] / "adapter_model.safetensors"
    weights.chmod(0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    text = client.get("/").text
    assert text.count("✓ verified") == 2 and "✗ failed" in text
    assert "1 adapter failed verification" in text
    report = client.get("/verify").text
    assert "adapter_model.safetensors does not match its sha256" in report


def test_jobs_page_lists_each_state_with_progress_and_reasons(
    client: TestClient, jobs: dict[str, str], adapters: list[str]
) -> None:
    page = client.get("/jobs")
    assert page.status_code == 200
    text = page.text
    for job_id in jobs.values():
        assert f'id="job-{job_id}"' in text
    assert "1 queued" in text and "1 running" in text and "1 failed" in text
    assert '<progress value="12" max="30">' in text
    assert "training: step 12/30, loss 1.42" in text
    assert "has too little to learn from" in text
    assert f'href="/adapters/{adapters[2]}"' in text
    assert 'src="/static/jobs.js"' in text and 'data-stream="/jobs/events"' in text


def test_job_stream_sends_the_table_as_an_event(
    client: TestClient, jobs: dict[str, str]
) -> None:
    with client.stream("GET", "/jobs/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = "".join(response.iter_text())
    events = [block for block in body.split("\n\n") if block.startswith("event: jobs")]
    assert events, body
    data = json.loads(events[0].split("data: ", 1)[1])
    assert data["counts"] == {"queued": 1, "running": 1, "done": 1, "failed": 1}
    assert f'id="job-{jobs["running"]}"' in data["html"]


def test_job_stream_sends_a_change(settings: Settings, jobs: dict[str, str]) -> None:
    """Over a longer stream, a job that finishes meanwhile arrives as a second event."""
    import threading
    import time

    from rune_mcp.distill.queue import JobQueue
    from ui.conftest import add_job_state

    def finish() -> None:
        time.sleep(0.3)
        add_job_state(settings, jobs["running"], state="done", finished=time.time())

    thread = threading.Thread(target=finish)
    with make_client(settings, stream_seconds=1.0) as client:
        thread.start()
        body = client.get("/jobs/events").text
    thread.join()
    events = [json.loads(b.split("data: ", 1)[1]) for b in body.split("\n\n")
              if b.startswith("event: jobs")]
    assert len(events) >= 2
    assert events[0]["counts"]["running"] == 1 and events[-1]["counts"]["running"] == 0
    assert JobQueue(settings).counts()["done"] == 2


def test_bench_page_draws_the_results_in_the_repository(settings: Settings) -> None:
    with make_client(settings, bench_paths=[REPO / "docs" / "results"]) as client:
        page = client.get("/bench")
    assert page.status_code == 200
    text = page.text
    assert "Memory benchmark (rune bench memory)" in text
    assert "Ablations (rune bench memory --ablation)" in text
    assert text.count("<svg") >= 5
    assert "Probe accuracy per condition" in text and "oracle_adapter" in text
    assert "data:image" not in text and local_links(text)  # drawn here, not PNGs


def test_bench_page_plots_perf_output_and_explains_a_bad_file(
    settings: Settings, tmp_path: Path
) -> None:
    recall = {"sizes": [{"adapters": n, "recall": {"p50_ms": 3.0 + n / 1000, "p95_ms": 5.0},
                         "embedding": {"p50_ms": 2.0}} for n in (10, 100, 1000)]}
    (tmp_path / "recall.json").write_text(json.dumps(recall))
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "other.json").write_text(json.dumps({"throughput": {"tokens_per_s": 42}}))
    with make_client(settings, bench_paths=[tmp_path, tmp_path / "missing.json"]) as client:
        text = client.get("/bench").text
    assert "Recall latency (rune bench recall)" in text and "<polyline" in text
    assert "broken.json is not valid JSON" in text
    assert "missing.json does not exist; check --bench-json." in text
    assert "throughput.tokens_per_s" in text and "42" in text


def test_bench_page_without_results_says_how_to_make_them(client: TestClient) -> None:
    text = client.get("/bench").text
    assert "No benchmark results found" in text and "--bench-json" in text


def test_static_assets_come_from_the_package(client: TestClient) -> None:
    for name, kind in (("style.css", "text/css"), ("jobs.js", "javascript"),
                       ("playground.js", "javascript"), ("favicon.svg", "image/svg+xml")):
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    for path in ("/", "/jobs", "/recall", "/bench"):
        assert local_links(client.get(path).text), path


def local_links(page: str) -> bool:
    """Every address a page loads or links to is on this server."""
    links = re.findall(r'(?:src|href|action)="([^"]*)"', page)
    return bool(links) and all(link.startswith(("/", "#")) for link in links)


def test_unknown_page_and_method_are_one_sentence(client: TestClient) -> None:
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and "There is no page at this address" in missing.text
    wrong = client.get("/forget")
    assert wrong.status_code == 405 and "does not accept that request" in wrong.text


def test_a_bug_is_one_sentence_not_a_traceback(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rune_mcp.ui import memory

    def broken(*_args: object) -> None:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(memory, "adapter_views", broken)
    page = client.get("/")
    assert page.status_code == 500
    assert "Internal error (RuntimeError: the disk caught fire)" in page.text
    assert "Traceback" not in page.text


def test_hashing_is_bounded_per_page_load(settings: Settings, adapters: list[str]) -> None:
    """Adapters the hashing budget did not reach are shown as not checked, then checked on a
    later load; a verdict is hashed once while the files stay as they are."""
    from rune_mcp.ui import memory, views

    lib, verifier = Library.open(settings), memory.Verifier()
    pending = memory.adapter_views(lib, verifier, budget_s=0.0)
    assert [v.problems for v in pending] == [None, None, None]
    page = views.library_page(memory.project_groups(pending), "t", len(pending))
    assert "3 adapters not checked yet" in page and page.count("… not checked yet") == 3
    assert [v.problems for v in memory.adapter_views(lib, verifier)] == [[], [], []]
    assert [v.problems for v in memory.adapter_views(lib, verifier, budget_s=0.0)] == [[], [], []]
