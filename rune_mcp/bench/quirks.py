"""Quirks: project conventions a model cannot guess, each with the session steps that teach it.

The memory benchmark needs knowledge that lives only in a session. Each kind of quirk below
draws a fictional convention (a renamed API, a required argument, a renamed CLI flag, a
config key, ...) from small pools with a seeded `random.Random`, and returns:

- `calls`: how an agent learns it: the obvious attempt, the error it gets, a look at the
  project's docs or code, the fix, and the check that passes;
- `clean`: how a later session that already knows it does it right the first time (this is
  how sessions of one project depend on each other);
- `probes`: questions asking for the same knowledge in other words, with the answer, the
  obvious wrong guess and other plausible distractors.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Call:
    """One tool call with its result; `text` is what the assistant said before it."""

    tool: str
    input: dict[str, Any]
    output: str
    is_error: bool = False
    text: str = ""
    thinking: str = ""


@dataclass(frozen=True)
class ProbeSpec:
    task: str
    question: str
    prefix: str
    answer: str
    distractors: tuple[str, ...]


@dataclass(frozen=True)
class Project:
    """A fictional repository: its name, package, CLI and domain."""

    name: str
    pkg: str
    cli: str
    cwd: str
    cfg: str
    entity: str
    other: str
    test_cmd: str = "pytest -q"


@dataclass(frozen=True)
class Quirk:
    kind: str
    topic: str
    knowledge: str
    calls: tuple[Call, ...]
    clean: tuple[Call, ...]
    probes: tuple[ProbeSpec, ...]
    bash_only: bool = False
    test_cmd: str | None = None  # the project's test command, for the test_command kind
    extra: dict[str, str] = field(default_factory=dict)


# --- tool-call builders ---------------------------------------------------------------------


def bash(
    command: str, output: str, error: bool = False, text: str = "", thinking: str = "", description: str = ""
) -> Call:
    args: dict[str, Any] = {"command": command}
    if description:
        args["description"] = description
    return Call("Bash", args, output, error, text, thinking)


def write(proj: Project, path: str, content: str, text: str = "") -> Call:
    full = f"{proj.cwd}/{path}"
    return Call(
        "Write", {"file_path": full, "content": content}, f"File created successfully at: {full}", False, text
    )


def edit(proj: Project, path: str, old: str, new: str, text: str = "", thinking: str = "") -> Call:
    full = f"{proj.cwd}/{path}"
    return Call(
        "Edit",
        {"file_path": full, "old_string": old, "new_string": new, "replace_all": False},
        f"The file {full} has been updated successfully.",
        False,
        text,
        thinking,
    )


def read(proj: Project, path: str, content: str, text: str = "") -> Call:
    numbered = "\n".join(f"{i + 1:6d}\u2192{line}" for i, line in enumerate(content.splitlines()))
    return Call("Read", {"file_path": f"{proj.cwd}/{path}"}, numbered, False, text)


def grep(proj: Project, pattern: str, path: str, hits: list[str], text: str = "") -> Call:
    return Call(
        "Grep",
        {"pattern": pattern, "path": f"{proj.cwd}/{path}", "output_mode": "content"},
        "\n".join(f"{path}:{line}" for line in hits),
        False,
        text,
    )


def passing(proj: Project, rng: random.Random, n: int | None = None) -> str:
    """A passing test run's output, long enough to be noise."""
    n = n or rng.randint(12, 40)
    lines = [f"tests/test_{proj.entity}_{i % 7}.py::test_case_{i} PASSED" for i in range(n)]
    return "\n".join([*lines, f"{n} passed in {rng.uniform(0.8, 9.0):.2f}s"])


def failing(proj: Project, rng: random.Random, test: str, frames: list[str], error: str) -> str:
    """A pytest failure whose last line is `error`."""
    n = rng.randint(8, 30)
    head = [f"tests/test_{proj.entity}_{i % 5}.py::test_case_{i} PASSED" for i in range(n)]
    tb = [
        f"tests/{test}.py::test_main FAILED",
        "",
        "=" * 20 + " FAILURES " + "=" * 20,
        "____ test_main ____",
        *frames,
        f"E   {error}",
        f"FAILED tests/{test}.py::test_main - {error.split(':', maxsplit=1)[0]}",
        f"1 failed, {n} passed in {rng.uniform(0.8, 9.0):.2f}s",
    ]
    return "\n".join(head + tb)


