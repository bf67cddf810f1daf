"""`auto` picks the backend without importing torch where torch cannot see a GPU."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rune_mcp import runtime
from rune_mcp.config import Settings

CPU_BUILD = "__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\nhip: Optional[str] = None\n"


def _fake_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version_py: str | None) -> None:
    folder = tmp_path / "torch"
    folder.mkdir()
    if version_py is not None:
        (folder / "version.py").write_text(version_py)
    spec = importlib.machinery.ModuleSpec("torch", None, is_package=True)
    spec.submodule_search_locations = [str(folder)]
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: spec if name == "torch" else real(name, *a))


@pytest.mark.parametrize(("version_py", "gpu"), [
    (CPU_BUILD, False),
    (CPU_BUILD.replace("cuda: Optional[str] = None", "cuda: Optional[str] = '12.4'"), True),
    (CPU_BUILD.replace("hip: Optional[str] = None", "hip = '6.2.41133'"), True),
    ("__version__ = '9.0'\n", True),  # a layout the check does not know: torch is asked
    (None, True),  # no version.py: torch is asked
])
def test_gpu_build_is_read_from_torch_version_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version_py: str | None, gpu: bool
) -> None:
    _fake_torch(tmp_path, monkeypatch, version_py)
    assert runtime._torch_has_gpu_build() is gpu


def test_auto_on_a_cpu_build_is_llamacpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_torch(tmp_path, monkeypatch, CPU_BUILD)
    assert runtime.resolve_kind(Settings(backend="auto", device="auto")) == "llamacpp"
    assert runtime.resolve_kind(Settings(backend="vllm")) == "vllm"


def test_resolve_kind_imports_torch_only_for_a_gpu_build() -> None:
    code = (
        "import sys\n"
        "from rune_mcp.config import Settings\n"
        "from rune_mcp.runtime import _torch_has_gpu_build, resolve_kind\n"
        "resolve_kind(Settings(backend='auto', device='auto'))\n"
        "print('torch' in sys.modules, _torch_has_gpu_build())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ), check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported, gpu_build = proc.stdout.split()
    assert imported == gpu_build, "torch was imported though it cannot see a GPU"
