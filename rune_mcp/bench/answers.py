"""Free answers: does the text an agent reads carry the lesson, not only the likelihoods?

Scored choices (`rune_mcp.runtime.scoring`) say whether the model finds the right continuation
most likely after a prefix that already points at it. An agent reads something else: the
greedy answer to its question, with no prefix. `rune bench memory` asks each probe's question
that way, through `run_with_memory` (the same prompt path, the same adapter choice), and judges
the answer by the probe's keys:

- **right**: the answer holds one of the probe's `right_keys` and none of its `wrong_keys`;
- **wrong**: anything else (no right key, or a right key next to a wrong one: hedging between
  the project's way and the habit does not show the lesson);
- **not scored**: the probe has no `right_keys` (probe files written before keys existed, and
  the general-knowledge controls).

A multi-session probe needs two sessions' lessons in one answer: its keys come in groups, one
per lesson (`right_keys_all`), and its answer is right only when it holds a key of every group
and none of its `wrong_keys` (the habits of both lessons).

Matching is on normalised text, the answer and each key alike: case folded, backticks turned
into spaces, every run of whitespace made one space, then every space next to a character
that is neither a word character nor a space dropped (so `tenant = X` and `tenant=X`, or
`open_pool (dsn)` and `open_pool(dsn)`, read the same). A key must then occur at word
boundaries: where the key starts (ends) with a word character, the answer's character before
(after) it must not be one, so `import json` is not found in `import jsonx` nor `timeout=` in
`request_timeout_ms=`.

An answer is also checked for degeneration, the failure a small model shows under an adapter
that pushed it too far:

- **repeated n-gram**: the same `REPEAT_N` consecutive whitespace-separated words (case
  folded) occur `REPEAT_TIMES` or more times, overlapping occurrences counted;
- **glued repeat**: a sequence of `GLUE_MIN` or more non-space characters that starts with a
  letter or underscore at the start of a word or after punctuation, ends with a word
  character or a closing bracket or quote, and is followed at once by itself
  (`open_poolopen_pool`, `open_pool(dsn)open_pool(dsn)`; not `datetime.datetime`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rune_mcp.bench.memory import Scorer
    from rune_mcp.distill.probes import Probe

RIGHT, WRONG, NOT_SCORED = "right", "wrong", "not scored"
REPEAT_N = 4
REPEAT_TIMES = 3
GLUE_MIN = 4
FREE_TOKENS = 160  # enough for a short explanation and a code block of a few lines
QUICK_FREE_TOKENS = 48
# the copy must follow a word character or a closing bracket or quote: after `.` or `/` it is
# a qualified name or a path (`datetime.datetime`, `src/src/`), not a glued repeat
_GLUED = re.compile(rf"(?<!\w)([A-Za-z_]\S{{{GLUE_MIN - 2},}}?[\w)\]}}\"'])\1")
_PUNCT_SPACE = re.compile(r" (?=[^\w ])|(?<=[^\w ]) ")


# --- key matching ---------------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Case folded, backticks as spaces, whitespace runs as one space, no space beside
    punctuation (see the module's docstring)."""
    folded = re.sub(r"\s+", " ", text.casefold().replace("`", " ")).strip()
    return _PUNCT_SPACE.sub("", folded)


def find_key(answer: str, key: str) -> bool:
    """Whether `key` occurs in `answer` at word boundaries, both normalised."""
    text, needle = normalise(answer), normalise(key)
    if not needle:
        return False
    start = text.find(needle)
    while start >= 0:
        end = start + len(needle)
        before_ok = not (_word(needle[0]) and start > 0 and _word(text[start - 1]))
        after_ok = not (_word(needle[-1]) and end < len(text) and _word(text[end]))
        if before_ok and after_ok:
            return True
        start = text.find(needle, start + 1)
    return False


def _word(char: str) -> bool:
    return char.isalnum() or char == "_"


@dataclass(frozen=True)
class Verdict:
    """How a free answer was judged, and which keys it held."""

    verdict: str  # RIGHT, WRONG or NOT_SCORED
    right: tuple[str, ...] = ()
    wrong: tuple[str, ...] = ()


def judge(answer: str, right_keys: Sequence[str], wrong_keys: Sequence[str]) -> Verdict:
    """Right when the answer holds a right key and no wrong one; not scored without keys."""
    return judge_groups(answer, (right_keys,) if right_keys else (), wrong_keys)


