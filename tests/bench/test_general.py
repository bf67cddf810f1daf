"""The general-ability guard: the fixed corpus, the coding harness, NLL and the answer cache."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rune_mcp.bench import corpus
from rune_mcp.bench.coding import Question, check_answer, extract_code, load_questions, run_tests
from rune_mcp.bench.general import answers_nll, base_answers, corpus_nll, load_prompts, nll_sum
from rune_mcp.config import Settings
from rune_mcp.runtime.base import Active, Adapters, Backend, Generation, Message, Request

# --- the corpus -------------------------------------------------------------------------------------


def test_the_stdlib_sample_is_deterministic_and_checked_against_its_reference() -> None:
    one, two = corpus.stdlib_sample(), corpus.stdlib_sample()
    assert one.text == two.text and one.sha256 == two.sha256
    assert 60_000 < len(one.text) < 90_000 and one.pieces > 50
    assert one.python.startswith(corpus.minor_version())
    assert "def " in one.text and '"""' in one.text  # source with its docstrings
    if corpus.minor_version() in corpus.REFERENCE:
        assert one.matches is True and "matches the reference" in one.check


def test_a_sample_unlike_the_reference_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(corpus.REFERENCE, corpus.minor_version(), "0" * 64)
    sample = corpus.stdlib_sample()
    assert sample.matches is False and "differs from the reference" in sample.check
    monkeypatch.delitem(corpus.REFERENCE, corpus.minor_version())
    unknown = corpus.stdlib_sample()
    assert unknown.matches is None and "no reference digest" in unknown.check
    assert unknown.to_dict()["sha256"] == sample.sha256


def test_pieces_are_ranked_by_name_so_the_sample_grows_by_prefix() -> None:
    small, large = corpus.stdlib_sample(20_000), corpus.stdlib_sample()
    assert large.text.startswith(small.text)


def test_the_anchor_sample_shares_no_module_with_the_guard() -> None:
    assert not set(corpus.ANCHOR_MODULES) & set(corpus.MODULES)
    anchor = corpus.stdlib_sample(20_000, corpus.ANCHOR_MODULES, corpus.ANCHOR_SEED)
    guard = corpus.stdlib_sample()
    headers = {line for line in anchor.text.splitlines() if line.startswith("# ")}
    modules = {h[2:].split(".", 1)[0] for h in headers}
    assert modules and modules <= set(corpus.ANCHOR_MODULES)
    assert not any(line in guard.text for line in headers)
    assert anchor.check == "not the guard's sample" and "def " in anchor.text


# --- the coding harness -------------------------------------------------------------------------


def test_a_correct_answer_passes_and_a_wrong_one_fails() -> None:
    question = Question("add_one", "Write add_one(x).", ("assert add_one(1) == 2", "assert add_one(-1) == 0"))
    good = ("Here it is:\n```python\ndef add_one(x):\n    return x + 1\n\n"
            "if __name__ == '__main__':\n    input()\n```")
    assert check_answer(good, question).passed
    bad = check_answer("```python\ndef add_one(x):\n    return x\n```", question)
    assert not bad.passed and "AssertionError" in bad.reason
    assert check_answer("Just add one to x.", question).reason == "no code block"


def test_a_hanging_answer_times_out_and_an_early_exit_does_not_pass() -> None:
    assert run_tests("while True:\n    pass\n", ["assert True"], timeout=1.0).reason == "timeout"
    early = run_tests("import sys\nsys.exit(0)\n", ["assert False"])
    assert not early.passed


def test_the_answer_has_no_network() -> None:
    out = run_tests("import socket\nsocket.create_connection(('127.0.0.1', 9))\n", ["assert True"])
    assert not out.passed and "network access is disabled" in out.reason
    out = run_tests("import socket\ns = socket.socket()\n", ["assert True"])
    assert not out.passed and "network access is disabled" in out.reason


def test_code_blocks_are_found_closed_or_cut_off() -> None:
    assert extract_code("a\n```python\nx = 1\n```\nb\n```\ny = 2\n```") == "x = 1\n"
    assert extract_code("```\nx = 1\n") == "x = 1\n"  # cut off by the token budget
    assert extract_code("```python\n\n```") is None