def _pick(rng: random.Random, pool: list[str], k: int) -> list[str]:
    return rng.sample(pool, k)


def _code_flow(
    proj: Project,
    rng: random.Random,
    path: str,
    wrong: str,
    right: str,
    error: str,
    look: Call,
    diagnosis: str,
    thinking: str,
) -> tuple[Call, ...]:
    """Write code the obvious way -> tests fail -> look -> fix -> tests pass."""
    frames = [f"{path}:{rng.randint(3, 30)}: in load", f"    {wrong.strip()}"]
    return (
        write(proj, path, wrong, "I'll add the module."),
        bash(
            proj.test_cmd,
            failing(proj, rng, f"test_{proj.entity}_new", frames, error),
            True,
            "Now the tests.",
            description="Run the test suite",
        ),
        look,
        edit(proj, path, wrong, right, diagnosis, thinking),
        bash(proj.test_cmd, passing(proj, rng), description="Run the test suite"),
    )


def _clean_code(proj: Project, rng: random.Random, path: str, right: str) -> tuple[Call, ...]:
    return (
        write(proj, path, right, "Following the project's convention from last time."),
        bash(proj.test_cmd, passing(proj, rng), description="Run the test suite"),
    )


# --- the kinds --------------------------------------------------------------------------------


def renamed_api(proj: Project, rng: random.Random) -> Quirk:
    mod = rng.choice(["db", "store", "persist", "datastore"])
    wrong = rng.choice(["connect", "get_connection", "create_engine"])
    right, o1, o2 = _pick(rng, ["open_pool", "lease", "dial", "checkout", "borrow_conn", "attach"], 3)
    path = f"{proj.pkg}/reports/{proj.entity}_report.py"
    code = (
        f"import {proj.pkg}.{mod}\n\n\ndef load(DSN):\n    conn = {proj.pkg}.{mod}.{{}}(DSN)\n"
        f'    return conn.query("select * from {proj.entity}")\n'
    )
    look = grep(
        proj,
        "^def ",
        f"{proj.pkg}/{mod}/__init__.py",
        [f"12:def {right}(dsn, *, retries=3):", "48:def close_all():", "61:def health():"],
        f"`{wrong}` does not exist. Let me see what the module offers.",
    )
    diag = (
        f"`{proj.pkg}.{mod}` has no `{wrong}`: in {proj.name} connections come from "
        f"`{proj.pkg}.{mod}.{right}(dsn)`. Switching to it."
    )
    calls = _code_flow(
        proj,
        rng,
        path,
        code.format(wrong),
        code.format(right),
        f"AttributeError: module '{proj.pkg}.{mod}' has no attribute '{wrong}'",
        look,
        diag,
        f"The {mod} module must use another name for connecting.",
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: write a function that loads every {proj.other} row from the database",
            f"Write a function that loads every {proj.other} row from the database.",
            f"```python\nimport {proj.pkg}.{mod}\n\n\ndef load_all(DSN):\n    conn = {proj.pkg}.{mod}.",
            f"{right}(DSN)",
            (f"{wrong}(DSN)", f"{o1}(DSN)", f"{o2}(DSN)"),
        ),
        ProbeSpec(
            f"{proj.name}: how to get a database connection",
            "How do I get a database connection in this codebase?",
            f"Call `{proj.pkg}.{mod}.",
            f"{right}(dsn)`",
            (f"{wrong}(dsn)`", f"{o1}(dsn)`", f"{o2}(dsn)`"),
        ),
    )
    return Quirk(
        "renamed_api",
        "read from the database",
        f"database connections come from {proj.pkg}.{mod}.{right}(dsn), not {wrong}",
        calls,
        _clean_code(
            proj,
            rng,
            f"{proj.pkg}/reports/{proj.other}_report.py",
            code.format(right).replace(proj.entity, proj.other),
        ),
        probes,
    )


