"""Library fixtures: tiny real adapters, the real embedder, and a real Chroma server.

`index_mode` runs a test twice: against the embedded index and through `HttpClient` against a
`chroma run` server on a free loopback port (started once per session).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.embedding import CachingEmbedder
from helpers.tiny import adapter_variant, make_gguf_lora, make_peft_adapter

from rune_mcp.config import Settings, load_settings
from rune_mcp.library import Library
from rune_mcp.library.embed import Embedder, get_embedder

CHROMA = Path(sys.executable).parent / "chroma"


@pytest.fixture(scope="session")
def adapter_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real PEFT LoRA of the tiny llama (made once per session)."""
    return make_peft_adapter(tmp_path_factory.mktemp("peft") / "adapter", seed=0)


@pytest.fixture(scope="session")
def gguf_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_gguf_lora(tmp_path_factory.mktemp("gguf") / "adapter.gguf", seed=0)


@pytest.fixture
def variants(adapter_src: Path, tmp_path: Path) -> Iterator[list[Path]]:
    """Five distinct adapter folders derived from the session adapter."""
    yield [adapter_variant(adapter_src, tmp_path / f"variant-{i}", seed=i) for i in range(5)]


@pytest.fixture(scope="session")
def real_embedder() -> Embedder:
    """all-MiniLM-L6-v2, loaded once for the whole test process; each distinct text is
    embedded once by the real model and remembered."""
    return CachingEmbedder(get_embedder(Settings()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, proc: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chroma run exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("chroma run did not answer within a minute")


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real `chroma run` server on a free loopback port."""
    if not CHROMA.exists():
        pytest.skip(f"the chroma CLI is not installed at {CHROMA}")
    port = _free_port()
    data = tmp_path_factory.mktemp("chroma-server")
    log = (data / "server.log").open("wb")
    proc = subprocess.Popen(
        [str(CHROMA), "run", "--path", str(data / "db"), "--host", "127.0.0.1",
         "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    try:
        _wait_for(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(params=["embedded", "server"])
def index_mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Run the test against the embedded index and against a Chroma server."""
    if request.param == "server":
        url = request.getfixturevalue("chroma_server")
        monkeypatch.setenv("RUNE_CHROMA_URL", url)
    return str(request.param)


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return load_settings()


@pytest.fixture
def library(settings: Settings, real_embedder: Embedder) -> Iterator[Library]:
    lib = Library.open(settings, embedder=real_embedder)
    yield lib
    lib.close()
