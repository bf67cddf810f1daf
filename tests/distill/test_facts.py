"""Facts: one fixed error asked many ways, both directions, answered in the first sentence."""

from __future__ import annotations

from distill.sessions import make_trajectory
from rune_mcp.config import Settings
from rune_mcp.distill.facts import make_fact, need_of
from rune_mcp.distill.lessons import compile_lessons
from rune_mcp.trajectory import Episode, Step, Trajectory


def _facts(traj: Trajectory) -> list[tuple[str, str]]:
    examples = compile_lessons(traj, Settings(lessons_facts=True))
    return [(e.prompt, e.answer) for e in examples if e.kind == "fact"]


def test_a_fixed_error_becomes_many_phrasings_in_both_directions() -> None:
    pairs = _facts(make_trajectory())
    assert len(pairs) >= 10
    assert len({q for q, _ in pairs}) == len(pairs)  # every phrasing asks differently
    # every answer names the fix; asked without it, in its first sentence
    for question, answer in pairs:
        assert "read_window(station_id, hours=24)" in answer
        if "read_window" not in question:
            assert "read_window(station_id, hours=24)" in answer.split(". ")[0], answer
    # the need side and the reverse side both occur: the fix asked about, not only the error
    assert any(q.startswith("What is `tidewater.gauges.read_window(") for q, _ in pairs)
    assert any("fetch(station_id)" in q and q.startswith("Can I use") for q, _ in pairs)
    # the project is named in different places: first, last, and beside "this codebase"
    assert any(q.startswith("tidewater:") for q, _ in pairs)
    assert any(q.endswith("in tidewater?") for q, _ in pairs)
    assert any("this codebase (tidewater)" in q for q, _ in pairs)
    # the failed attempt is only ever named as what not to use
    for _, answer in pairs:
        if "gauges.fetch(" in answer:
            assert any(w in answer for w in ("not `", "replaces `", "instead", "fails with"))


def test_facts_are_on_by_default_and_switch_off() -> None:
    traj = make_trajectory()
    assert [e for e in compile_lessons(traj, Settings()) if e.kind == "fact"]
    assert not [e for e in compile_lessons(traj, Settings(lessons_facts=False)) if e.kind == "fact"]


def test_the_need_comes_from_the_sessions_own_words() -> None:
    traj = make_trajectory()
    ep = traj.episodes[0]
    # no specific description and no "Let me" line: the task is the need
    assert need_of(traj, ep, "Add average_level(station_id)", "") == "add average_level(station_id)"
    traj.steps[2] = Step(2, "assistant", text="Let me compute the average water level.")
    assert need_of(traj, ep, "Add it", "") == "compute the average water level"
    described = Trajectory(
        format="claude-code", session_id="s", task="Ship it", project="/p/kest", agent="x",
        steps=[Step(0, "user", text="Ship it"),
               Step(1, "tool_call", tool="Bash", tool_id="b",
                    input={"command": "kestctl deploy --dry-run",
                           "description": "Preview the deploy without applying it"})],
        episodes=[Episode(attempt_step=1, action="$ kestctl deploy --dry-run", error="bad flag")])
    assert (need_of(described, described.episodes[0], "Ship it", "")
            == "preview the deploy without applying it")
    # a task of several clauses: the clause about the fix
    task = "Add a report of tickets. Along the way you will need to set up the cache and read it"
    fresh = make_trajectory()
    assert (need_of(fresh, fresh.episodes[0], task, "Cache(tenant=T) every cache is scoped")
            == "set up the cache")


def test_a_fact_names_the_whole_short_line_and_the_part_it_replaced() -> None:
    fact = make_fact("orla", "read from the database", "conn = orla.persist.dial(DSN)",
                     "conn = orla.persist.connect(DSN)",
                     "AttributeError: module 'orla.persist' has no attribute 'connect'",
                     "`orla.persist` has no `connect`: connections come from `dial`.", "code",
                     ["orla.persist.dial"])
    assert fact is not None
    assert (fact.right, fact.wrong) == ("orla.persist.dial(DSN)", "orla.persist.connect(DSN)")
    assert fact.error.startswith("AttributeError:")
    assert "dial" in fact.why
    config = make_fact("orla", "validate the configuration", "evict_after_s = 20", "ttl = 20",
                       "", "", "code", [])
    assert config is not None and config.right == "evict_after_s = 20"  # the key is the point
    # nothing to name: no fact
    assert make_fact("orla", "x", "", "", "", "", "code", []) is None


