"""How a composition is written in `adapter` arguments, and what is refused (no model needed).
What compositions compute is checked in tests/library/test_compose.py."""

from __future__ import annotations

import pytest

from rune_mcp.errors import UsageError
from rune_mcp.runtime.compose import Part, is_composition, parse_parts

A, B = "4f1c2e9a0b7d", "9a0b7d11c2e3" + "0" * 52


def test_the_forms_of_a_composition() -> None:
    assert parse_parts(f"{A}:0.5, {B}:0.25") == [Part(A, 0.5), Part(B, 0.25)]
    assert parse_parts(f"{A},{B}:-1") == [Part(A, 1.0), Part(B, -1.0)]
    assert parse_parts(f'[{{"adapter_id": "{A}", "scale": 0.5}}, ["{B}", 2]]') == [
        Part(A, 0.5), Part(B, 2.0)]
    assert parse_parts(f'[{{"adapter_id": "{A}"}}]') == [Part(A, 1.0)]
    for text in ("project", f"{A}:0.5", f"{A},{B}", f'["{A}"]'):
        assert is_composition(text)
    for text in ("auto", "none", A):
        assert not is_composition(text)


@pytest.mark.parametrize(("text", "words"), [
    (f"{A}:half", "not a number"),
    (f"{A}:9", "from -4 to 4"),
    (f"{A}:nan", "from -4 to 4"),
    (f"{A}:0.5,{A.upper()}:0.5", "named twice"),
    ("../etc/passwd:1", "by id"),
    (f"{A[:5]}:1", "by id"),
    ("[", "not valid JSON"),
    ('{"a": 1}', "by id"),
    (f'[{{"id": "{A}"}}]', "each item"),
    (f'[["{A}", true]]', "from -4 to 4"),
    ('[]', "1 to 32"),
    (",".join(f"{i:06x}" for i in range(33)), "1 to 32"),
])
def test_malformed_compositions_are_refused_in_one_sentence(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words) as info:
        parse_parts(text)
    assert str(info.value).endswith(".") and "\n" not in str(info.value)