def wrapped_api(proj: Project, rng: random.Random) -> Quirk:
    mod = rng.choice(["net", "wire", "transport", "outbound"])
    fn = rng.choice(["fetch", "call_remote", "http_get", "pull_url"])
    raw = ["requests.get(url)", "urllib.request.urlopen(url)", "httpx.get(url)"]
    wrong = rng.choice(raw)
    path = f"{proj.pkg}/integrations/partner_feed.py"
    code = "import requests\nimport urllib.request\n\n\ndef download(url):\n    resp = {}\n    return resp\n"
    right_call = f"{proj.pkg}.{mod}.{fn}(url)"
    look = read(
        proj,
        "docs/networking.md",
        f"# Networking\n\nAll outbound HTTP goes through `{right_call}`, which adds retries,\n"
        "auth headers and egress auditing. Direct clients are blocked by the sandbox.",
        "The sandbox blocks direct calls. Checking the networking notes.",
    )
    diag = f"Direct HTTP clients are blocked in {proj.name}; outbound calls must use `{right_call}`."
    calls = _code_flow(
        proj,
        rng,
        path,
        code.format(wrong),
        code.format(right_call).replace("import requests\nimport urllib.request", f"import {proj.pkg}.{mod}"),
        f"{proj.pkg}.sandbox.EgressBlocked: direct network access is disabled; see docs/networking.md",
        look,
        diag,
        "Egress is sandboxed.",
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: download the partner's price list over HTTP",
            "Add a helper that downloads the partner's price list from a URL.",
            "```python\ndef download_prices(url):\n    resp = ",
            right_call,
            tuple(raw),
        ),
        ProbeSpec(
            f"{proj.name}: make an outbound HTTP request",
            "What should code in this repository call to make an outbound HTTP request?",
            "It should call `",
            f"{right_call}`",
            tuple(f"{r}`" for r in raw),
        ),
    )
    return Quirk(
        "wrapped_api",
        "call the partner's HTTP API",
        f"outbound HTTP must go through {right_call}",
        calls,
        _clean_code(
            proj,
            rng,
            f"{proj.pkg}/integrations/rates.py",
            f"import {proj.pkg}.{mod}\n\n\ndef rates(url):\n    return {right_call}\n",
        ),
        probes,
    )


def required_argument(proj: Project, rng: random.Random) -> Quirk:
    cls, mod = rng.choice([("Queue", "jobs"), ("Ledger", "ledger"), ("Mailer", "mail"), ("Cache", "cache")])
    args = ["tenant", "region", "namespace", "shard"]
    arg, o1 = _pick(rng, args, 2)
    const = f"{proj.pkg}.settings.{arg.upper()}"
    path = f"{proj.pkg}/tasks/{proj.entity}_sync.py"
    code = (
        f"import {proj.pkg}.{mod}\n\n\ndef build():\n"
        f'    obj = {proj.pkg}.{mod}.{cls}("{proj.entity}"{{}})\n    return obj\n'
    )
    look = read(
        proj,
        f"{proj.pkg}/{mod}/__init__.py",
        f"class {cls}:\n    def __init__(self, name, *, {arg}):\n        self.name = name\n"
        f"        self.{arg} = {arg}  # every {cls} is scoped; use settings.{arg.upper()}",
        f"Let me read the {cls} constructor.",
    )
    diag = f"Every `{cls}` in {proj.name} must be scoped: pass `{arg}={const}`."
    calls = _code_flow(
        proj,
        rng,
        path,
        code.format(""),
        code.format(f", {arg}={const}"),
        f"TypeError: {cls}.__init__() missing 1 required keyword-only argument: '{arg}'",
        look,
        diag,
        f"{cls} wants a keyword argument.",
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: create a {cls} for {proj.other}",
            f"Create a {cls} for the {proj.other} work.",
            f'```python\nobj = {proj.pkg}.{mod}.{cls}("{proj.other}", ',
            f"{arg}={const})",
            (")", "maxsize=100)", f"{o1}={proj.pkg}.settings.{o1.upper()})"),
        ),
        ProbeSpec(
            f"{proj.name}: what must every {cls} be given",
            f"What keyword argument must every {cls} be constructed with?",
            "It needs `",
            f"{arg}=`",
            tuple(f"{a}=`" for a in args if a != arg),
        ),
    )
    return Quirk(
        "required_argument",
        f"set up the {cls.lower()}",
        f"{cls} requires {arg}={const}",
        calls,
        _clean_code(
            proj,
            rng,
            f"{proj.pkg}/tasks/{proj.other}_sync.py",
            code.format(f", {arg}={const}").replace(proj.entity, proj.other),
        ),
        probes,
    )


