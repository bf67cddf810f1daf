"""vLLM backend. What runs here is a contract test: a small HTTP server on 127.0.0.1 speaking
the parts of vLLM's OpenAI-compatible API Rune uses, recording every request. The real-server
test needs a GPU and a `vllm` install and is skipped, with the reason shown, where absent."""

from __future__ import annotations

import importlib.util
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.errors import BackendError, IntegrityError
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.vllm import VllmBackend
from runtime.models import PROMPT, runtime_settings

BASE_ID = "rune-base"


class FakeVllm(BaseHTTPRequestHandler):
    """Answers /v1/models, /v1/load_lora_adapter and streamed /v1/chat/completions."""

    log: list[tuple[str, str, Any]]  # set on the class by the fixture
    loaded: set[str]

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.log.append(("GET", self.path, None))
        models = [{"id": BASE_ID, "parent": None}]
        models += [{"id": name, "parent": BASE_ID} for name in sorted(self.loaded)]
        self._send(200, {"object": "list", "data": models})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.log.append(("POST", self.path, body))
        if self.path == "/v1/load_lora_adapter":
            if body["lora_name"] in self.loaded:
                self._send(400, {"message": f"The lora adapter '{body['lora_name']}' has "
                                            "already been loaded."})
                return
            self.loaded.add(body["lora_name"])
            self._send(200, {"status": "ok"})
        elif body["model"] not in self.loaded | {BASE_ID}:
            self._send(404, {"message": f"The model `{body['model']}` does not exist."})
        else:
            self._stream(body)

    def _stream(self, body: dict[str, Any]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for word in ["Hello", " from", f" {body['model']}"]:
            event = {"choices": [{"index": 0, "delta": {"content": word}}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
        usage = {"choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}
        self.wfile.write(f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture
def server() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    log: list[tuple[str, str, Any]] = []
    handler = type("Handler", (FakeVllm,), {"log": log, "loaded": set()})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", log
    httpd.shutdown()
    httpd.server_close()


def test_registers_each_adapter_once_then_selects_it_by_name(
    server: tuple[str, list[tuple[str, str, Any]]], base: BaseModelInfo,
    adapter_a: AdapterSpec, tmp_path: Path,
) -> None:
    url, log = server
    backend = VllmBackend(runtime_settings(tmp_path, vllm_url=url), base)
    assert backend.model == BASE_ID
    first = backend.generate(PROMPT, max_tokens=5, adapters=[adapter_a])
    second = backend.generate(PROMPT, max_tokens=5, adapters=[adapter_a])
    bare = backend.generate(PROMPT, max_tokens=5, adapters=())
    assert first.text == second.text == "Hello from adapter-1"
    assert bare.text == f"Hello from {BASE_ID}"
    assert (first.prompt_tokens, first.completion_tokens) == (12, 3)
    posts = [(path, body) for method, path, body in log if method == "POST"]
    assert posts[0] == ("/v1/load_lora_adapter",
                        {"lora_name": "adapter-1", "lora_path": str(adapter_a.peft_dir)})
    chats = [body for path, body in posts if path == "/v1/chat/completions"]
    assert [c["model"] for c in chats] == ["adapter-1", "adapter-1", BASE_ID]
    assert chats[0]["messages"] == PROMPT and chats[0]["max_tokens"] == 5
    assert chats[0]["stream"] is True
    assert sum(path == "/v1/load_lora_adapter" for path, _ in posts) == 1


def test_an_adapter_registered_by_another_process_is_reused(
    server: tuple[str, list[tuple[str, str, Any]]], base: BaseModelInfo,
    adapter_a: AdapterSpec, tmp_path: Path,
) -> None:
    url, _ = server
    VllmBackend(runtime_settings(tmp_path, vllm_url=url), base).activate([adapter_a])
    other = VllmBackend(runtime_settings(tmp_path, vllm_url=url), base)
    other.activate([adapter_a])  # the server answers "already loaded": not an error
    assert "".join(other.stream(PROMPT, max_tokens=5)) == "Hello from adapter-1"


def test_refusals(server: tuple[str, list[tuple[str, str, Any]]], base: BaseModelInfo,
                  adapter_a: AdapterSpec, adapter_b: AdapterSpec, tmp_path: Path) -> None:
    url, log = server
    backend = VllmBackend(runtime_settings(tmp_path, vllm_url=url), base)
    alien = AdapterSpec("alien", "d" * 64, adapter_a.peft_dir, None)
    with pytest.raises(IntegrityError, match="another|trained for base"):
        backend.activate([alien])
    with pytest.raises(IntegrityError, match="another|trained for base"):
        backend.activate([(adapter_a, 0.5), (alien, 0.5)])
    assert not [p for m, p, _ in log if m == "POST"]  # nothing was sent for either


def test_a_composition_is_served_as_its_materialised_cat_merge(
    server: tuple[str, list[tuple[str, str, Any]]], base: BaseModelInfo,
    adapter_a: AdapterSpec, adapter_b: AdapterSpec, tmp_path: Path,
) -> None:
    from safetensors import safe_open

    url, log = server
    settings = runtime_settings(tmp_path, vllm_url=url, cache_dir=tmp_path / "cache")
    backend = VllmBackend(settings, base)
    pair = [(adapter_a, 0.5), (adapter_b, 0.5)]
    first = backend.generate(PROMPT, max_tokens=5, adapters=pair)
    again = backend.generate(PROMPT, max_tokens=5, adapters=pair)
    half = backend.generate(PROMPT, max_tokens=5, adapters=[(adapter_a, 0.5)])
    assert first.adapters == (("adapter-1", 0.5), ("adapter-2", 0.5))  # what was asked for
    loads = [body for m, path, body in log if path == "/v1/load_lora_adapter"]
    assert len(loads) == 2  # the pair once, adapter_a at half scale once
    name, folder = loads[0]["lora_name"], Path(loads[0]["lora_path"])
    assert name.startswith("rune-composition-") and first.text == again.text == f"Hello from {name}"
    assert half.text == f"Hello from {loads[1]['lora_name']}" != first.text
    assert folder.parent == settings.cache_dir / "compositions"
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == config["lora_alpha"] == 16 and not config["use_rslora"]
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
        key = next(k for k in handle.keys() if k.endswith("q_proj.lora_A.weight"))  # noqa: SIM118
        assert handle.get_tensor(key).shape[0] == 16  # the two rank-8 adapters stacked


def test_missing_server_names_the_url(base: BaseModelInfo, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(BackendError, match=f"no vLLM server answers at {url}"):
        VllmBackend(runtime_settings(tmp_path, vllm_url=url), base)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not os.environ.get("VLLM_TEST_URL"),
                    reason="needs a running vLLM server (set VLLM_TEST_URL) on a GPU machine")
def test_real_vllm_server(base: BaseModelInfo, adapter_a: AdapterSpec, tmp_path: Path) -> None:
    backend = VllmBackend(runtime_settings(tmp_path, vllm_url=os.environ["VLLM_TEST_URL"]),
                          base)
    out = backend.generate(PROMPT, max_tokens=16, adapters=[adapter_a])
    assert out.completion_tokens > 0 and out.adapters == (("adapter-1", 1.0),)
