"""`rune bench make-dataset`: fictional projects, their sessions, and probes of what was learned.

Whether an adapter remembers a session can only be measured on knowledge that exists nowhere
else. This generator invents projects whose conventions differ from what a model would guess
(see `rune_mcp.bench.quirks`), writes the sessions in which an agent learns them through
attempt -> error -> fix, as Claude Code JSONL transcripts with the noise real ones carry
(progress lines, assistant messages split over lines, thinking, long tool output, unrelated
steps), and writes probes (`probes.jsonl`) that ask for the same knowledge in other words,
plus general-knowledge control probes, and then multi-session probes: one task whose answer
needs two sessions' lessons of a project (`rune_mcp.bench.multiprobes`, drawn from their own
random stream after the rest, so a seed's sessions and other probes keep their bytes). Later
sessions of a project build on earlier ones: they use what was learned before without error.
Same seed, same bytes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rune_mcp.bench.multiprobes import SessionPlan, project_probes, stream
from rune_mcp.bench.quirks import KINDS, Call, ProbeSpec, Project, Quirk, bash, edit, passing, read
from rune_mcp.capture.write import ClaudeWriter
from rune_mcp.config import Settings
from rune_mcp.distill.probes import Probe, ProbeMessage
from rune_mcp.errors import UsageError
from rune_mcp.fsutil import atomic_write_text

DATASET_VERSION = 1
QUIRKS_PER_SESSION = 2
SESSIONS_PER_PROJECT = 3
_HEADS = [
    "tarn", "quill", "bore", "ostra", "vel", "mira", "kest", "lumo", "dras", "fen", "cor", "yar",
    "pell", "skal", "vint", "zeph", "orla", "brisk",
]
_TAILS = ["well", "mark", "byte", "forge", "dock", "loom", "gate", "wick", "fold", "spire"]
_ENTITIES = [
    "invoices", "shipments", "readings", "tickets", "subscriptions", "payouts", "bookings",
    "articles", "claims", "orders", "parcels", "leases",
]
_TASKS = [
    "Add a nightly job that archives old {e}",
    "Add an endpoint that lists overdue {e}",
    "Write an importer for {e} from the partner feed",
    "Add a monthly report of {e}",
    "Add a cleanup of duplicate {e}",
    "Expose {e} totals to the admin dashboard",
]
BASH_ONLY_NOISE = ("status", "log", "ls", "long_tests")

# General-knowledge controls: (question, prefix, answer, distractors). An adapter must not
# hurt these; they have no source session.
GENERAL = [
    ("Which Python keyword defines a function?", "The keyword is `", "def`", ("func`", "function`", "fn`")),
    ("What is the length of the Python list [4, 5, 6]?", "The length is ", "3", ("2", "4", "6")),
    ("Which git command shows the commit history?", "Use `git ", "log`", ("history`", "commits`", "past`")),
    ("Which HTTP status code means Not Found?", "The status code is ", "404", ("200", "500", "301")),
    ("Which shell command lists the files in a directory?", "Use `", "ls`", ("cd`", "rm`", "mv`")),
    ("Which Python built-in converts a string to an integer?", "Use `", "int()`",
     ("str()`", "chr()`", "ord()`")),
    ("What is the capital of France?", "The capital of France is ", "Paris", ("Berlin", "Madrid", "Rome")),
    ("How does a comment line start in Python?", "It starts with `", "#`", ("//`", "--`", ";`")),
    ("Which file lists a Node.js project's dependencies?", "It is `", "package.json`",
     ("setup.py`", "Cargo.toml`", "go.mod`")),
    ("Which SQL statement reads rows from a table?", "Use `", "SELECT`", ("INSERT`", "DELETE`", "DROP`")),
    ("What does the Python expression 2 ** 3 evaluate to?", "It evaluates to ", "8", ("6", "9", "5")),
    ("Which Python method adds an item to the end of a list?", "Use `list.", "append()`",
     ("push()`", "add()`", "insert_end()`")),
    ("How many bits are in a byte?", "A byte has ", "8 bits", ("4 bits", "16 bits", "10 bits")),
    ("Which command installs a Python package from PyPI?", "Run `", "pip install`",
     ("npm install`", "apt get`", "cargo add`")),
    ("What is the boolean opposite of True in Python?", "It is `", "False`", ("None`", "0`", "Nil`")),
    ("Which git command creates a new commit from staged changes?", "Use `git ", "commit`",
     ("push`", "stage`", "save`")),
]


# --- projects and sessions ----------------------------------------------------------------------


def make_project(rng: random.Random, used: set[str]) -> Project:
    while True:
        head, tail = rng.choice(_HEADS), rng.choice(_TAILS)
        if head + tail not in used:
            break
    used.add(head + tail)
    name = f"{head}{tail}"
    entity, other = rng.sample(_ENTITIES, 2)
    return Project(
        name=name,
        pkg=name,
        cli=f"{head}ctl",
        cwd=f"/home/dev/src/{name}",
        cfg=f"{name}.toml",
        entity=entity,
        other=other,
    )


def plan_quirks(rng: random.Random, proj: Project, kinds: list[str]) -> tuple[Project, list[Quirk]]:
    """Quirks in teaching order; the test command comes first so later steps can use it."""
    kinds = sorted(kinds, key=lambda k: k != "test_command")
    quirks: list[Quirk] = []
    for kind in kinds:
        quirk = KINDS[kind](proj, rng)
        if quirk.test_cmd:
            proj = dataclasses.replace(proj, test_cmd=quirk.test_cmd)
        quirks.append(quirk)
    return proj, quirks


def group_sessions(quirks: list[Quirk], per_session: int = 2) -> list[list[Quirk]]:
    """Two quirks a session; a session teaching the test command pairs it only with command-line
    quirks, because an edit after its fix would read as the fix of that episode."""
    rest = list(quirks)
    groups: list[list[Quirk]] = []
    while rest:
        head = rest.pop(0)
        group = [head]
        for q in list(rest):
            if len(group) >= per_session:
                break
            if head.kind != "test_command" or q.bash_only:
                group.append(q)
                rest.remove(q)
        groups.append(group)
    return groups


def session_task(rng: random.Random, proj: Project, group: list[Quirk], previous: str | None) -> str:
    task = rng.choice(_TASKS).format(e=proj.entity)
    needs = " and ".join(q.topic for q in group)
    text = f"{task} in {proj.name}. Along the way you will need to {needs}."
    if previous:
        text += f" This builds on the earlier session: {previous[0].lower()}{previous[1:]}"
    return text


def noise_calls(rng: random.Random, proj: Project, allow_edits: bool) -> list[Call]:
    """Unrelated steps: looking around, git, a long passing test run, a changelog edit."""
    pool = list(BASH_ONLY_NOISE) + (["changelog"] if allow_edits else [])
    out: list[Call] = []
    for kind in rng.sample(pool, rng.randint(1, 3)):
        if kind == "status":
            out.append(
                bash(
                    "git status --short",
                    f" M {proj.cfg}\n?? notes.txt",
                    text="Checking the working tree.",
                    description="Show changes",
                )
            )
        elif kind == "log":
            out.append(
                bash(
                    "git log --oneline -5",
                    "\n".join(
                        f"{rng.getrandbits(28):07x} {m}"
                        for m in ("fix typo", "bump deps", "add report", "refactor web", "initial")
                    ),
                    description="Recent commits",
                )
            )
        elif kind == "ls":
            readme = "\n".join(
                [
                    f"# {proj.name}",
                    "",
                    f"Service for {proj.entity} and {proj.other}.",
                    *(f"- module {i}: {proj.entity} helpers" for i in range(rng.randint(20, 60))),
                ]
            )
            out.append(read(proj, "README.md", readme, "Let me get oriented."))
        elif kind == "long_tests":
            out.append(
                bash(
                    proj.test_cmd,
                    passing(proj, rng, rng.randint(120, 260)),
                    text="Baseline test run.",
                    description="Run the test suite",
                )
            )
        else:
            out.append(
                edit(
                    proj,
                    "CHANGELOG.md",
                    "## Unreleased\n",
                    f"## Unreleased\n- {proj.entity}: housekeeping\n",
                    "Noting it in the changelog.",
                )
            )
    return out


# --- Claude Code JSONL ---------------------------------------------------------------------------


def _call(tr: ClaudeWriter, call: Call) -> None:
    """A `Call` in Claude Code's line shapes; Bash calls stream progress lines as they run."""
    tr.call(call.tool, call.input, call.output, call.is_error, thinking=call.thinking,
            text=call.text, progress=call.tool == "Bash")


