"""The dashboard in a real browser: headless Chromium (Debian's) driven by Playwright.

Every page is loaded from a real server, the job table is seen changing through the event
stream, the playground answers on the real base model, and an adapter is forgotten through
its confirmation page. With RUNE_UI_SCREENSHOTS=docs/ui each page is also saved as a PNG
there (the screenshots in docs/ui.md).
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from runtime.models import adapter_a, llama, runtime_settings

from rune_mcp.config import Settings
from rune_mcp.library import Library
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.llamacpp import LlamaCppBackend
from rune_mcp.ui import UiOptions, create_app
from ui.conftest import add_job_state

__all__ = ["adapter_a", "llama"]

CHROMIUM = Path("/usr/bin/chromium")
# Read at import: the autouse RUNE_HOME fixture clears every other RUNE_* variable.
SHOTS = os.environ.get("RUNE_UI_SCREENSHOTS")

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists() and not shutil.which("chromium"),
                       reason="no Chromium at /usr/bin/chromium (apt-get install chromium)"),
]


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return runtime_settings(rune_home)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(settings: Settings, llama: LlamaCppBackend, adapters: list[str],
           jobs: dict[str, str], adapter_a: AdapterSpec) -> Iterator[str]:
    """The dashboard on a free port, with the library, the jobs and a real adapter."""
    import uvicorn

    store_real_adapter(settings, adapter_a)
    port = _free_port()
    app = create_app(settings, UiOptions(port=port, backend=llama, stream_seconds=30.0,
                                         poll_seconds=0.2,
                                         bench_paths=[REPO / "docs" / "results"]))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the dashboard did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=30)


def store_real_adapter(settings: Settings, spec: AdapterSpec) -> str:
    """An adapter of the real base model, so the playground can put it on."""
    assert spec.peft_dir is not None
    files = settings.home / "src-real"
    files.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        (files / name).write_bytes((spec.peft_dir / name).read_bytes())
    task = "fix the acme database connection test: use open_pool instead of connect"
    meta = {"base_fingerprint": spec.base_fingerprint, "task": task, "method": "lora",
            "rank": 8, "alpha": 16.0, "session_id": "sess-acme-pool", "trajectory_id": "t-acme",
            "agent": "claude-code", "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
            "project": "/home/dev/acme-api", "lesson_count": 2,
            "embed_text": task + "\nerrors: TypeError: connect() got an unexpected keyword "
                                 "'pool'\nfixes: acme.db.open_pool(size=4)\nfiles: db.py",
            "training": {"steps": 30, "final_loss": 0.41, "examples": 12, "seconds": 38.2,
                         "kinds": {"episode": 1, "attempt": 1, "qa": 9, "final": 1},
                         "losses": [2.6, 2.0, 1.4, 1.0, 0.7, 0.5, 0.41], "device": "cpu"}}
    with Library.open(settings) as lib:
        return lib.add(files, spec.gguf_path, meta).adapter_id


def shoot(page: Any, name: str) -> None:
    if SHOTS:
        folder = Path(SHOTS) if Path(SHOTS).is_absolute() else REPO / SHOTS
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


@pytest.fixture
def browser_page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(60_000)
            yield page
        finally:
            browser.close()


def test_every_page_in_a_real_browser(server: str, browser_page: Any, settings: Settings,
                                      jobs: dict[str, str]) -> None:
    page = browser_page
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)

    page.goto(server + "/")
    assert page.locator("h1").inner_text() == "Memory"
    assert page.locator("section.project h2").count() == 3
    assert page.locator("article.adapter").count() == 4
    assert page.locator(".badge.ok").count() == 4
    shoot(page, "memory")

    page.locator("article.adapter header a").first.click()
    page.wait_for_selector("text=What it remembers")
    assert page.locator("svg.spark").count() == 1
    shoot(page, "adapter")

    page.goto(server + "/jobs")
    page.wait_for_selector("#live.on")  # the first event arrived over the stream
    add_job_state(settings, jobs["running"], progress_step=21,
                  progress_message="training: step 21/30, loss 0.97")
    page.wait_for_selector("text=training: step 21/30, loss 0.97")
    assert page.locator("tr[data-state=failed] .error").inner_text().startswith("session ")
    shoot(page, "jobs")

    page.goto(server + "/recall")
    page.fill("input[name=task]", "the acme database connection test fails")
    page.fill("textarea[name=question]", "How do I connect to the acme database?")
    page.fill("input[name=max_tokens]", "24")
    page.click("button[type=submit]")
    page.wait_for_selector("#comparison", timeout=120_000)
    assert "Recalled" in page.locator(".recalled").inner_text()
    assert page.locator("pre.answer").count() == 2
    shoot(page, "recall")

    page.goto(server + "/bench")
    assert page.locator("section.bench").count() >= 3
    assert page.locator("svg.chart").count() >= 5
    shoot(page, "bench")

    page.goto(server + "/")
    card = page.locator("article.adapter", has_text="speed up the CSV import")
    card.locator("button", has_text="Forget adapter").click()
    page.wait_for_selector("text=Forget?")
    shoot(page, "forget")
    page.locator("form.confirm button").click()
    page.wait_for_selector("text=Removed 1 adapter")
    page.goto(server + "/")
    assert page.locator("article.adapter").count() == 3
    assert errors == []
