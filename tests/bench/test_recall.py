"""`rune bench recall`: the figures it reports are real timings of the served query path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rune_mcp.bench.perfreport import SECTIONS
from rune_mcp.cli import main


def test_recall_bench_times_both_query_paths_and_reports_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "recall.json"
    assert main(["bench", "recall", "--sizes", "5,30", "--queries", "8", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [row["adapters"] for row in data["sizes"]] == [5, 30]
    assert data["query_path"]["kind"] == "onnx"
    assert data["query_path"]["first_query_s"] > 0
    for row in data["sizes"]:
        for part in ("recall", "embedding", "embedding_eager"):
            assert 0 < row[part]["p50_ms"] <= row[part]["p95_ms"]
        assert row["recall"]["p50_ms"] >= row["embedding"]["p50_ms"] * 0.5  # recall embeds too
    assert data["index_records_added"] == 30
    lines = SECTIONS["recall"](data, tmp_path)
    assert "| 30 |" in lines[0] and "Query path: onnx" in lines[1]
    assert "query path: onnx" in capsys.readouterr().out


def test_recall_bench_refuses_bad_sizes_in_one_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "recall", "--sizes", "ten"]) == 2
    err = capsys.readouterr().err
    assert "--sizes must be comma-separated integers" in err and "Traceback" not in err