_FLAGS = [
    (
        "deploy",
        "--dry-run",
        ["--rehearse", "--plan-only", "--simulate"],
        "preview a deploy without applying it",
    ),
    (
        "migrate",
        "--yes",
        ["--confirm-all", "--no-prompt", "--assume-ok"],
        "run migrations without the confirmation prompt",
    ),
    ("seed", "--force", ["--overwrite", "--clobber", "--replace-all"], "reseed over existing data"),
    ("purge", "--all", ["--everything", "--sweep", "--full"], "purge every stale record"),
]


def cli_flag(proj: Project, rng: random.Random) -> Quirk:
    sub, wrong, pool, meaning = rng.choice(_FLAGS)
    pool = list(pool)
    rng.shuffle(pool)
    right = pool[0]
    err = (
        f"usage: {proj.cli} {sub} [-h] [--env ENV] [{pool[0]}] [--verbose]\n"
        f"{proj.cli} {sub}: error: unrecognized arguments: {wrong}"
    )
    look = read(
        proj,
        "docs/cli.md",
        f"## {proj.cli} {sub}\n\n`{right}`: {meaning}.\n`--env ENV`: target environment.",
        f"`{wrong}` is not a flag here. Checking the CLI docs.",
    )
    calls = (
        bash(
            f"{proj.cli} {sub} {wrong} --env staging",
            f"Exit code 2\n{err}",
            True,
            f"Let me {meaning}.",
            description=meaning.capitalize(),
        ),
        look,
        bash(
            f"{proj.cli} {sub} {right} --env staging",
            f"{sub}: 3 change(s) planned\n  ~ {proj.entity}: 12 rows\n  ~ {proj.other}: 4 rows\ndone.",
            text=f"In {proj.name} the flag is `{right}`, not `{wrong}`.",
            description=meaning.capitalize(),
        ),
    )
    clean = (
        bash(
            f"{proj.cli} {sub} {right} --env dev",
            f"{sub}: nothing to do\ndone.",
            text=f"Using `{right}` as before.",
            description=meaning.capitalize(),
        ),
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: {meaning} with {proj.cli}",
            f"I want to {meaning} on production.",
            f"```bash\n{proj.cli} {sub} ",
            f"{right} --env production",
            tuple(f"{f} --env production" for f in [wrong, *pool[1:]]),
        ),
        ProbeSpec(
            f"{proj.name}: flag of {proj.cli} {sub}",
            f"Which option of `{proj.cli} {sub}` should I use to {meaning}?",
            "Use `",
            f"{right}`",
            tuple(f"{f}`" for f in [wrong, *pool[1:]]),
        ),
    )
    return Quirk(
        "cli_flag",
        meaning,
        f"{proj.cli} {sub} takes {right} (not {wrong}) to {meaning}",
        calls,
        clean,
        probes,
        bash_only=True,
    )


def test_command(proj: Project, rng: random.Random) -> Quirk:
    right = rng.choice(["make check", "./dev test", "just verify", "tox -e unit", "hatch run ci:unit"])
    err = (
        f"ImportError while loading conftest '{proj.cwd}/tests/conftest.py'.\n"
        f"tests/conftest.py:3: in <module>\n    from {proj.pkg}_testkit import fixtures\n"
        f"E   ModuleNotFoundError: No module named '{proj.pkg}_testkit'"
    )
    look = read(
        proj,
        "CONTRIBUTING.md",
        f"# Contributing\n\nRun the tests with `{right}`: it installs the {proj.pkg}_testkit\n"
        "fixtures into a throwaway environment first. Plain pytest cannot find them.",
        "The test kit is missing; the contributing notes should say how tests run.",
    )
    calls = (
        bash(
            "pytest -q",
            f"Exit code 4\n{err}",
            True,
            "Let me run the tests first.",
            description="Run the test suite",
        ),
        look,
        bash(
            right,
            passing(proj, rng),
            text=f"{proj.name} runs its tests through `{right}`.",
            description="Run the test suite",
        ),
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: run the unit tests before pushing",
            "How do I run the unit tests before pushing?",
            "Run `",
            f"{right}`",
            ("pytest`", "python -m unittest`", "npm test`"),
        ),
        ProbeSpec(
            f"{proj.name}: CI test step",
            "Write the CI step that runs the test suite.",
            "```yaml\n- name: tests\n  run: ",
            right,
            ("pytest -q", "python -m pytest", "python setup.py test"),
        ),
    )
    return Quirk(
        "test_command",
        "run the tests",
        f"tests run with {right}, not plain pytest",
        calls,
        (bash(right, passing(proj, rng), description="Run the test suite"),),
        probes,
        bash_only=True,
        test_cmd=right,
    )


