"""Probes: did an adapter learn the session? Scored by likelihood, before and after.

A probe is a question phrased differently from anything in the session, a prefix of the
answer, the correct completion and plausible wrong ones. Its score is the log-likelihood of
each completion after the prefix (the model's chat template around the question); the probe
passes when the correct completion ranks first. A general prompt, answered greedily, checks
that the adapter left unrelated knowledge alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rune_mcp.errors import InputError

PROBES_VERSION = 1


@dataclass(frozen=True)
class Probe:
    name: str
    prompt: str
    prefix: str
    correct: str
    wrong: tuple[str, ...]


@dataclass(frozen=True)
class ProbeSet:
    probes: tuple[Probe, ...]
    general_prompt: str
    general_tokens: int
    session: Path | None


@dataclass(frozen=True)
class ProbeScore:
    """Log-likelihoods of the correct and wrong completions, and the correct one's rank (1 =
    the model's first choice)."""

    name: str
    correct: float
    wrong: dict[str, float]

    @property
    def rank(self) -> int:
        return 1 + sum(1 for v in self.wrong.values() if v >= self.correct)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "correct": round(self.correct, 3), "rank": self.rank,
                "candidates": 1 + len(self.wrong),
                "wrong": {k: round(v, 3) for k, v in self.wrong.items()}}


def sample_paths() -> tuple[Path, Path]:
    """The bundled sample session and its probes."""
    data = Path(str(resources.files("rune_mcp") / "data"))
    return data / "sample_session.jsonl", data / "sample_probes.json"


def load_probes(path: Path) -> ProbeSet:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read probes from {path} ({exc}); give a probes JSON file.") from exc
    if raw.get("format_version") != PROBES_VERSION:
        raise InputError(f"{path} has probes format {raw.get('format_version')!r}; this Rune "
                         f"reads version {PROBES_VERSION}.")
    probes = tuple(Probe(p["name"], p["prompt"], p["prefix"], p["correct"], tuple(p["wrong"]))
                   for p in raw["probes"])
    general = raw.get("general", {})
    session = path.parent / raw["session"] if raw.get("session") else None
    return ProbeSet(probes, general.get("prompt", ""), int(general.get("max_tokens", 40)), session)


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)
    return list(tokenizer(str(text), add_special_tokens=False)["input_ids"])


def completion_logprob(model: Any, tokenizer: Any, prompt: str, prefix: str, completion: str) -> float:
    """Sum of log p(completion tokens | chat(prompt) + prefix)."""
    import torch

    head = _prompt_ids(tokenizer, prompt) + list(
        tokenizer(prefix, add_special_tokens=False)["input_ids"])
    tail = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    ids = torch.tensor([head + tail], device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(head) - 1 : -1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return float(logp.gather(-1, torch.tensor(tail, device=logp.device).unsqueeze(-1)).sum())


def score(model: Any, tokenizer: Any, probes: ProbeSet) -> list[ProbeScore]:
    model.eval()
    return [ProbeScore(p.name, completion_logprob(model, tokenizer, p.prompt, p.prefix, p.correct),
                       {w: completion_logprob(model, tokenizer, p.prompt, p.prefix, w)
                        for w in p.wrong})
            for p in probes.probes]


def greedy(model: Any, tokenizer: Any, prompt: str, max_tokens: int) -> str:
    """Greedy answer to `prompt` (chat template), for before/after comparisons."""
    import torch

    ids = torch.tensor([_prompt_ids(tokenizer, prompt)], device=model.device)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=max_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return str(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
