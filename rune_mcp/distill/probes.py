"""Probes: did an adapter learn the session? Scored by likelihood, before and after.

A probe is a question phrased differently from anything in the session, a prefix of the
answer, the correct completion among plausible wrong ones. It is scored by the one rule of
`rune_mcp.runtime.scoring` (mean log-probability per token of each choice) and passes when
its answer ranks first. One model, `Probe`, serves every probe file:

- `probes.jsonl` of `rune bench make-dataset`: one probe per line, every field written out;
- a probe set document such as the bundled `sample_probes.json`: `format_version`, the
  `session` it probes, `probes` in the short form (`name`, `prompt`, `prefix`, `correct`,
  `wrong`) and a `general` prompt whose greedy answer must not change.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rune_mcp.errors import UsageError
from rune_mcp.runtime.base import Adapters, Message
from rune_mcp.runtime.scoring import ChoiceScores, Scorable, score_choices

PROBES_VERSION = 1
GENERAL_TOKENS = 40
MULTI_FIELDS = ("source_sessions", "right_keys_all")


class ProbeMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str = Field(strict=True)


class Probe(BaseModel):
    """One multiple-choice question about what a session taught (or, with no source session,
    general knowledge an adapter must leave alone)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(strict=True, min_length=1)
    task: str = Field(strict=True)  # what recall is asked with
    messages: tuple[ProbeMessage, ...] = Field(min_length=1)
    prefix: str = Field(strict=True)  # the start of the answer, already written
    choices: tuple[str, ...]
    answer: int = Field(strict=True)  # index of the correct choice
    source_session: str | None = Field(strict=True)  # None: general knowledge, no session
    # What a free answer must hold to show the lesson (any one of them) and what shows the
    # habit the session corrected; `rune_mcp.bench.answers` says how they are matched. Probe
    # files written before these existed load with none: their free answers are not scored.
    right_keys: tuple[str, ...] = ()
    wrong_keys: tuple[str, ...] = ()
    # A multi-session probe (`rune bench make-dataset`) needs what several sessions taught:
    # `source_sessions` names them (`source_session` is the last), and a free answer is right
    # only with a key of every group of `right_keys_all` (one group per lesson) and no wrong
    # key. Both are empty for any other probe, and its file line leaves them out.
    source_sessions: tuple[str, ...] = ()
    right_keys_all: tuple[tuple[str, ...], ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        """`{name, prompt, prefix, correct, wrong}` (probe set documents) -> the full form."""
        if not isinstance(data, dict) or "correct" not in data:
            return data
        rest = dict(data)
        prompt, correct, wrong = rest.pop("prompt", None), rest.pop("correct"), rest.pop("wrong", [])
        return {"id": rest.pop("name", None), "task": prompt,
                "messages": [{"role": "user", "content": prompt}],
                "choices": [correct, *wrong] if isinstance(wrong, list) else wrong, "answer": 0,
                "source_session": None, **rest}

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: tuple[str, ...]) -> tuple[str, ...]:
        if len(choices) < 2 or not all(choices) or len(set(choices)) != len(choices):
            raise ValueError("a probe needs two or more distinct non-empty choices")
        return choices

    @model_validator(mode="after")
    def _answer_is_a_choice(self) -> Probe:
        if not 0 <= self.answer < len(self.choices):
            raise ValueError(f"answer {self.answer} is outside the {len(self.choices)} choices")
        return self

    @model_validator(mode="after")
    def _keys(self) -> Probe:
        grouped = [key for group in self.right_keys_all for key in group]
        if any(not key.strip() for key in (*self.right_keys, *self.wrong_keys, *grouped)):
            raise ValueError("right_keys, right_keys_all and wrong_keys hold non-empty strings")
        if any(not group for group in self.right_keys_all):
            raise ValueError("every group of right_keys_all holds a key")
        if self.right_keys and self.right_keys_all:
            raise ValueError("give right_keys (one lesson) or right_keys_all (one group per "
                             "lesson), not both")
        if self.wrong_keys and not self.key_groups:
            raise ValueError("a probe with wrong_keys needs right_keys as well")
        return self

    @model_validator(mode="after")
    def _sessions(self) -> Probe:
        sessions = self.source_sessions
        if not sessions:
            return self
        if len(sessions) < 2 or len(set(sessions)) != len(sessions) or not all(sessions):
            raise ValueError("source_sessions names two or more distinct sessions")
        if self.source_session != sessions[-1]:
            raise ValueError("source_session is the last of source_sessions")
        return self

    @property
    def correct(self) -> str:
        return self.choices[self.answer]

    @property
    def key_groups(self) -> tuple[tuple[str, ...], ...]:
        """The right keys, one group per lesson the answer needs (none: not scored freely)."""
        if self.right_keys_all:
            return self.right_keys_all
        return (self.right_keys,) if self.right_keys else ()

    @property
    def multi_session(self) -> bool:
        return bool(self.source_sessions)

    @property
    def sessions(self) -> tuple[str, ...]:
        """Every session whose lesson the probe asks for (none for a control probe)."""
        if self.source_sessions:
            return self.source_sessions
        return (self.source_session,) if self.source_session else ()

    def chat(self) -> list[Message]:
        return [m.model_dump() for m in self.messages]

    def jsonl(self) -> str:
        """The probe as one `probes.jsonl` line (fields in order, non-ASCII kept); the
        multi-session fields only where set, so other probes keep the bytes they had."""
        unset = {name for name in MULTI_FIELDS if not getattr(self, name)}
        return json.dumps(self.model_dump(mode="json", exclude=unset), ensure_ascii=False) + "\n"