def _rewrite_session(first_path: str, fixed_path: str, first: str, fixed: str, error: str,
                     check: str = "python -m orla.lint") -> Trajectory:
    """Write a file whole -> a check fails -> look -> write it whole again -> the check passes."""
    root = "/home/dev/orla"
    task = ("Add an export of tickets in orla. Along the way you will need to make a random "
            "token and set the cache lifetime")
    steps = [
        Step(0, "user", text=task),
        Step(1, "assistant", text="I'll add the module."),
        Step(2, "tool_call", tool="Write", tool_id="w1",
             input={"file_path": f"{root}/{first_path}", "content": first}),
        Step(3, "tool_result", tool_id="w1", output="File created successfully"),
        Step(4, "tool_call", tool="Bash", tool_id="b1",
             input={"command": check, "description": "Lint"}),
        Step(5, "tool_result", tool_id="b1", output=error, is_error=True),
        Step(6, "assistant", text="A banned module. Checking the style notes."),
        Step(7, "tool_call", tool="Read", tool_id="r", input={"file_path": f"{root}/docs/style.md"}),
        Step(8, "tool_result", tool_id="r", output="- `random`: use `orla.entropy`."),
        Step(9, "assistant", text="orla bans `random`; it uses `orla.entropy` instead."),
        Step(10, "tool_call", tool="Write", tool_id="w2",
             input={"file_path": f"{root}/{fixed_path}", "content": fixed}),
        Step(11, "tool_result", tool_id="w2", output="File created successfully"),
        Step(12, "tool_call", tool="Bash", tool_id="b2", input={"command": check}),
        Step(13, "tool_result", tool_id="b2", output="All checks passed."),
    ]
    episode = Episode(attempt_step=4, action=f"$ {check}", error=error,
                      diagnosis="A banned module. Checking the style notes.\n"
                                "orla bans `random`; it uses `orla.entropy` instead.",
                      fix_step=10, fix=f"write {root}/{fixed_path}:\n{fixed}", verify_step=12,
                      verification="All checks passed.")
    return Trajectory(format="claude-code", session_id="s-2", task=task, steps=steps,
                      project=root, agent="claude-code", episodes=[episode])


LINT_ERROR = ("Exit code 1\norla/export/codec.py:1:1: BAN001 `random` is banned in orla\n"
              "Found 1 error.")


def test_a_file_rewritten_after_a_failed_check_is_diffed_against_its_first_version() -> None:
    # the failed step is the lint run; the lesson is what changed in the file
    pairs = _facts(_rewrite_session(
        "orla/export/codec.py", "orla/export/codec.py",
        "import random\n\n\ndef encode(data):\n    return random.token(16)\n",
        "from orla import entropy\n\n\ndef encode(data):\n    return entropy.token(16)\n",
        LINT_ERROR))
    first_answers = {a.split("\n")[0] for _, a in pairs}
    # the call is read through the new import, the old call is what not to use
    assert "In orla, use `orla.entropy.token(16)`, not `random.token(16)`." in {
        a.split(" orla bans")[0] for a in first_answers}
    assert not any("orla.lint" in q or "orla.lint" in a for q, a in pairs)
    # the whole fixed code, import included, in the answers that show code
    assert any("from orla import entropy" in a for _, a in pairs)
    # the linter's diagnostic is the error, not its summary line
    assert any("BAN001 `random` is banned in orla" in a for _, a in pairs)
    assert not any("Found 1 error" in a for _, a in pairs)
    # the need is the task's clause about the fix, not the check's description ("Lint")
    needs = [q for q, _ in pairs if q.startswith("How do I")]
    assert needs == ["How do I make a random token in orla?"]
    # the diagnosis's narration ("Checking the style notes.") is no explanation
    assert not any("Checking" in a or "A banned module" in a for _, a in pairs)


def test_the_same_file_written_elsewhere_teaches_the_path() -> None:
    code = "from orla.web import route\n\n\n@route('/tickets')\ndef index(request):\n    return []\n"
    traj = _rewrite_session("orla/api/tickets.py", "orla/routes/tickets.py", code, code,
                            "E   LookupError: route modules are discovered only under orla/routes/\n"
                            "1 failed, 9 passed in 0.4s", check="pytest -q")
    pairs = _facts(traj)
    assert any(a.startswith("In orla, use `orla/routes/tickets.py`, not `orla/api/tickets.py`.")
               for _, a in pairs)
    assert any(q.startswith("Which file replaces `orla/api/tickets.py`") for q, _ in pairs)
    assert not any("pytest -q" in a for _, a in pairs)


def test_of_several_new_names_the_most_specific_is_the_fact() -> None:
    fact = make_fact("orla", "call the partner's API",
                     "import orla.outbound\nresp = orla.outbound.pull_url(url)",
                     "import requests\nresp = requests.get(url)",
                     "E   orla.sandbox.EgressBlocked: direct network access is disabled",
                     "Checking the notes. Outbound calls must use `orla.outbound.pull_url(url)`.",
                     "function", ["orla.outbound", "orla.outbound.pull_url"])
    assert fact is not None
    assert (fact.right, fact.wrong) == ("orla.outbound.pull_url(url)", "requests.get(url)")
    assert fact.why == "Outbound calls must use `orla.outbound.pull_url(url)`."
    assert "import orla.outbound" in fact.code
    # a long changed text is named by the name that no other new name extends
    long = make_fact("orla", "x", "import orla.outbound\n" + "y = 1\n" * 3, "", "", "", "code",
                     ["orla.outbound", "orla.outbound.pull_url"])
    assert long is not None and long.right == "orla.outbound.pull_url"

