"""A generated dataset shared by the benchmark tests (generation is deterministic and fast)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rune_mcp.bench.dataset import generate


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-dataset")
    generate(out, projects=2, seed=7)
    return out
