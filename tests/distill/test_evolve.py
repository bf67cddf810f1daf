"""Fitness and the Evolution Operator on the tiny llama base, with adapters trained for real.

The adapters' behaviour is known by construction (tests/helpers/evolve.py): one adapter per
lesson that answers only its own, and the two halves of an adapter trained on both lessons,
which answer them only together. Everything the operator does is the real thing: llama.cpp
applies the compositions, PEFT stores the merge, the checkpoint is a file on disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TEST_CACHE
from filelock import FileLock
from helpers.compose import store_adapter, tiny_stack
from helpers.evolve import LESSONS, evolve_settings, own_adapters, probe, split_adapters, store
from helpers.tiny import FAKE_BASE, PEFT_WARNING

from rune_mcp.basemodel import BaseModelInfo
from rune_mcp.cli import main
from rune_mcp.config import Settings
from rune_mcp.distill.evolve import MIN_GAIN, EvolveResult, evolve_project
from rune_mcp.distill.evolvejob import due, enqueue_evolve, enqueue_if_due
from rune_mcp.distill.evolvestate import Checkpoint, checkpoint_path
from rune_mcp.distill.fitness import Fitness, score_composition, session_probes
from rune_mcp.distill.queue import JobQueue
from rune_mcp.errors import IntegrityError, UsageError
from rune_mcp.library import Library
from rune_mcp.library.embed import Embedder
from rune_mcp.library.lineage import lineage_of, parents_of
from rune_mcp.runtime import close_backends
from rune_mcp.runtime.base import AdapterSpec
from rune_mcp.runtime.compose import for_project
from rune_mcp.runtime.llamacpp import LlamaCppBackend

pytestmark = pytest.mark.filterwarnings(PEFT_WARNING)
SPLIT = "/home/dev/harbor"
OWN = "/home/dev/quay"
LONELY = "/home/dev/lonely"
ALIEN = "/home/dev/alien"
PLAIN = "/home/dev/plain"
PIER = "/home/dev/pier"  # the split halves again, each with a second, held-back self-probe


@dataclass
class Stack:
    settings: Settings
    info: BaseModelInfo
    lib: Library
    backend: LlamaCppBackend
    own: list[str]
    split: list[str]
    pier: list[str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from rune_mcp.library import get_embedder

    folder = tmp_path_factory.mktemp("evolve")
    settings, info = tiny_stack(folder, TEST_CACHE)
    settings = evolve_settings(settings)
    embedder: Embedder = get_embedder(settings)
    lib = Library.open(settings, embedder=embedder)
    own = own_adapters(lib, settings, info, folder, OWN)
    split = split_adapters(lib, settings, info, folder, SPLIT)
    pier = [store(lib, info, folder / f"half-{i}", 300 + i, [probe(LESSONS[i])] * 2, PIER,
                  LESSONS[i][0]) for i in range(2)]
    store_adapter(lib, settings, info, folder, 7, ["q_proj", "v_proj"], project=LONELY,
                  task="the only session of a small project")
    store_adapter(lib, settings, info, folder, 8, ["q_proj", "v_proj"], project=ALIEN,
                  task="a session of a project split over two base models")
    store_adapter(lib, settings, info, folder, 9, ["q_proj", "v_proj"], project=ALIEN,
                  base=FAKE_BASE, task="the same project's session on another base model")
    for n in (10, 11):
        store_adapter(lib, settings, info, folder, n, ["q_proj", "v_proj"], project=PLAIN,
                      task=f"session {n} of a project remembered before self-probes")
    backend = LlamaCppBackend(settings, info)
    yield Stack(settings, info, lib, backend, own, split, pier)
    backend.close()
    lib.close()


def _specs(stack: Stack, ids: list[str], scales: list[float]) -> list[tuple[AdapterSpec, float]]:
    return [(AdapterSpec.from_record(stack.lib.get(i)), s) for i, s in zip(ids, scales, strict=True)]


def test_fitness_ranks_a_composition_with_the_right_adapter_above_one_without(stack: Stack) -> None:
    first, second = stack.own
    fitness = Fitness(stack.settings, stack.backend, session_probes(stack.lib, [first]))
    right = fitness.score(_specs(stack, [first], [1.0]))
    wrong = fitness.score(_specs(stack, [second], [1.0]))
    base = fitness.score([])
    assert right.free == 1.0 and wrong.free == 0.0 and base.free == 0.0
    assert right.scored > wrong.scored and right.scored > 0
    assert right.fitness > wrong.fitness  # the same probes, so comparable
    both = Fitness(stack.settings, stack.backend, session_probes(stack.lib, stack.own))
    with_it = both.score(_specs(stack, stack.own, [1.0, 0.0]))
    assert with_it.sessions[first]["free"] == 1.0 and with_it.sessions[second]["free"] == 0.0
    assert base.drift == 0.0 and abs(right.drift) < 1.0


def test_score_composition_reads_every_sessions_probes_and_counts_a_merge_by_its_parents(
    stack: Stack,
) -> None:
    pair = ",".join(f"{i}:1" for i in stack.split)
    together = score_composition(stack.settings, pair, stack.lib, stack.backend)
    assert set(together.sessions) == set(stack.split) and together.free == 1.0
    alone = score_composition(stack.settings, f"{stack.split[0]}:1", stack.lib, stack.backend)
    assert set(alone.sessions) == {stack.split[0]} and alone.free == 0.0


def test_a_composition_of_adapters_of_another_base_is_refused(stack: Stack) -> None:
    alien = next(r.adapter_id for r in stack.lib.list(project=ALIEN)
                 if r.base_fingerprint == FAKE_BASE)
    with pytest.raises(IntegrityError) as refused:
        score_composition(stack.settings, f"{stack.own[0]}:1,{alien}:1", stack.lib, stack.backend)
    message = str(refused.value)
    assert "different base models" in message and "\n" not in message


def _evolve(stack: Stack, **kwargs: object) -> EvolveResult:
    return evolve_project(stack.settings, SPLIT, library=stack.lib, backend=stack.backend,
                          **kwargs)  # type: ignore[arg-type]


def _fresh(stack: Stack) -> Path:
    path = checkpoint_path(stack.settings, SPLIT, stack.info.fingerprint)
    path.unlink(missing_ok=True)
    return path


def test_evolve_stores_a_composition_that_beats_every_single_adapter(stack: Stack) -> None:
    _fresh(stack)
    result = _evolve(stack)
    assert result.status == "done" and result.generations == stack.settings.evolve_generations
    assert result.cpu_seconds > 0 and result.to_dict()["cpu_seconds"] > 0  # the search's own CPU
    assert [c.score.free for c in result.singles] == [0.0, 0.0]
    assert result.best is not None and result.best.score.free == 1.0
    assert result.best.score.fitness > result.best_single.score.fitness + MIN_GAIN
    assert all(s > 0 for s in result.best.scales)
    assert result.stored is not None and result.stored_fitness == result.best.score.fitness
    assert result.confirm is None and "no self-probes were left over" in result.note
    merge = stack.lib.get(result.stored)
    lineage = lineage_of(merge)
    assert lineage is not None and lineage.method == "cat"
    assert parents_of(merge) == stack.split and lineage.weights == result.best.scales
    assert lineage.fitness == round(result.best.score.fitness, 6)
    assert all(question in merge.embed_text for question, _ in LESSONS)  # its parents' tasks
    # the stored cat merge is the composition that was scored
    own = score_composition(stack.settings, result.stored, stack.lib, stack.backend)
    assert own.free == 1.0 and abs(own.scored - result.best.score.scored) < 0.05
    chosen = for_project(stack.lib, SPLIT, stack.info.fingerprint)
    assert chosen.kind == "merge" and chosen.adapters[0][0].adapter_id == result.stored


def test_an_interrupted_evolve_resumes_from_its_checkpoint_and_ends_the_same(stack: Stack) -> None:
    path = _fresh(stack)
    whole = _evolve(stack)
    path.unlink()
    stops = iter([False, True])
    first = _evolve(stack, should_stop=lambda: next(stops))
    assert first.status == "stopped" and first.generations == 2 and first.stored is None
    saved = Checkpoint.model_validate(json.loads(path.read_text()))
    assert len(saved.generations) == 2 and saved.adapters == stack.split
    rest = _evolve(stack)
    assert rest.status == "done" and rest.generations == whole.generations
    assert first.evaluations + rest.evaluations == whole.evaluations  # nothing scored twice
    assert rest.best is not None and whole.best is not None
    assert rest.best.scales == whole.best.scales
    assert rest.best.score.fitness == pytest.approx(whole.best.score.fitness, abs=1e-6)
    assert rest.stored == whole.stored
    again = _evolve(stack)  # the finished search replays from its checkpoint alone
    assert again.evaluations == 0 and again.stored == whole.stored


def test_a_checkpoint_of_other_settings_is_not_used(stack: Stack) -> None:
    path = _fresh(stack)
    _evolve(stack)
    data = json.loads(path.read_text())
    data["config"]["sigma0"] = 0.9
    path.write_text(json.dumps(data))
    result = _evolve(stack)
    assert result.evaluations > 0  # searched afresh
    path.write_text("{not json")
    assert _evolve(stack).evaluations > 0


def test_evolve_refuses_a_project_with_fewer_than_two_adapters(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(UsageError, match="has 1 adapter for the loaded base model; evolving"):
        evolve_project(stack.settings, LONELY, library=stack.lib, backend=stack.backend)
    with pytest.raises(UsageError, match=r"1 more trained for another base model"):
        evolve_project(stack.settings, ALIEN, library=stack.lib, backend=stack.backend)
    with pytest.raises(UsageError, match="none of these adapters holds self-probes"):
        evolve_project(stack.settings, PLAIN, library=stack.lib, backend=stack.backend)
    busy = FileLock(f"{checkpoint_path(stack.settings, SPLIT, stack.info.fingerprint)}.lock")
    with busy, pytest.raises(UsageError, match="is being evolved by another Rune process"):
        _evolve(stack)
    for key, value in (("RUNE_HOME", stack.settings.home), ("RUNE_BASE_MODEL", stack.settings.base_model)):
        monkeypatch.setenv(key, str(value))
    assert main(["evolve", "--project", "lonely"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rune: project lonely has 1 adapter")
    assert main(["evolve", "--project", "nowhere"]) == 2
    assert "no adapter of project 'nowhere'" in capsys.readouterr().err
    assert main(["evolve", "--project", "harbor", "--method", "ties"]) == 2
    assert "needs --density" in capsys.readouterr().err
    assert main(["evolve", "--project", "harbor", "--method", "mean"]) == 2
    assert "'mean' is not a merge method; choose among" in capsys.readouterr().err


def test_an_evolve_job_runs_in_the_queue_and_is_queued_after_every_n_sessions(
    stack: Stack,
) -> None:
    settings = stack.settings.with_overrides(evolve_after_sessions=2)
    queue = JobQueue(settings)
    first = stack.lib.get(stack.split[0])
    assert due(settings, first, stack.lib)  # the project has 2 single-session adapters
    assert not due(settings.with_overrides(evolve_after_sessions=0), first, stack.lib)
    assert not due(settings.with_overrides(evolve_after_sessions=3), first, stack.lib)
    job = enqueue_if_due(settings, first, stack.lib)
    assert job is not None and job.kind == "evolve" and job.path == SPLIT
    assert enqueue_evolve(queue, SPLIT).id == job.id  # one waiting job per project
    _fresh(stack)
    assert queue.work(once=True) == 1
    done = queue.get(job.id)
    assert done.state == "done", done.error
    assert done.result is not None and done.result["kind"] == "evolve"
    assert done.adapter_id is not None and done.adapter_id == done.result["stored"]
    assert done.progress_total is not None and done.progress_total > 0
    close_backends()  # the worker's run loaded the shared backend of these settings


def test_rune_evolve_prints_what_it_found_and_queues_on_request(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    env = {"RUNE_HOME": stack.settings.home, "RUNE_BASE_MODEL": stack.settings.base_model,
           "RUNE_CONTEXT_SIZE": 512, "RUNE_THREADS": 1, "RUNE_EVOLVE_GENERATIONS": 2,
           "RUNE_EVOLVE_DRIFT_TOKENS": 256, "RUNE_EVOLVE_ANSWER_TOKENS": 24,
           "RUNE_BACKEND": "llamacpp"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    _fresh(stack)
    try:
        assert main(["evolve", "--project", "harbor", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["project"] == SPLIT and data["generations"] == 2
        assert data["best"]["free"] == 1.0 and data["stored"] is not None
        assert [a["adapter_id"] for a in data["best"]["adapters"]] == stack.split
        assert main(["evolve", "--project", "harbor"]) == 0  # resumed: nothing left to score
        out = capsys.readouterr().out
        assert "0 compositions scored" in out and f"stored as cat merge {data['stored']}" in out
    finally:
        close_backends()
    assert main(["evolve", "--project", "harbor", "--queue", "--budget-s", "5"]) == 2
    assert "drop --budget-s" in capsys.readouterr().err
    assert main(["evolve", "--project", "harbor", "--queue"]) == 0
    assert "queued job " in capsys.readouterr().out
    assert main(["jobs", "ls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert any(job["fmt"] == "evolve" and job["path"] == SPLIT for job in listed)


def test_fitness_asks_an_even_share_of_every_lesson_when_probes_are_capped() -> None:
    from rune_mcp.distill.fitness import spread
    from rune_mcp.library.selfprobes import SelfProbe

    def probe(n: int, lesson: int) -> SelfProbe:
        return SelfProbe(question=f"q{n}", answer=f"`a{n}`", key_spans=[f"a{n}"], lesson=[lesson])

    probes = [probe(0, 7), probe(1, 3), probe(2, 3), probe(3, 7), probe(4, 3), probe(5, 9)]
    assert [p.question for p in spread(probes, 3)] == ["q0", "q1", "q5"]  # one per lesson
    assert [p.question for p in spread(probes, 4)] == ["q0", "q1", "q3", "q5"]  # then seconds
    assert spread(probes, 4) == spread(probes, 4)  # the same for every candidate
    assert spread(probes, 10) == probes


def test_a_gain_is_confirmed_on_the_self_probes_the_search_did_not_ask(stack: Stack) -> None:
    settings = stack.settings.with_overrides(evolve_probes=1, evolve_generations=2)
    checkpoint_path(settings, PIER, stack.info.fingerprint).unlink(missing_ok=True)
    result = evolve_project(settings, PIER, library=stack.lib, backend=stack.backend)
    assert result.confirm is not None  # each session held one probe more than was asked
    held = result.confirm
    assert held["best"]["free"] == 1.0 and held["best_single"]["free"] == 0.0
    assert held["routed"]["free"] == 0.0  # each half alone answers neither lesson
    assert result.routed is not None and result.routed.free == 0.0
    assert result.stored is not None and result.note == ""


def test_a_gain_the_held_back_probes_do_not_show_is_not_stored() -> None:
    from rune_mcp.distill.evolve import Candidate, confirm_gain
    from rune_mcp.distill.fitness import Score

    def candidate(fitness: float) -> Candidate:
        return Candidate([1.0, 1.0], Score(fitness, fitness, 0.0, 0.0))

    result = EvolveResult("p", ["a", "b"], candidate(0.2), candidate(0.6), "done", 2, 9, 1.0,
                          routed=Score(0.25, 0.25, 0.0, 0.0))
    assert result.bar == 0.25  # routing beat the best single adapter here
    assert confirm_gain(result, 0.31, 0.30) and result.note == ""
    assert not confirm_gain(result, 0.305, 0.30)  # below MIN_GAIN: luck, not a gain
    assert "not on the held-back ones (0.3050 against 0.3000)" in result.note
    assert "(0.6000 against 0.2500)" in result.note


def test_routing_each_session_to_its_own_adapter_is_scored_from_the_singles() -> None:
    from rune_mcp.distill.fitness import Score, Weights, routed

    weights = Weights(scored=0.5, drift=2.0, answer_tokens=8, drift_tokens=16, probes=4)
    own = {"a": Score(0.0, 0.5, 0.2, 0.1, {"a": {"free": 1.0, "scored": 0.4},
                                            "b": {"free": 0.0, "scored": 0.0}}),
           "b": Score(0.0, 0.5, 0.2, -0.3, {"a": {"free": 0.0, "scored": 0.0},
                                             "b": {"free": 0.5, "scored": 0.2}})}
    score = routed(own, weights)
    assert score.free == 0.75 and score.scored == pytest.approx(0.3)
    assert score.sessions == {"a": {"free": 1.0, "scored": 0.4}, "b": {"free": 0.5, "scored": 0.2}}
    # only a rise in drift is penalised, adapter by adapter: (0.1 + 0) / 2
    assert score.fitness == pytest.approx(0.75 + 0.5 * 0.3 - 2.0 * 0.05)


def test_no_merge_is_stored_where_routing_to_each_sessions_own_adapter_already_answers(
    stack: Stack,
) -> None:
    checkpoint_path(stack.settings, OWN, stack.info.fingerprint).unlink(missing_ok=True)
    result = evolve_project(stack.settings, OWN, library=stack.lib, backend=stack.backend)
    assert result.routed is not None and result.routed.free == 1.0  # each answers its own
    assert max(c.score.free for c in result.singles) == 0.5  # one adapter: half the lessons
    assert result.bar == result.routed.fitness > result.best_single.score.fitness
    assert result.stored is None and "routing each session to its own adapter" in result.note
