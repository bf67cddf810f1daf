"""Quirks learned at the command line: flags, test and build commands, config keys, error codes.

These sessions mostly run commands (`bash_only`: no file edit in the episode, so a session can
pair one with the test command's quirk); the config key is the exception, edited in the
project's TOML file and checked by its CLI.
"""

from __future__ import annotations

import random

from rune_mcp.bench.quirks.calls import ProbeSpec, Project, Quirk, bash, edit, passing, read

_FLAGS = [  # (subcommand, the guessed flag, the real flag's possible names, what it does)
    ("deploy", "--dry-run", ["--rehearse", "--plan-only", "--simulate"],
     "preview a deploy without applying it"),
    ("migrate", "--yes", ["--confirm-all", "--no-prompt", "--assume-ok"],
     "run migrations without the confirmation prompt"),
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
    what = meaning.capitalize()
    calls = (
        bash(f"{proj.cli} {sub} {wrong} --env staging", f"Exit code 2\n{err}", True, f"Let me {meaning}.",
             description=what),
        look,
        bash(f"{proj.cli} {sub} {right} --env staging",
             f"{sub}: 3 change(s) planned\n  ~ {proj.entity}: 12 rows\n  ~ {proj.other}: 4 rows\ndone.",
             text=f"In {proj.name} the flag is `{right}`, not `{wrong}`.", description=what),
    )
    clean = (bash(f"{proj.cli} {sub} {right} --env dev", f"{sub}: nothing to do\ndone.",
                  text=f"Using `{right}` as before.", description=what),)
    probes = (
        ProbeSpec(
            f"{proj.name}: {meaning} with {proj.cli}",
            f"I want to {meaning} on production.",
            f"```bash\n{proj.cli} {sub} ",
            f"{right} --env production",
            tuple(f"{f} --env production" for f in [wrong, *pool[1:]]),
            (right,),
            (wrong,),
        ),
        ProbeSpec(
            f"{proj.name}: flag of {proj.cli} {sub}",
            f"Which option of `{proj.cli} {sub}` should I use to {meaning}?",
            "Use `",
            f"{right}`",
            tuple(f"{f}`" for f in [wrong, *pool[1:]]),
            (right,),
            (wrong,),
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
    # plain pytest is the habit, however it is invoked
    keys = ((right,), ("pytest", "python -m unittest", "npm test", "python setup.py test"))
    probes = (
        ProbeSpec(
            f"{proj.name}: run the unit tests before pushing",
            "How do I run the unit tests before pushing?",
            "Run `",
            f"{right}`",
            ("pytest`", "python -m unittest`", "npm test`"),
            *keys,
        ),
        ProbeSpec(
            f"{proj.name}: CI test step",
            "Write the CI step that runs the test suite.",
            "```yaml\n- name: tests\n  run: ",
            right,
            ("pytest -q", "python -m pytest", "python setup.py test"),
            *keys,
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
            (right,),
            ("npm run build",),
        ),
        ProbeSpec(
            f"{proj.name}: deploy script bundle step",
            "Write the deploy script's bundling step.",
            "```bash\ncd web\n",
            right,
            ("npm run build", *pool[1:]),
            (right,),
            ("npm run build",),
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
    ("server", "timeout", ["request_timeout_ms", "deadline_ms", "rpc_budget_ms"], "the request timeout",
     1000),
    ("database", "pool_size", ["max_connections", "conn_limit", "pool_ceiling"],
     "the connection pool size", 1),
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
    # the guessed key only as a key (`timeout` alone is a word of the question)
    keys = ((right,), (f"{section}.{wrong}", f"{wrong}="))
    probes = (
        ProbeSpec(
            f"{proj.name}: set {thing} to {v2}",
            f"Set {thing} to {v2} in {proj.cfg}.",
            f"```toml\n[{section}]\n",
            f"{right} = {right_val(v2)}",
            (f"{wrong} = {wrong_val(v2)}", *(f"{p} = {right_val(v2)}" for p in pool[1:])),
            *keys,
        ),
        ProbeSpec(
            f"{proj.name}: config key for {thing}",
            f"Which key in {proj.cfg} controls {thing}?",
            f"It is `{section}.",
            f"{right}`",
            (f"{wrong}`", *(f"{p}`" for p in pool[1:])),
            *keys,
        ),
    )
    return Quirk("config_key", f"set {thing}", f"{thing} is [{section}] {right}", calls, clean, probes)


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
    # the fix without the CLI's name (an answer may call it through another path); forcing the
    # sync or wiping the cache is the habit
    keys = ((fix.split(" ", 1)[1],), ("sync --force", "rm -rf"))
    probes = (
        ProbeSpec(
            f"{proj.name}: {proj.cli} sync fails with {code}",
            f"`{proj.cli} sync` stops with error {code}. How do I get past it?",
            "Run `",
            f"{fix}`",
            (f"{proj.cli} sync --force`", "rm -rf .cache`", f"{fixes[1]}`"),
            *keys,
        ),
        ProbeSpec(
            f"{proj.name}: recover from {code}",
            f"Write the shell steps that recover from {code}.",
            "```bash\n",
            f"{fix}",
            (f"{proj.cli} sync --force", "rm -rf .cache", fixes[1]),
            *keys,
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
