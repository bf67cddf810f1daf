"""Fixtures for the agent tests: settings on the test's RUNE_HOME."""

from __future__ import annotations

from pathlib import Path

import pytest

from rune_mcp.config import Settings, load_settings


@pytest.fixture
def settings(rune_home: Path) -> Settings:
    return load_settings()