def judge_groups(answer: str, groups: Sequence[Sequence[str]], wrong_keys: Sequence[str]) -> Verdict:
    """Right when the answer holds a key of every group (one group per lesson) and no wrong
    key; not scored without groups. `right` lists every right key found, group by group."""
    if not groups:
        return Verdict(NOT_SCORED)
    found = [tuple(k for k in group if find_key(answer, k)) for group in groups]
    wrong = tuple(k for k in wrong_keys if find_key(answer, k))
    verdict = RIGHT if all(found) and not wrong else WRONG
    return Verdict(verdict, tuple(k for keys in found for k in keys), wrong)


# --- degeneration ----------------------------------------------------------------------------------


def repeated_ngram(text: str, n: int = REPEAT_N, times: int = REPEAT_TIMES) -> str | None:
    """The first n-gram of words occurring `times` or more times, or None."""
    words = text.casefold().split()
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    for gram, count in grams.items():
        if count >= times:
            return " ".join(gram)
    return None


def glued_repeat(text: str) -> str | None:
    """The first sequence glued to a copy of itself (`xx` with no separator), or None."""
    match = _GLUED.search(text)
    return match.group(1) if match else None


def degeneration(text: str) -> str | None:
    """Why `text` is degenerate (`repeated n-gram: ...`, `glued: ...`), or None."""
    gram = repeated_ngram(text)
    if gram is not None:
        return f"repeated {REPEAT_N}-gram: {gram}"
    glued = glued_repeat(text)
    return None if glued is None else f"glued: {glued}"


# --- asking ----------------------------------------------------------------------------------------


def question_of(probe: Probe) -> str:
    """The probe's last user message: what the agent asks."""
    users = [m.content for m in probe.messages if m.role == "user"]
    return users[-1] if users else probe.messages[-1].content


def free_answer(scorer: Scorer, probe: Probe, condition: str, max_tokens: int) -> dict[str, Any]:
    """The probe asked as an agent asks it, answered by `run_with_memory` under `condition`:
    the same messages as the scored choices without the prefix, greedy; `recalled_adapter`
    lets `run_with_memory` recall by the probe's task (`adapter="auto"`), the other adapter
    conditions name their adapter (the composition conditions their ids with scales), and the
    rest answer with the bare base."""
    from rune_mcp.runtime.run import run_with_memory

    if not probe.key_groups:
        return {"verdict": NOT_SCORED}
    messages, adapter, _, _ = scorer.plan(probe, condition)
    recalled = condition == "recalled_adapter"
    # one user message is what an agent sends: run_with_memory builds that chat itself
    chat = None if messages == probe.chat() and len(messages) == 1 else messages
    result = run_with_memory(
        scorer.settings, question_of(probe), task=probe.task if recalled else None,
        adapter="auto" if recalled else (adapter or "none"), max_tokens=max_tokens,
        backend=scorer.backend, messages=chat,
    )
    verdict = judge_groups(result.text, probe.key_groups, probe.wrong_keys)
    return {
        "verdict": verdict.verdict,
        "right_keys_found": list(verdict.right),
        "wrong_keys_found": list(verdict.wrong),
        "degenerate": degeneration(result.text),
        "tokens": result.completion_tokens,
        "adapter_id": result.adapter_id,
        "text": result.text,
    }


# --- summaries -------------------------------------------------------------------------------------


def summarize_free(rows: list[dict[str, Any]], acc: Any) -> dict[str, Any]:
    """Per condition: free-answer accuracy (bootstrap CI, by `acc`), probes not scored, the
    share of degenerate answers and the mean answer length in tokens. Rows of runs made
    before free answers existed have no `free` part: they count as not scored."""
    conditions = list(dict.fromkeys(r["condition"] for r in rows))
    out: dict[str, Any] = {}
    for cond in conditions:
        mine = [r.get("free") or {"verdict": NOT_SCORED} for r in rows if r["condition"] == cond]
        scored = [f for f in mine if f["verdict"] != NOT_SCORED]
        part = acc([{"correct": f["verdict"] == RIGHT} for f in scored])
        degenerate = [f.get("degenerate") is not None for f in scored]
        part["not_scored"] = len(mine) - len(scored)
        part["degenerate"] = round(sum(degenerate) / len(degenerate), 4) if degenerate else None
        part["degenerate_n"] = sum(degenerate)
        part["tokens_mean"] = (round(sum(f["tokens"] for f in scored) / len(scored), 1)
                               if scored else None)
        out[cond] = part
    return out
