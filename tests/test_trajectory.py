"""The trajectory model: versioned JSON, content ids, project names."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rune_mcp.errors import ParseError
from rune_mcp.trajectory import (
    FORMAT_VERSION,
    Episode,
    EpisodeRecord,
    Step,
    StepRecord,
    Trajectory,
    TrajectoryRecord,
)


def _traj(**kw: object) -> Trajectory:
    steps = [Step(0, "user", text="fix it"),
             Step(1, "tool_call", tool="Bash", tool_id="t", input={"command": "make"}),
             Step(2, "tool_result", tool="Bash", tool_id="t", output="ok")]
    base: dict[str, object] = {"format": "generic", "session_id": "s", "task": "fix it",
                               "steps": steps, "project": "/home/me/acme-api/"}
    base.update(kw)
    return Trajectory(**base)  # type: ignore[arg-type]


def test_round_trip_with_nested_subagents_and_episodes() -> None:
    sub = _traj(session_id="sub")
    traj = _traj(episodes=[Episode(1, "$ make", "boom", fix_step=1, fix="$ make -j1")],
                 subagents=[sub], redactions={"jwt": 1}, stats={"lines": 3})
    data = json.loads(traj.to_json())
    assert data["format_version"] == FORMAT_VERSION
    assert data["subagents"][0]["format_version"] == FORMAT_VERSION
    again = Trajectory.from_dict(data)
    assert again == traj and again.id == traj.id


def test_id_is_content_hash_independent_of_session_and_time() -> None:
    a = _traj(session_id="one", started="2026-01-01")
    b = _traj(session_id="two", started="2026-02-02")
    assert a.id == b.id and len(a.id) == 64
    assert _traj(task="other").id != a.id


def test_unknown_version_and_bad_fields_are_clear_errors() -> None:
    data = _traj().to_dict()
    with pytest.raises(ParseError, match="^trajectory JSON has format version 99, which is not "
                       "supported"):
        Trajectory.from_dict({**data, "format_version": 99})
    with pytest.raises(ParseError, match=r"^trajectory JSON has the unknown field "
                       r"'steps\[0\]\.bogus'; parse the transcript again\.$"):
        Trajectory.from_dict({**data, "steps": [{"index": 0, "kind": "user", "bogus": 1}]})


@pytest.mark.parametrize("change, says", [
    ({"task": None}, "has an invalid 'task': it must be a valid string, got None"),
    ({"session_id": 7}, "has an invalid 'session_id': it must be a valid string, got 7"),
    ({"steps": [{"index": "0", "kind": "user"}]}, "invalid 'steps[0].index'"),
    ({"steps": [{"index": 0, "kind": "shout"}]},
     "'steps[0].kind': it must be one of user, assistant, thinking, tool_call, tool_result"),
    ({"steps": [{"index": 0, "kind": "user", "input": [1]}]}, "invalid 'steps[0].input'"),
    ({"episodes": [{"attempt_step": 1, "action": "$ make"}]}, "lacks the field 'episodes[0].error'"),
    ({"stats": {"lines": "3"}}, "invalid 'stats.lines'"),
    ({"subagents": [{"format_version": 99}]}, "'subagents[0].format_version': it must be 1"),
])
def test_a_bad_field_is_one_sentence_naming_source_field_and_remedy(
    change: dict[str, object], says: str
) -> None:
    data = {**_traj().to_dict(), **change}
    with pytest.raises(ParseError) as err:
        Trajectory.from_dict(data, where="job 12's trajectory")
    message = str(err.value)
    assert message.startswith("job 12's trajectory ") and says in message
    assert message.endswith("; parse the transcript again.")


def test_from_json_reads_what_to_json_wrote_and_refuses_other_text() -> None:
    traj = _traj(episodes=[Episode(1, "$ make", "boom", fix_step=1, fix="$ make -j1")])
    assert Trajectory.from_json(traj.to_json()) == traj
    with pytest.raises(ParseError, match="^trajectory JSON is not valid JSON"):
        Trajectory.from_json("{not json")
    with pytest.raises(ParseError, match="format version None, which is not supported"):
        Trajectory.from_json("[1, 2]")


def test_the_json_records_match_the_dataclasses_field_for_field() -> None:
    for model, cls in ((StepRecord, Step), (EpisodeRecord, Episode)):
        assert list(model.model_fields) == [f.name for f in dataclasses.fields(cls)]
    traj_fields = [f.name for f in dataclasses.fields(Trajectory)]
    assert list(TrajectoryRecord.model_fields) == ["format_version", *traj_fields]


def test_project_name() -> None:
    assert _traj().project_name == "acme-api"
    assert _traj(project=None).project_name == "project"
    assert _traj(project="C:\\code\\tool").project_name == "tool"