def render_session(
    rng: random.Random,
    proj: Project,
    session_id: str,
    task: str,
    group: list[Quirk],
    known: list[Quirk],
    start: datetime,
) -> str:
    """A session: task, noise, what earlier sessions taught (done right), the new quirks."""
    tr = ClaudeWriter(session_id, proj.cwd, rng=rng, start=start)
    tr.user(task, snapshot=True, permissionMode="default")
    edits_ok = not any(q.kind == "test_command" for q in group)
    for call in noise_calls(rng, proj, edits_ok):
        _call(tr, call)
    if known and edits_ok:
        for call in rng.choice(known).clean:
            _call(tr, call)
    for i, quirk in enumerate(group):
        for call in quirk.calls:
            _call(tr, call)
        if i < len(group) - 1:
            for call in noise_calls(rng, proj, allow_edits=False):
                _call(tr, call)
    _call(
        tr,
        bash(
            f'git add -A && git commit -m "{proj.entity}: {group[0].topic}"',
            f"[main {rng.getrandbits(28):07x}] {proj.entity}: {group[0].topic}\n 3 files changed",
            text="Committing.",
            description="Commit",
        )
    )
    tr.finish("Done. " + " ".join(f"Note: {q.knowledge}." for q in group))
    return tr.jsonl()