_REFERENCE = {
    "reverse_string": "def reverse_string(s):\n    return s[::-1]",
    "is_palindrome": "def is_palindrome(s):\n    return s == s[::-1]",
    "factorial": "import math\ndef factorial(n):\n    return math.factorial(n)",
    "fibonacci": ("def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
                  "    return a"),
    "sum_list": "def sum_list(numbers):\n    return sum(numbers)",
    "max_of_list": "def max_of_list(numbers):\n    return max(numbers)",
    "count_vowels": "def count_vowels(s):\n    return sum(c in 'aeiouAEIOU' for c in s)",
    "is_prime": "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))",
    "celsius_to_fahrenheit": "def celsius_to_fahrenheit(c):\n    return c * 9 / 5 + 32",
    "even_numbers": "def even_numbers(numbers):\n    return [n for n in numbers if n % 2 == 0]",
    "word_count": "def word_count(text):\n    return len(text.split())",
    "remove_duplicates": "def remove_duplicates(items):\n    return list(dict.fromkeys(items))",
    "gcd": "import math\ndef gcd(a, b):\n    return math.gcd(a, b)",
    "flatten": "def flatten(lists):\n    return [x for part in lists for x in part]",
    "char_frequency": "from collections import Counter\ndef char_frequency(s):\n    return dict(Counter(s))",
    "capitalize_words": ("def capitalize_words(text):\n"
                         "    return ' '.join(w[:1].upper() + w[1:] for w in text.split(' '))"),
    "average": "def average(numbers):\n    return sum(numbers) / len(numbers)",
    "is_anagram": "def is_anagram(a, b):\n    return sorted(a) == sorted(b)",
    "fizzbuzz": ("def fizzbuzz(n):\n    return 'FizzBuzz' if n % 15 == 0 else 'Fizz' if n % 3 == 0 else "
                 "'Buzz' if n % 5 == 0 else str(n)"),
    "binary_search": ("import bisect\ndef binary_search(items, target):\n"
                      "    i = bisect.bisect_left(items, target)\n"
                      "    return i if i < len(items) and items[i] == target else -1"),
    "square_list": "def square_list(numbers):\n    return [n * n for n in numbers]",
    "merge_dicts": "def merge_dicts(a, b):\n    return {**a, **b}",
    "count_occurrences": "def count_occurrences(items, value):\n    return items.count(value)",
    "second_largest": "def second_largest(numbers):\n    return sorted(set(numbers))[-2]",
}


def test_every_bundled_coding_question_is_answerable_and_its_tests_can_fail() -> None:
    questions = load_questions()
    assert len(questions) >= 20 and {q.id for q in questions} == set(_REFERENCE)
    code = "\n\n".join(_REFERENCE.values())
    for q in questions:
        assert "```python" in q.prompt
    everything = [t for q in questions for t in q.tests]
    assert run_tests(code, everything).passed
    broken = "\n\n".join(f"def {name}(*args):\n    return None" for name in _REFERENCE)
    for q in questions:
        assert not run_tests(broken, q.tests).passed, q.id


def test_there_are_a_hundred_generic_prompts() -> None:
    prompts = load_prompts()
    assert len(prompts) >= 100 and len(set(prompts)) == len(prompts)
    words = ("rune", "adapter", "tarn", "lora")
    assert not [p for p in prompts if any(w in p.lower() for w in words)]


# --- negative log-likelihood and the cached answers --------------------------------------------------


def test_nll_of_uniform_logits_is_log_vocabulary() -> None:
    rows = np.zeros((5, 8), dtype=np.float32)
    assert math.isclose(nll_sum(rows, [1, 2, 3, 4, 5]), 5 * math.log(8), rel_tol=1e-6)
    peaked = np.full((1, 4), -1e4, dtype=np.float32)
    peaked[0, 2] = 0.0
    assert nll_sum(peaked, [2]) < 1e-6


class _Uniform(Backend):
    """Uniform logits over a vocabulary of 16; one token per character."""

    name = "uniform"
    fingerprint = "a" * 64

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.generated = 0

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        return [ord(c) % 16 for c in text]

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        return [1, *self.tokenize(messages[-1]["content"]), 2]

    def logits(self, tokens: str | Sequence[int], adapters: Adapters = (), first: int = 0) -> Any:
        self.calls.append((len(tokens), first))
        return np.zeros((len(tokens) - first, 16), dtype=np.float32)

    def _generate(self, request: Request, target: Active) -> Generation:
        self.generated += 1
        return Generation("an answer", 3, 9)

    def _stream(self, request: Request, target: Active) -> Iterator[str]:
        yield self._generate(request, target).text


def test_corpus_and_answer_nll_score_every_token_once() -> None:
    backend = _Uniform()
    mean, count = corpus_nll(backend, list(range(10)) * 25, [], window=100)  # 250 tokens
    assert count == 98 + 98 + 48 and math.isclose(mean, math.log(16), rel_tol=1e-6)
    mean, count = answers_nll(backend, [("q?", "abc"), ("r", "")], [])
    assert count == 3 and math.isclose(mean, math.log(16), rel_tol=1e-6)


def test_base_answers_are_cached_by_the_base_fingerprint(tmp_path: Path) -> None:
    settings = Settings(cache_dir=tmp_path)
    backend = _Uniform()
    first = base_answers(settings, backend, ["one?", "two?"])
    assert first == [("one?", "an answer"), ("two?", "an answer")] and backend.generated == 2
    base_answers(settings, backend, ["one?", "two?", "three?"])
    assert backend.generated == 3, "only the new prompt is answered"
    other = _Uniform()
    other.fingerprint = "b" * 64
    base_answers(settings, other, ["one?"])
    assert other.generated == 1, "another base model has its own answers"


def test_bench_general_is_a_command(capsys: pytest.CaptureFixture[str]) -> None:
    from rune_mcp.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["bench", "general", "--help"])
    assert exit_.value.code == 0 and "--adapter ID|none" in capsys.readouterr().out
