"""`rune bench merge`: the stored `cat` merge is the run-time sum; other methods are not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rune_mcp.cli import main


def test_cat_is_the_sum_and_linear_is_not(tmp_path: Path) -> None:
    out = tmp_path / "merge.json"
    assert main(["bench", "merge", "--rank", "2", "--methods", "cat,linear",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    distances = {row["method"]: row["distance"] for row in data["methods"]}
    assert data["effect_of_sum"] > 0.1  # the adapters really change the logits
    assert distances["cat"] < 1e-3
    assert distances["linear"] > 0.05  # sums of A and of B carry cross terms


def test_unknown_methods_are_refused_in_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "merge", "--methods", "cat,mean"]) == 2
    err = capsys.readouterr().err
    assert "choose among cat, svd" in err and "Traceback" not in err

