"""`rune bench repetition`: the base's answers with and without the guard, compared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rune_mcp.cli import main


def test_answers_are_compared_both_ways(tmp_path: Path) -> None:
    out = tmp_path / "rep.json"
    assert main(["bench", "repetition", "--limit", "1", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["summary"]["answers"] == 2 and data["summary"]["guard"] == {"ngram": 8, "times": 3}
    prompt, coding = data["rows"]
    assert prompt["kind"] == "prompt" and coding["kind"] == "coding"
    assert prompt["same"] == (prompt["plain"] == prompt["guarded"])
    assert isinstance(coding["plain_passed"], bool) and isinstance(coding["guarded_passed"], bool)


@pytest.mark.parametrize("guard", ["8", "1x3", "8x1", "ax3"])
def test_a_bad_guard_is_refused_in_one_sentence(guard: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "repetition", "--guard", guard]) == 2
    err = capsys.readouterr().err
    assert "is not NxT" in err and "Traceback" not in err