@dataclass(frozen=True)
class ProbeSet:
    probes: tuple[Probe, ...]
    general_prompt: str = ""  # a prompt whose greedy answer an adapter must not change
    general_tokens: int = GENERAL_TOKENS
    session: Path | None = None


@dataclass(frozen=True)
class ProbeScore:
    """A probe's choices scored: the answer's score and rank (1 = the model's first choice)."""

    probe: Probe
    result: ChoiceScores

    @property
    def name(self) -> str:
        return self.probe.id

    @property
    def correct(self) -> float:
        return self.result.scores[self.probe.answer]

    @property
    def rank(self) -> int:
        return self.result.rank(self.probe.answer)

    @property
    def passed(self) -> bool:
        return self.rank == 1

    def to_dict(self) -> dict[str, Any]:
        wrong = {c: round(s, 3) for i, (c, s) in enumerate(zip(self.probe.choices, self.result.scores,
                                                                strict=True)) if i != self.probe.answer}
        return {"name": self.name, "correct": round(self.correct, 3), "rank": self.rank,
                "candidates": len(self.probe.choices), "wrong": wrong}


def sample_paths() -> tuple[Path, Path]:
    """The bundled sample session and its probes."""
    data = Path(str(resources.files("rune_mcp") / "data"))
    return data / "sample_session.jsonl", data / "sample_probes.json"


# --- loading --------------------------------------------------------------------------------


