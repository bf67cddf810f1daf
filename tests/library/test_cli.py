"""`rune adapters ...`, `rune recall`, `rune library reindex` through the real entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.tiny import adapter_meta

from rune_mcp.cli import main
from rune_mcp.config import Settings
from rune_mcp.library import Library
from rune_mcp.library.manifest import PEFT_WEIGHTS


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


@pytest.fixture
def filled(library: Library, variants: list[Path]) -> list[str]:
    current = library.base_fingerprint()
    tasks = ["fix the flaky postgres connection timeout", "add a dark mode toggle"]
    return [
        library.add(variants[i], None, adapter_meta(i, task=t, base=current)).adapter_id
        for i, t in enumerate(tasks)
    ]


def test_empty_library(capsys: pytest.CaptureFixture[str]) -> None:
    assert _json(capsys, "adapters", "ls", "--json") == (0, [])
    assert _json(capsys, "recall", "anything", "--json") == (0, [])
    assert main(["recall", "anything"]) == 0
    assert "no adapter is similar" in capsys.readouterr().out
    assert main(["adapters", "ls"]) == 0
    assert "no adapters yet" in capsys.readouterr().out


def test_ls_show_recall_rm(
    capsys: pytest.CaptureFixture[str], filled: list[str], settings: Settings
) -> None:
    code, rows = _json(capsys, "adapters", "ls", "--json")
    assert code == 0 and isinstance(rows, list) and len(rows) == 2
    for key in ("adapter_id", "task", "project", "session_id", "created_at", "method",
                "size_bytes"):
        assert key in rows[0]
    assert main(["adapters", "ls"]) == 0
    assert filled[0][:12] in capsys.readouterr().out

    code, shown = _json(capsys, "adapters", "show", filled[0][:8], "--json")
    assert code == 0 and isinstance(shown, dict)
    assert shown["adapter_id"] == filled[0] and shown["problems"] == []
    assert main(["adapters", "show", filled[0]]) == 0
    assert "verified: ok" in capsys.readouterr().out

    code, hits = _json(capsys, "recall", "postgres connection keeps timing out", "--json",
                       "--k", "2")
    assert code == 0 and isinstance(hits, list) and hits[0]["adapter_id"] == filled[0]
    for key in ("adapter_id", "similarity", "task", "project", "session_id"):
        assert key in hits[0]
    assert _json(capsys, "recall", "postgres", "--project", "elsewhere", "--json") == (0, [])

    assert _json(capsys, "adapters", "rm", filled[0], "--json") == (0, {"removed": [filled[0]]})
    assert _json(capsys, "adapters", "rm", "--session", "session-1", "--json") == (
        0, {"removed": [filled[1]]})
    assert _json(capsys, "adapters", "ls", "--json") == (0, [])


def test_unknown_id_is_one_clear_line(capsys: pytest.CaptureFixture[str], filled: list[str]) -> None:
    assert main(["adapters", "show", "f" * 64]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rune: no adapter has the id") and "rune adapters ls" in err
    assert "Traceback" not in err
    assert main(["adapters", "rm"]) == 2


def test_verify_exits_1_on_tampering_and_reindex(
    capsys: pytest.CaptureFixture[str], filled: list[str], library: Library
) -> None:
    assert _json(capsys, "adapters", "verify", "--json") == (
        0, {"ok": True, "adapters": 2, "damaged": 0, "unverified_text": 0, "problems": []})
    weights = library.root / filled[1] / PEFT_WEIGHTS
    weights.chmod(0o644)
    weights.write_bytes(weights.read_bytes()[:-1] + b"!")
    code, report = _json(capsys, "adapters", "verify", "--json")
    assert code == 1 and isinstance(report, dict) and not report["ok"]
    assert [p["adapter_id"] for p in report["problems"]] == [filled[1]]
    assert report["damaged"] == 1 and report["adapters"] == 2
    assert main(["adapters", "verify"]) == 1
    assert "1 of 2 adapters are damaged" in capsys.readouterr().out
    assert main(["adapters", "show", filled[1]]) == 1
    assert "FAILED" in capsys.readouterr().out
    code, result = _json(capsys, "library", "reindex", "--json")
    assert code == 0 and isinstance(result, dict) and result["indexed"] == 2