def build_command(proj: Project, rng: random.Random) -> Quirk:
    pool = ["npm run bundle", "npm run compile:prod", "npm run pack:web"]
    rng.shuffle(pool)
    right = pool[0]
    script = right.split()[-1]
    err = (
        'npm ERR! Missing script: "build"\nnpm ERR!\nnpm ERR! To see a list of scripts, run:\n'
        "npm ERR!   npm run\n\nnpm ERR! A complete log of this run can be found in:\n"
        "npm ERR!     /home/dev/.npm/_logs/debug-0.log"
    )
    look = read(
        proj,
        "web/package.json",
        f'{{\n  "name": "{proj.name}-web",\n  "scripts": {{\n    "{script}": "vite build --mode prod",\n'
        '    "dev": "vite",\n    "lint": "eslint src"\n  }\n}',
        "No build script. Let me read package.json.",
    )
    out = "\n".join(
        [
            "vite v5.4.2 building for production...",
            *(
                f"dist/assets/chunk-{i:02d}.js  {rng.randint(2, 90)}.{rng.randint(0, 99)} kB"
                for i in range(rng.randint(10, 30))
            ),
            f"built in {rng.uniform(2, 9):.2f}s",
        ]
    )
    calls = (
        bash(
            "cd web && npm run build",
            f"Exit code 1\n{err}",
            True,
            "Building the web bundle.",
            description="Build the web bundle",
        ),
        look,
        bash(
            f"cd web && {right}",
            out,
            text=f"The production bundle script is `{script}`.",
            description="Build the web bundle",
        ),
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: produce the production web bundle",
            "How do I produce the production bundle of the web UI?",
            "Run `cd web && ",
            f"{right}`",
            ("npm run build`", *(f"{p}`" for p in pool[1:])),
        ),
        ProbeSpec(
            f"{proj.name}: deploy script bundle step",
            "Write the deploy script's bundling step.",
            "```bash\ncd web\n",
            right,
            ("npm run build", *pool[1:]),
        ),
    )
    return Quirk(
        "build_command",
        "build the web bundle",
        f"the web bundle builds with {right}",
        calls,
        (bash(f"cd web && {right}", out, description="Build the web bundle"),),
        probes,
        bash_only=True,
    )


# (section, the guessed key, the real key's possible names, what it sets, unit factor)
_CONFIG = [
    (
        "server",
        "timeout",
        ["request_timeout_ms", "deadline_ms", "rpc_budget_ms"],
        "the request timeout",
        1000,
    ),
    (
        "database",
        "pool_size",
        ["max_connections", "conn_limit", "pool_ceiling"],
        "the connection pool size",
        1,
    ),
    ("cache", "ttl", ["expire_after_s", "lifetime_s", "evict_after_s"], "the cache lifetime", 1),
]


def config_key(proj: Project, rng: random.Random) -> Quirk:
    section, wrong, names, thing, factor = rng.choice(_CONFIG)

    def right_val(v: int) -> str:
        return str(v * factor)

    wrong_val = str
    pool = list(names)
    rng.shuffle(pool)
    right = pool[0]
    v1, v2 = rng.sample([5, 10, 20, 30, 45, 60], 2)
    old = f"[{section}]\n"
    calls = (
        edit(proj, proj.cfg, old, f"{old}{wrong} = {wrong_val(v1)}\n", f"Setting {thing} to {v1}."),
        bash(
            f"{proj.cli} check-config",
            f"Exit code 1\nConfigError: unknown key '{wrong}' in [{section}] of {proj.cfg}",
            True,
            description="Validate the configuration",
        ),
        read(
            proj, "docs/config.md", f"## [{section}]\n\n`{right}`: {thing}.", "Checking the config reference."
        ),
        edit(
            proj,
            proj.cfg,
            f"{wrong} = {wrong_val(v1)}",
            f"{right} = {right_val(v1)}",
            f"{proj.name} calls it `{right}` (note the unit).",
        ),
        bash(f"{proj.cli} check-config", "config OK (3 sections)", description="Validate the configuration"),
    )
    clean = (
        edit(proj, proj.cfg, old, f"{old}{right} = {right_val(v2)}\n", f"Setting `{right}` again."),
        bash(f"{proj.cli} check-config", "config OK (3 sections)", description="Validate the configuration"),
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: set {thing} to {v2}",
            f"Set {thing} to {v2} in {proj.cfg}.",
            f"```toml\n[{section}]\n",
            f"{right} = {right_val(v2)}",
            (f"{wrong} = {wrong_val(v2)}", *(f"{p} = {right_val(v2)}" for p in pool[1:])),
        ),
        ProbeSpec(
            f"{proj.name}: config key for {thing}",
            f"Which key in {proj.cfg} controls {thing}?",
            f"It is `{section}.",
            f"{right}`",
            (f"{wrong}`", *(f"{p}`" for p in pool[1:])),
        ),
    )
    return Quirk("config_key", f"set {thing}", f"{thing} is [{section}] {right}", calls, clean, probes)


