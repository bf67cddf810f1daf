"""Free answers: key matching, degeneration, and the question asked through run_with_memory."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rune_mcp.bench.answers import (
    NOT_SCORED,
    RIGHT,
    WRONG,
    degeneration,
    find_key,
    free_answer,
    glued_repeat,
    judge,
    normalise,
    repeated_ngram,
    summarize_free,
)
from rune_mcp.bench.memory import _acc, with_context
from rune_mcp.config import Settings
from rune_mcp.distill.probes import Probe, ProbeMessage
from rune_mcp.runtime.base import Active, Backend, Generation, Message, Request


def test_normalise_folds_case_backticks_and_spaces_beside_punctuation() -> None:
    assert normalise("Use `Tenant = X`  and\n\topen_pool (dsn)") == "use tenant=x and open_pool(dsn)"
    assert normalise("Run `make   check`.") == "run make check."


def test_keys_match_at_word_boundaries_only() -> None:
    assert find_key("conn = tarnwell.db.open_pool(DSN)", "db.open_pool")
    assert find_key("obj = Queue('x', tenant = settings.TENANT)", "tenant=")
    assert find_key("Run `make check` first", "make check")
    assert not find_key("from x import jsonx", "import json")
    assert not find_key("request_timeout_ms = 30", "timeout=")
    assert not find_key("reconnect(dsn)", "connect(")
    assert find_key("psycopg2.connect(dsn)", "connect(")
    assert not find_key("anything", " ")


def test_right_key_with_a_wrong_one_is_wrong_and_no_keys_is_not_scored() -> None:
    right, wrong = ("make check",), ("pytest",)
    assert judge("Run `make check`.", right, wrong).verdict == RIGHT
    both = judge("Run `make check` or plain `pytest`.", right, wrong)
    assert both.verdict == WRONG and both.right == right and both.wrong == wrong
    assert judge("Run pytest -q.", right, wrong).verdict == WRONG
    assert judge("Nothing relevant.", right, wrong).verdict == WRONG
    assert judge("Run make check.", (), ()).verdict == NOT_SCORED


def test_glued_identifier_and_repeated_ngram_are_degenerate() -> None:
    assert glued_repeat("conn = db.open_poolopen_pool(dsn)") == "open_pool"
    assert glued_repeat("x = open_pool(dsn)open_pool(dsn)") == "open_pool(dsn)"
    assert degeneration("x = open_poolopen_pool") == "glued: open_pool"
    looping = "You can run the tests. " * 3
    assert repeated_ngram(looping) == "you can run the"
    assert degeneration(looping) == "repeated 4-gram: you can run the"


def test_normal_text_and_code_are_not_degenerate() -> None:
    normal = [
        "Run `make check` before pushing: it installs the fixtures and runs the unit tests.",
        "```python\ndef load_all(dsn):\n    conn = tarnwell.db.open_pool(dsn)\n"
        "    return conn.query('x')\n```",
        "The keyword is `def`. A horizontal rule: ---------- and ==========.",
        "Mississippi has four s and four i; 1.1.1.1 is an address; aaa is short.",
        "It needs `tenant=` and the value of settings.TENANT, as every Queue does.",
        "`python3 -c 'import datetime; print(datetime.datetime.now())'` in src/src/",
    ]
    for text in normal:
        assert degeneration(text) is None, text


class _Canned(Backend):
    """A backend that answers every chat with one text and remembers what it was asked."""

    name = "canned"
    fingerprint = "f" * 64

    def __init__(self, text: str) -> None:
        self.text = text
        self.asked: list[list[Message]] = []

    def _generate(self, request: Request, target: Active) -> Generation:
        self.asked.append(list(request.messages))
        return Generation(self.text, 10, 7)

    def _stream(self, request: Request, target: Active) -> Iterator[str]:
        yield self._generate(request, target).text


class _Plan:
    """What free_answer needs of the benchmark's scorer: settings, backend and plan()."""

    def __init__(self, backend: Backend, context: str | None = None) -> None:
        self.settings = Settings()
        self.backend = backend
        self.context = context

    def plan(self, probe: Probe, condition: str) -> tuple[list[Message], str | None, int, dict[str, Any]]:
        messages = probe.chat()
        return (with_context(messages, self.context) if self.context else messages), None, 0, {}


def _probe(**keys: Sequence[str]) -> Probe:
    return Probe(id="p-01-test_command-1", task="p: run the tests",
                 messages=(ProbeMessage(role="user", content="I'm working in p. How do I run the tests?"),),
                 prefix="Run `", choices=("make check`", "pytest`"), answer=0, source_session="p-01",
                 **keys)  # type: ignore[arg-type]


def test_free_answer_asks_the_question_without_prefix_through_run_with_memory() -> None:
    backend = _Canned("Run `make check`, then push.")
    probe = _probe(right_keys=("make check",), wrong_keys=("pytest",))
    row = free_answer(_Plan(backend), probe, "none", 32)  # type: ignore[arg-type]
    assert row["verdict"] == RIGHT and row["tokens"] == 7 and row["adapter_id"] is None
    assert row["degenerate"] is None and row["right_keys_found"] == ["make check"]
    assert backend.asked == [[{"role": "user", "content": "I'm working in p. How do I run the tests?"}]]
    rag = free_answer(_Plan(backend, "Notes: tests run with make check."), probe, "rag", 32)  # type: ignore[arg-type]
    assert rag["verdict"] == RIGHT and "Notes: tests run" in backend.asked[-1][0]["content"]
    assert not backend.asked[-1][0]["content"].endswith("Run `")
    old = free_answer(_Plan(backend), _probe(), "none", 32)  # type: ignore[arg-type]
    assert old == {"verdict": NOT_SCORED} and len(backend.asked) == 2, "no keys: nothing generated"


def test_free_summary_counts_verdicts_degeneration_and_length() -> None:
    rows: list[dict[str, Any]] = [
        {"condition": "none", "free": {"verdict": RIGHT, "degenerate": None, "tokens": 10}},
        {"condition": "none", "free": {"verdict": WRONG, "degenerate": "glued: ab_c", "tokens": 30}},
        {"condition": "none", "free": {"verdict": NOT_SCORED}},
        {"condition": "rag"},  # a row of a run made before free answers
    ]
    out = summarize_free(rows, _acc)
    assert out["none"]["n"] == 2 and out["none"]["accuracy"] == 0.5 and out["none"]["not_scored"] == 1
    assert out["none"]["degenerate"] == 0.5 and out["none"]["degenerate_n"] == 1
    assert out["none"]["tokens_mean"] == 20.0
    assert out["rag"]["n"] == 0 and out["rag"]["accuracy"] is None and out["rag"]["not_scored"] == 1
