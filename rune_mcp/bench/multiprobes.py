"""Multi-session probes: one task whose right answer needs what two sessions of a project taught.

A project's sessions each teach their own conventions, and recall returns one adapter; a task
that needs a convention of session 1 and one of session 3 is what composing adapters is for.
For every pair of a project's sessions, the generator pairs each convention taught in the
first with one taught in the second (shuffled, so each convention meets each later session
once at most) and asks for both in one answer:

- the question: `Two things, in one answer. First: <probe of A> Second: <probe of B>`, each
  part one of the single-session probes' questions of that convention;
- the scored choices: after the prefix `1. <prefix of A>`, the text `<answer of A>`, a closing
  fence where A opened a code block, then `2. <prefix of B><answer of B>`, in four forms: both
  right, and each lesson (or both) replaced by its obvious wrong guess (the convention's first
  distractor). Only an answer that knows both lessons ranks the right form first;
- the keys: one group of right keys per lesson (`right_keys_all`) and the wrong keys of both.

A pair whose keys cannot tell its forms apart (a key of one lesson occurring in the other's
text, or in the question) is left out, so every multi-session probe can be judged. The pairs
are drawn from their own random stream (`random.Random("multi-session probes <seed>")`) after
everything else is written: a seed's sessions and single-session probes keep their bytes.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

from rune_mcp.bench.answers import RIGHT, find_key, judge_groups
from rune_mcp.bench.quirks import ProbeSpec, Quirk
from rune_mcp.distill.probes import Probe, ProbeMessage

STREAM = "multi-session probes"
FENCE = "```"
QUESTION = "Two things, in one answer. First: {first} Second: {second}"

SessionPlan = tuple[str, list[Quirk]]  # a session's name and the conventions it taught


def stream(seed: int) -> random.Random:
    """The multi-session probes' own random stream for `seed` (a str seed is hashed with
    SHA-512 by `random`, the same on every machine and run)."""
    return random.Random(f"{STREAM} {seed}")


def project_probes(rng: random.Random, project: str, sessions: Sequence[SessionPlan]) -> list[Probe]:
    """The multi-session probes of one project's sessions (none with fewer than two)."""
    probes: list[Probe] = []
    for (first, taught), (second, later) in itertools.combinations(sessions, 2):
        mine, theirs = list(taught), list(later)
        rng.shuffle(mine)
        rng.shuffle(theirs)
        for a, b in zip(mine, theirs, strict=False):
            pid = f"{first}+{second.rsplit('-', 1)[-1]}-multi-{a.kind}+{b.kind}"
            probe = pair_probe(rng, pid, project, (first, rng.choice(a.probes)),
                               (second, rng.choice(b.probes)))
            if probe is not None:
                probes.append(probe)
    return probes


def pair_probe(rng: random.Random, pid: str, project: str, first: tuple[str, ProbeSpec],
               second: tuple[str, ProbeSpec]) -> Probe | None:
    """The probe asking for both lessons in one answer, or None when its keys cannot tell the
    forms apart (see the module docstring)."""
    (one, a), (two, b) = first, second
    right = _form(a, b, a.answer, b.answer)
    forms = [right, _form(a, b, a.answer, b.distractors[0]), _form(a, b, a.distractors[0], b.answer),
             _form(a, b, a.distractors[0], b.distractors[0])]
    if len(set(forms)) != len(forms):
        return None
    rng.shuffle(forms)
    question = QUESTION.format(first=a.question, second=b.question)
    content = f"I'm working in the {project} repository. {question}"
    probe = Probe(
        id=pid, task=f"{project}: {_topic(a)}; {_topic(b)}",
        messages=(ProbeMessage(role="user", content=content),), prefix=f"1. {a.prefix}",
        choices=tuple(forms), answer=forms.index(right), source_session=two,
        right_keys_all=(a.right_keys, b.right_keys),
        wrong_keys=tuple(dict.fromkeys((*a.wrong_keys, *b.wrong_keys))),
        source_sessions=(one, two),
    )
    return probe if judgeable(probe) else None


def _form(a: ProbeSpec, b: ProbeSpec, first: str, second: str) -> str:
    """One written-out answer after the prefix `1. <prefix of a>`."""
    head = a.prefix + first
    close = f"\n{FENCE}" if head.count(FENCE) % 2 else ""
    return f"{first}{close}\n\n2. {b.prefix}{second}"


def _topic(spec: ProbeSpec) -> str:
    """A probe's task without its `project: ` head."""
    return spec.task.split(": ", 1)[-1]


def judgeable(probe: Probe) -> bool:
    """Whether the keys judge the right form right and every other form not, and the question
    holds none of them (echoing it shows nothing)."""
    def verdict(choice: str) -> str:
        return judge_groups(probe.prefix + choice, probe.key_groups, probe.wrong_keys).verdict

    keys = [k for group in probe.key_groups for k in group] + list(probe.wrong_keys)
    question = probe.messages[-1].content
    return (verdict(probe.correct) == RIGHT
            and all(verdict(c) != RIGHT for i, c in enumerate(probe.choices) if i != probe.answer)
            and not any(find_key(question, k) for k in keys))
