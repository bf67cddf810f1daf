"""Quirks learned by writing code: APIs, arguments, file layout and modules a project has its way.

Each is taught by `code_flow` (write the obvious code, the tests fail, look at the project,
fix, the tests pass) or a lint run in its place, and re-used cleanly by `clean_code`.
"""

from __future__ import annotations

import random

from rune_mcp.bench.quirks.calls import (
    Call,
    ProbeSpec,
    Project,
    Quirk,
    bash,
    clean_code,
    code_flow,
    failing,
    grep,
    passing,
    pick,
    read,
    write,
)


def renamed_api(proj: Project, rng: random.Random) -> Quirk:
    mod = rng.choice(["db", "store", "persist", "datastore"])
    wrong = rng.choice(["connect", "get_connection", "create_engine"])
    right, o1, o2 = pick(rng, ["open_pool", "lease", "dial", "checkout", "borrow_conn", "attach"], 3)
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
    calls = code_flow(
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
    keys = ((f"{mod}.{right}", f"{right}("), (f"{mod}.{wrong}", f"{wrong}("))
    probes = (
        ProbeSpec(
            f"{proj.name}: write a function that loads every {proj.other} row from the database",
            f"Write a function that loads every {proj.other} row from the database.",
            f"```python\nimport {proj.pkg}.{mod}\n\n\ndef load_all(DSN):\n    conn = {proj.pkg}.{mod}.",
            f"{right}(DSN)",
            (f"{wrong}(DSN)", f"{o1}(DSN)", f"{o2}(DSN)"),
            *keys,
        ),
        ProbeSpec(
            f"{proj.name}: how to get a database connection",
            "How do I get a database connection in this codebase?",
            f"Call `{proj.pkg}.{mod}.",
            f"{right}(dsn)`",
            (f"{wrong}(dsn)`", f"{o1}(dsn)`", f"{o2}(dsn)`"),
            *keys,
        ),
    )
    return Quirk(
        "renamed_api",
        "read from the database",
        f"database connections come from {proj.pkg}.{mod}.{right}(dsn), not {wrong}",
        calls,
        clean_code(
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
    calls = code_flow(
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
    # the habit is a direct HTTP client, however it is spelled
    direct = ("import requests", "requests.get(", "import urllib", "urlopen(", "import httpx", "httpx.get(")
    keys = ((f"{mod}.{fn}(", f"{mod} import {fn}"), direct)
    probes = (
        ProbeSpec(
            f"{proj.name}: download the partner's price list over HTTP",
            "Add a helper that downloads the partner's price list from a URL.",
            "```python\ndef download_prices(url):\n    resp = ",
            right_call,
            tuple(raw),
            *keys,
        ),
        ProbeSpec(
            f"{proj.name}: make an outbound HTTP request",
            "What should code in this repository call to make an outbound HTTP request?",
            "It should call `",
            f"{right_call}`",
            tuple(f"{r}`" for r in raw),
            *keys,
        ),
    )
    return Quirk(
        "wrapped_api",
        "call the partner's HTTP API",
        f"outbound HTTP must go through {right_call}",
        calls,
        clean_code(
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
    arg, o1 = pick(rng, args, 2)
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
    calls = code_flow(
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
            (f"{arg}=",),
            (f'{cls}("{proj.other}")', f"{cls}('{proj.other}')"),  # the habit: no scope at all
        ),
        ProbeSpec(
            f"{proj.name}: what must every {cls} be given",
            f"What keyword argument must every {cls} be constructed with?",
            "It needs `",
            f"{arg}=`",
            tuple(f"{a}=`" for a in args if a != arg),
            (arg,),
            tuple(a for a in args if a != arg),  # another scope named: a guess, not the lesson
        ),
    )
    return Quirk(
        "required_argument",
        f"set up the {cls.lower()}",
        f"{cls} requires {arg}={const}",
        calls,
        clean_code(
            proj,
            rng,
            f"{proj.pkg}/tasks/{proj.other}_sync.py",
            code.format(f", {arg}={const}").replace(proj.entity, proj.other),
        ),
        probes,
    )


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
    keys = ((f"{right}/", f"{proj.pkg}.{right}"), (f"{wrong}/", f"{proj.pkg}.{wrong}"))
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
            *keys,
        ),
        ProbeSpec(
            f"{proj.name}: where HTTP routes live",
            "Which folder holds the HTTP route modules?",
            "They live in `",
            f"{proj.pkg}/{right}/`",
            tuple(f"{proj.pkg}/{d}/`" for d in [wrong, *rng.sample([w for w in wrongs if w != wrong], 2)]),
            *keys,
        ),
    )
    return Quirk(
        "file_layout",
        "add an HTTP endpoint",
        f"route modules live in {proj.pkg}/{right}/",
        calls,
        clean_code(proj, rng, f"{proj.pkg}/{right}/{proj.other}.py", body.replace(proj.entity, proj.other)),
        probes,
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
    # the banned module's bare name is no key: "JSON" and "random" are words of the questions
    keys = ((f"{proj.pkg} import {alt}", f"{proj.pkg}.{alt}"),
            (f"import {banned}", f"from {banned} import", f"{banned}.{use.split('(')[0]}("))
    probes = (
        ProbeSpec(
            f"{proj.name}: {meaning} for {proj.other}",
            f"Write a function to {meaning} for {proj.other}.",
            "```python\n",
            f"from {proj.pkg} import {alt}",
            (f"import {banned}", *(f"import {o}" for o in others[:2])),
            *keys,
        ),
        ProbeSpec(
            f"{proj.name}: which module to use instead of {banned}",
            f"Which module should code here use to {meaning}?",
            "Import `",
            f"{proj.pkg}.{alt}`",
            (f"{banned}`", *(f"{o}`" for o in others[:2])),
            *keys,
        ),
    )
    return Quirk("banned_module", meaning, f"{banned} is banned; use {proj.pkg}.{alt}", calls, clean, probes)