def file_layout(proj: Project, rng: random.Random) -> Quirk:
    dirs = ["endpoints", "routes", "http_handlers", "web_views", "handlers", "views", "api"]
    right = rng.choice(dirs[:4])
    wrongs = [d for d in dirs if d != right]
    wrong = rng.choice(dirs[4:])
    body = (
        f"from {proj.pkg}.web import route\n\n\n"
        f'@route("/{proj.entity}")\ndef index(request):\n    return []\n'
    )
    err = (
        f"LookupError: no route registered for '/{proj.entity}'; route modules are discovered "
        f"only under {proj.pkg}/{right}/"
    )
    frames = [f"{proj.pkg}/web/registry.py:41: in resolve", "    raise LookupError(msg)"]
    calls = (
        write(proj, f"{proj.pkg}/{wrong}/{proj.entity}.py", body, "Adding the endpoint module."),
        bash(
            proj.test_cmd,
            failing(proj, rng, f"test_{proj.entity}_api", frames, err),
            True,
            description="Run the test suite",
        ),
        grep(
            proj,
            "discover",
            f"{proj.pkg}/web/registry.py",
            [f'12:ROUTE_PACKAGE = "{proj.pkg}.{right}"  # discover() imports only this package'],
            "Where does the registry look for routes?",
        ),
        write(
            proj,
            f"{proj.pkg}/{right}/{proj.entity}.py",
            body,
            f"Endpoints in {proj.name} live in `{proj.pkg}/{right}/`; moving the module there.",
        ),
        bash(proj.test_cmd, passing(proj, rng), description="Run the test suite"),
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: add a /{proj.other} HTTP endpoint",
            f"Where should the module for a new /{proj.other} endpoint go?",
            "Create it as `",
            f"{proj.pkg}/{right}/{proj.other}.py`",
            tuple(
                f"{proj.pkg}/{d}/{proj.other}.py`"
                for d in [wrong, *rng.sample([w for w in wrongs if w != wrong], 2)]
            ),
        ),
        ProbeSpec(
            f"{proj.name}: where HTTP routes live",
            "Which folder holds the HTTP route modules?",
            "They live in `",
            f"{proj.pkg}/{right}/`",
            tuple(f"{proj.pkg}/{d}/`" for d in [wrong, *rng.sample([w for w in wrongs if w != wrong], 2)]),
        ),
    )
    return Quirk(
        "file_layout",
        "add an HTTP endpoint",
        f"route modules live in {proj.pkg}/{right}/",
        calls,
        _clean_code(proj, rng, f"{proj.pkg}/{right}/{proj.other}.py", body.replace(proj.entity, proj.other)),
        probes,
    )


