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