def load_probes(path: Path) -> ProbeSet:
    """Read a probes JSONL file or a probe set document; a bad probe is refused in one sentence
    naming the file and the line it starts on."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read probes file {path} ({exc.strerror}); give a probes "
                         "JSONL file or a probe set JSON file.") from exc
    if _is_document(text):
        return _load_document(path, text)
    probes = tuple(_probe(path, n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip())
    if not probes:
        raise UsageError(f"{path} holds no probes; generate some with `rune bench make-dataset`.")
    return ProbeSet(probes)


def _is_document(text: str) -> bool:
    """A probe set document is one JSON object with `probes`; JSONL is one probe a line. A
    text that is neither but opens an object on a line of its own is a broken document."""
    try:
        whole = json.loads(text)
    except ValueError:
        head = text.lstrip().split("\n", 1)[0]
        try:
            json.loads(head)
        except ValueError:
            return head.startswith("{")
        return False
    return isinstance(whole, dict) and ("probes" in whole or "format_version" in whole)


def _probe(path: Path, line: int, raw: Any, **extra: Any) -> Probe:
    try:
        if isinstance(raw, str):
            return Probe.model_validate_json(raw)
        return Probe.model_validate({**extra, **raw} if isinstance(raw, dict) else raw)
    except ValidationError as exc:
        raise UsageError(f"{path} line {line} is not a valid probe ({_first_error(exc)}); fix it "
                         "or generate the probes again with `rune bench make-dataset`.") from exc


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    if error["type"] == "json_invalid":
        return "it is not one JSON object"
    where = ".".join(str(part) for part in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def _load_document(path: Path, text: str) -> ProbeSet:
    try:
        raw = json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", 1)
        raise UsageError(f"{path} line {line} is not valid JSON ({exc}); give a probes JSONL "
                         "file or a probe set JSON file.") from exc
    if raw.get("format_version") != PROBES_VERSION or not isinstance(raw.get("probes"), list):
        raise UsageError(f"{path} has probes format {raw.get('format_version')!r}; this Rune "
                         f"reads version {PROBES_VERSION} with a list of probes.")
    session = path.parent / raw["session"] if raw.get("session") else None
    source = session.stem if session else None
    lines = _item_lines(text, "probes")
    probes = tuple(_probe(path, lines[i] if i < len(lines) else 1, item, source_session=source)
                   for i, item in enumerate(raw["probes"]))
    general = raw.get("general") or {}
    return ProbeSet(probes, str(general.get("prompt", "")),
                    int(general.get("max_tokens", GENERAL_TOKENS)), session)


def _item_lines(text: str, key: str) -> list[int]:
    """The line each element of the document's `key` array starts on (for error messages)."""
    match = re.search(rf'"{key}"\s*:\s*\[', text)
    if match is None:
        return []
    decoder, at = json.JSONDecoder(), match.end()
    lines: list[int] = []
    try:
        while True:
            at += len(text[at:]) - len(text[at:].lstrip(" \t\r\n,"))
            if at >= len(text) or text[at] == "]":
                return lines
            lines.append(text.count("\n", 0, at) + 1)
            _, at = decoder.raw_decode(text, at)
    except ValueError:
        return lines


# --- scoring --------------------------------------------------------------------------------


def score_probe(model: Scorable, probe: Probe, adapters: Adapters = ()) -> ProbeScore:
    """One probe's choices scored on `model` with `adapters` applied for this evaluation."""
    return ProbeScore(probe, score_choices(model, probe.chat(), probe.prefix, probe.choices, adapters))


def score(model: Any, tokenizer: Any, probes: ProbeSet) -> list[ProbeScore]:
    """Every probe scored on a transformers model as it is in this process (a PEFT model with
    its active adapter), by the same rule as the served weights."""
    model.eval()
    scorable = InTraining(model, tokenizer)
    return [score_probe(scorable, p) for p in probes.probes]


@dataclass(frozen=True)
class InTraining:
    """A transformers model of this process, seen as `Scorable`: what it computes now."""

    model: Any
    tokenizer: Any

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        from rune_mcp.runtime.transformers import text_ids

        return text_ids(self.tokenizer, text, special)

    def chat_tokens(self, messages: Sequence[Message]) -> list[int]:
        from rune_mcp.runtime.transformers import chat_ids

        return chat_ids(self.tokenizer, messages)

    def logits(self, tokens: str | Sequence[int], adapters: Adapters = (), first: int = 0) -> Any:
        from rune_mcp.runtime.transformers import forward_logits

        if adapters:
            raise UsageError("a model in training is scored as it is; wrap it in PEFT to add an adapter.")
        ids = self.tokenize(tokens, special=True) if isinstance(tokens, str) else list(tokens)
        return forward_logits(self.model, ids, first)


def greedy(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> str:
    """Greedy answer to `prompt` (chat template), for before/after comparisons."""
    import torch

    from rune_mcp.runtime.transformers import chat_ids

    ids = torch.tensor([chat_ids(tokenizer, [{"role": "user", "content": prompt}])], device=model.device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return str(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