def error_code(proj: Project, rng: random.Random) -> Quirk:
    code = f"{proj.pkg[:3].upper()}-E{rng.randint(1000, 9999)}"
    fixes = [
        f"{proj.cli} cache rebuild --schemas",
        f"{proj.cli} lock refresh",
        f"{proj.cli} keys rotate --local",
        f"{proj.cli} index reseed",
    ]
    rng.shuffle(fixes)
    fix = fixes[0]
    err = f"Exit code 3\nerror[{code}]: local state is out of date\n  hint: see docs/errors.md#{code.lower()}"
    calls = (
        bash(f"{proj.cli} sync", err, True, "Syncing the schemas.", description="Sync the schemas"),
        read(
            proj,
            "docs/errors.md",
            f"## {code}\n\nThe local state is stale. Run `{fix}` and retry.",
            f"Looking up {code}.",
        ),
        bash(
            fix,
            "rebuilt 14 entries",
            text=f"{code} means stale local state; `{fix}` clears it.",
            description="Clear the stale state",
        ),
        bash(f"{proj.cli} sync", "synced 14 schemas", description="Sync the schemas"),
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: {proj.cli} sync fails with {code}",
            f"`{proj.cli} sync` stops with error {code}. How do I get past it?",
            "Run `",
            f"{fix}`",
            (f"{proj.cli} sync --force`", "rm -rf .cache`", f"{fixes[1]}`"),
        ),
        ProbeSpec(
            f"{proj.name}: recover from {code}",
            f"Write the shell steps that recover from {code}.",
            "```bash\n",
            f"{fix}",
            (f"{proj.cli} sync --force", "rm -rf .cache", fixes[1]),
        ),
    )
    return Quirk(
        "error_code",
        f"recover from {code}",
        f"{code} is fixed by {fix}",
        calls,
        (
            bash(fix, "rebuilt 2 entries", description="Clear the stale state"),
            bash(f"{proj.cli} sync", "synced 16 schemas", description="Sync the schemas"),
        ),
        probes,
        bash_only=True,
    )


_BANNED = [
    ("json", "jsonx", "dumps(data)", "turn a record into a JSON string"),
    ("pickle", "serde", "dumps(data)", "serialize a record to bytes"),
    ("datetime", "clock", "now()", "get the current time"),
    ("random", "entropy", "token(16)", "make a random token"),
]


def banned_module(proj: Project, rng: random.Random) -> Quirk:
    banned, alt, use, meaning = rng.choice(_BANNED)
    others = [b for b, *_ in _BANNED if b != banned]
    path = f"{proj.pkg}/export/{proj.entity}_codec.py"
    wrong_code = f"import {banned}\n\n\ndef encode(data):\n    return {banned}.{use}\n"
    right_code = f"from {proj.pkg} import {alt}\n\n\ndef encode(data):\n    return {alt}.{use}\n"
    lint = f"python -m {proj.pkg}.lint"
    calls = (
        write(proj, path, wrong_code, f"I'll {meaning} with {banned}."),
        bash(
            lint,
            f"{path}:1:1: BAN001 `{banned}` is banned in {proj.name}; see docs/style.md\nFound 1 error.",
            True,
            description="Lint",
        ),
        read(
            proj,
            "docs/style.md",
            f"## Banned modules\n\n- `{banned}`: use `{proj.pkg}.{alt}` (audited, deterministic).",
            "A banned module. Checking the style notes.",
        ),
        Call(
            "Write",
            {"file_path": f"{proj.cwd}/{path}", "content": right_code},
            f"The file {proj.cwd}/{path} has been updated successfully.",
            False,
            f"{proj.name} bans `{banned}`; it uses `{proj.pkg}.{alt}` instead.",
        ),
        bash(lint, "All checks passed.", description="Lint"),
    )
    clean = (
        write(proj, f"{proj.pkg}/export/{proj.other}_codec.py", right_code.replace("encode", "encode_other")),
        bash(lint, "All checks passed.", description="Lint"),
    )
    probes = (
        ProbeSpec(
            f"{proj.name}: {meaning} for {proj.other}",
            f"Write a function to {meaning} for {proj.other}.",
            "```python\n",
            f"from {proj.pkg} import {alt}",
            (f"import {banned}", *(f"import {o}" for o in others[:2])),
        ),
        ProbeSpec(
            f"{proj.name}: which module to use instead of {banned}",
            f"Which module should code here use to {meaning}?",
            "Import `",
            f"{proj.pkg}.{alt}`",
            (f"{banned}`", *(f"{o}`" for o in others[:2])),
        ),
    )
    return Quirk("banned_module", meaning, f"{banned} is banned; use {proj.pkg}.{alt}", calls, clean, probes)


KINDS: dict[str, Callable[[Project, random.Random], Quirk]] = {
    "renamed_api": renamed_api,
    "wrapped_api": wrapped_api,
    "required_argument": required_argument,
    "cli_flag": cli_flag,
    "test_command": test_command,
    "build_command": build_command,
    "config_key": config_key,
    "file_layout": file_layout,
    "error_code": error_code,
    "banned_module": banned_module,
}