# --- probes ------------------------------------------------------------------------------------


def make_probe(rng: random.Random, pid: str, spec: ProbeSpec, source: str | None,
               project: str | None) -> Probe:
    """The probe `spec` describes, its choices shuffled; a project's probes name the project."""
    choices = [spec.answer, *dict.fromkeys(d for d in spec.distractors if d != spec.answer)]
    rng.shuffle(choices)
    content = f"I'm working in the {project} repository. {spec.question}" if project else spec.question
    return Probe(id=pid, task=spec.task, messages=(ProbeMessage(role="user", content=content),),
                 prefix=spec.prefix, choices=tuple(choices), answer=choices.index(spec.answer),
                 source_session=source, right_keys=spec.right_keys, wrong_keys=spec.wrong_keys)


# --- the generator -------------------------------------------------------------------------------


def generate(out: Path, projects: int = 4, seed: int = 0, general: int = 12,
             sessions_per_project: int = SESSIONS_PER_PROJECT) -> dict[str, Any]:
    """Write `out/sessions/*.jsonl`, `out/probes.jsonl` and `out/dataset.json`; returns the
    manifest. Every random choice comes from one `random.Random(seed)`, so the default three
    sessions a project give the datasets they always gave."""
    if projects < 2:
        raise UsageError(
            "--projects must be at least 2 (the mismatched-adapter control needs another project)."
        )
    most = len(KINDS) // QUIRKS_PER_SESSION
    if not 1 <= sessions_per_project <= most:
        raise UsageError(f"--sessions must be 1 to {most} (two of the {len(KINDS)} kinds of quirk "
                         f"a session, none twice in a project), not {sessions_per_project}.")
    quirks_per_project = QUIRKS_PER_SESSION * sessions_per_project
    rng = random.Random(seed)
    kinds = list(KINDS)
    rng.shuffle(kinds)
    used: set[str] = set()
    start = datetime(2026, 1, 5, 9, 0, tzinfo=UTC) + timedelta(days=seed % 97)
    sessions: list[dict[str, Any]] = []
    probes: list[Probe] = []
    files: dict[str, str] = {}
    plans: list[tuple[str, list[SessionPlan]]] = []
    for p in range(projects):
        picked = [kinds[(p * quirks_per_project + i) % len(kinds)]
                  for i in range(quirks_per_project)]
        proj, quirks = plan_quirks(rng, make_project(rng, used), picked)
        known: list[Quirk] = []
        previous: tuple[str, str] | None = None
        plans.append((proj.name, []))
        for s, group in enumerate(group_sessions(quirks, QUIRKS_PER_SESSION)):
            name = f"{proj.name}-{s + 1:02d}"
            session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            task = session_task(rng, proj, group, previous[1] if previous else None)
            when = start + timedelta(days=p * 3 + s, hours=rng.randint(0, 8))
            files[name] = render_session(rng, proj, session_id, task, group, known, when)
            sessions.append(
                {
                    "name": name,
                    "session_id": session_id,
                    "project": proj.name,
                    "task": task,
                    "quirks": [q.kind for q in group],
                    "knowledge": [q.knowledge for q in group],
                    "depends_on": [previous[0]] if previous else [],
                }
            )
            probes += [make_probe(rng, f"{name}-{q.kind}-{k + 1}", spec, name, proj.name)
                       for q in group for k, spec in enumerate(q.probes)]
            known += group
            previous = (name, task.split(".")[0])
            plans[-1][1].append((name, group))
    for i, (question, prefix, answer, wrong) in enumerate(rng.sample(GENERAL, min(general, len(GENERAL)))):
        spec = ProbeSpec(question, question, prefix, answer, wrong)
        probes.append(make_probe(rng, f"general-{i + 1:02d}", spec, None, None))
    multi_rng = stream(seed)
    multi = [probe for name, plan in plans for probe in project_probes(multi_rng, name, plan)]
    probes += multi
    manifest = {
        "format_version": DATASET_VERSION,
        "seed": seed,
        "projects": projects,
        "sessions": sessions,
        "probe_count": len(probes),
        "multi_session_probe_count": len(multi),
        "kinds": sorted({k for s in sessions for k in s["quirks"]}),
    }
    (out / "sessions").mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        atomic_write_text(out / "sessions" / f"{name}.jsonl", text)
    atomic_write_text(out / "probes.jsonl", "".join(p.jsonl() for p in probes))
    atomic_write_text(out / "dataset.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def register(sub: Any) -> None:
    p = sub.add_parser(
        "make-dataset", help="generate fictional project sessions and probes of what they teach"
    )
    p.add_argument("--out", type=Path, required=True, help="folder for sessions/, probes.jsonl, dataset.json")
    p.add_argument(
        "--projects", type=int, default=4, help="fictional projects (default 4)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--sessions", type=int, default=SESSIONS_PER_PROJECT,
                   help=f"sessions a project, two quirks each (default {SESSIONS_PER_PROJECT}; "
                        f"at most {len(KINDS) // QUIRKS_PER_SESSION})")
    p.add_argument("--general", type=int, default=12, help="general-knowledge control probes (default 12)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings) -> int:
    manifest = generate(args.out, args.projects, args.seed, args.general, args.sessions)
    print(
        f"wrote {len(manifest['sessions'])} sessions of {args.projects} projects and "
        f"{manifest['probe_count']} probes ({manifest['multi_session_probe_count']} of them "
        f"multi-session; {len(manifest['kinds'])} kinds of quirk, seed {args.seed}) to {args.out}"
    )
    return 0
