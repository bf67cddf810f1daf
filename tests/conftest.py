"""Shared fixtures: every test gets its own RUNE_HOME; the derived base model is shared.

Deriving the transformers form of the base model takes about 30 s, so it lives in one cache
folder (`.test-cache/` at the repository root, or RUNE_TEST_CACHE) reused by every test and
every later run; everything else a test writes goes to its own temporary folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
TRANSCRIPTS = SHARED / "transcripts"
TEST_CACHE = Path(os.environ.get("RUNE_TEST_CACHE", REPO / ".test-cache"))


@pytest.fixture(autouse=True)
def rune_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point RUNE_HOME at a fresh folder and RUNE_CACHE_DIR at the shared test cache."""
    home = tmp_path / "rune-home"
    monkeypatch.setenv("RUNE_HOME", str(home))
    monkeypatch.setenv("RUNE_CACHE_DIR", str(TEST_CACHE))
    for name in list(os.environ):
        if name.startswith("RUNE_") and name not in {"RUNE_HOME", "RUNE_CACHE_DIR"}:
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "user-home"))
    monkeypatch.delenv("CLAUDE_CONFIG_DIR", raising=False)
    yield home


@pytest.fixture
def transcripts_dir() -> Path:
    """The real public transcripts beside the checkout; tests skip, visibly, where absent."""
    if not TRANSCRIPTS.is_dir():
        pytest.skip(f"real transcripts not found at {TRANSCRIPTS}")
    return TRANSCRIPTS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("gpu") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is present on this machine")
    for item in items:
        if item.get_closest_marker("gpu"):
            item.add_marker(skip)
