"""The hypernetwork on a tiny random llama: shapes, zero start, learning, checkpoints, use."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers.tiny import FAKE_BASE, PEFT_WARNING

from distill.sessions import make_trajectory
from rune_mcp.basemodel import resolve_base
from rune_mcp.cli import build_parser, main
from rune_mcp.config import ALL_LINEAR, Settings
from rune_mcp.distill.hyper.apply import applied, module_dims
from rune_mcp.distill.hyper.checkpoint import (
    INDEX,
    default_dir,
    load_network,
    read_checkpoint,
    save_checkpoint,
)
from rune_mcp.distill.hyper.data import Session, heldout_paraphrases, parse_seeds, session_from
from rune_mcp.distill.hyper.generate import find_hypernetwork, write_peft
from rune_mcp.distill.hyper.network import Adapter, HyperConfig, HyperNetwork
from rune_mcp.distill.hyper.train import (
    MetaOptions,
    encode_seeds,
    lesson_loss,
    meta_train,
    train_step,
)
from rune_mcp.distill.lessons import compile_lessons
from rune_mcp.distill.remember import remember_trajectory
from rune_mcp.distill.train import Loaded, load_base, make_batches
from rune_mcp.errors import TrainingError, UsageError
from rune_mcp.library import Library

TARGETS = ("o_proj", "down_proj")


@pytest.fixture
def loaded(settings: Settings, tiny_dir: Path) -> Loaded:
    return load_base(settings.with_overrides(threads=2), tiny_dir, "lora")


def _config(model: Any, targets: tuple[str, ...] = TARGETS, fingerprint: str = FAKE_BASE,
            **values: Any) -> HyperConfig:
    n_layers, dims = module_dims(model, targets)
    fields: dict[str, Any] = {"rank": 4, "alpha": 8.0, "latent": 32, "heads": 2, "head_hidden": 64,
                              "max_tokens": 256}
    fields.update(values)
    return HyperConfig(fingerprint, n_layers, int(model.config.hidden_size), targets, dims, **fields)


def _sessions(settings: Settings, loaded: Loaded, names: tuple[str, ...]) -> list[Session]:
    out = []
    for n, name in enumerate(names):
        traj = make_trajectory(project=f"/home/dev/{name}")
        examples = compile_lessons(traj, settings)
        out.append(session_from(name, n, traj, examples, loaded.model, loaded.tokenizer,
                                "lessons", 256))
    return out


def _states(cfg: HyperConfig, texts: int = 3) -> torch.Tensor:
    return torch.randn(texts, cfg.n_layers, cfg.hidden, generator=torch.Generator().manual_seed(1))


def _nonzero_b(net: HyperNetwork) -> None:
    """Move B off its zero start, as training would."""
    with torch.no_grad():
        torch.manual_seed(3)
        net.out_b.weight.normal_(0, 0.05)
        for p in net.bias_b.values():
            p.normal_(0, 0.05)


def test_shapes_for_every_layer_and_module(loaded: Loaded) -> None:
    cfg = _config(loaded.model, tuple(ALL_LINEAR))
    adapter = HyperNetwork(cfg)(_states(cfg))
    linears = dict(loaded.model.named_modules())
    for layer in range(cfg.n_layers):
        for name in ALL_LINEAR:
            part = "self_attn" if name.endswith(("q_proj", "k_proj", "v_proj", "o_proj")) else "mlp"
            weight = linears[f"model.layers.{layer}.{part}.{name}"].weight  # [out, in]
            assert adapter.a[name][layer].shape == (cfg.rank, weight.shape[1])
            assert adapter.b[name][layer].shape == (weight.shape[0], cfg.rank)
    assert set(adapter.a) == set(ALL_LINEAR) and adapter.scale == cfg.alpha / cfg.rank


def test_a_fresh_network_leaves_the_logits_unchanged(loaded: Loaded) -> None:
    cfg = _config(loaded.model)
    net = HyperNetwork(cfg)
    with torch.no_grad():
        adapter = net(_states(cfg))
    assert all(float(b.abs().max()) == 0.0 for b in adapter.b.values())
    assert all(float(a.abs().max()) > 0.0 for a in adapter.a.values())  # A is not degenerate
    ids = torch.tensor([[1, 5, 9, 42, 7]])
    with torch.no_grad():
        base = loaded.model(input_ids=ids).logits
        with applied(loaded.model, adapter):
            same = loaded.model(input_ids=ids).logits
        _nonzero_b(net)
        with applied(loaded.model, net(_states(cfg))):
            moved = loaded.model(input_ids=ids).logits
        after = loaded.model(input_ids=ids).logits
    assert torch.equal(base, same) and float(adapter.penalty()) == 0.0
    assert not torch.allclose(base, moved)  # the hooks do act once B moves
    assert torch.equal(base, after)  # ... and come out again


@pytest.mark.filterwarnings(PEFT_WARNING)
def test_the_written_peft_folder_acts_like_the_hooks(loaded: Loaded, tiny_dir: Path,
                                                     tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = _config(loaded.model)
    net = HyperNetwork(cfg)
    _nonzero_b(net)
    adapter = net(_states(cfg))
    write_peft(tmp_path / "peft", adapter, loaded.model, cfg.rank, cfg.alpha)
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    with torch.no_grad(), applied(loaded.model, adapter):
        hooked = loaded.model(input_ids=ids).logits
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_dir)),
                                           str(tmp_path / "peft"))
    with torch.no_grad():
        served = peft_model(input_ids=ids).logits
    torch.testing.assert_close(served, hooked, rtol=1e-4, atol=1e-5)
    assert json.loads((tmp_path / "peft" / "adapter_config.json").read_text())["r"] == cfg.rank


def test_inputs_are_standardised_by_the_training_statistics(loaded: Loaded,
                                                              tmp_path: Path) -> None:
    # What a small base's pooled states look like: one huge shared feature and small
    # differences between sessions. The network must see the differences, not the shared part.
    cfg = _config(loaded.model)
    gen = torch.Generator().manual_seed(5)
    shared = torch.randn(1, cfg.n_layers, cfg.hidden, generator=gen) * 3.0
    shared[..., 0] += 80.0
    sessions = [shared + 0.05 * torch.randn(4, cfg.n_layers, cfg.hidden, generator=gen)
                for _ in range(3)]
    net = HyperNetwork(cfg)
    assert torch.equal(net.standardise(sessions[0]), sessions[0])  # identity before statistics
    net.set_input_stats(sessions)
    seen = net.standardise(torch.cat(sessions))
    torch.testing.assert_close(seen.mean(0), torch.zeros(cfg.n_layers, cfg.hidden),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(seen.std(0), torch.ones(cfg.n_layers, cfg.hidden),
                               atol=1e-3, rtol=1e-3)
    ckpt = save_checkpoint(tmp_path, net, torch.optim.AdamW(net.parameters()), 1, {})
    again = load_network(ckpt)
    assert torch.equal(again.standardise(sessions[1]), net.standardise(sessions[1]))
    with pytest.raises(TrainingError, match="at least two encoded texts"):
        HyperNetwork(cfg).set_input_stats([sessions[0][:1]])


def test_adapter_distance_matches_the_dense_delta_w() -> None:
    g = torch.Generator().manual_seed(0)

    def random_adapter() -> Adapter:
        return Adapter({"o": torch.randn(2, 3, 5, generator=g)},
                       {"o": torch.randn(2, 4, 3, generator=g)}, 0.5)

    x, y = random_adapter(), random_adapter()
    dense = [a.scale * torch.einsum("lor,lri->loi", a.b["o"], a.a["o"]) for a in (x, y)]
    expected = float((dense[0] - dense[1]).norm() / dense[0].norm())
    assert x.distance(y) == pytest.approx(expected, rel=1e-4)
    assert x.distance(x) == pytest.approx(0.0, abs=1e-3)
    doubled = Adapter(x.a, {"o": 2 * x.b["o"]}, x.scale)
    assert x.distance(doubled) == pytest.approx(1.0, rel=1e-4)  # ||dW - 2 dW|| = ||dW||
    zero = Adapter(x.a, {"o": torch.zeros(2, 4, 3)}, x.scale)
    assert zero.distance(x) == 0.0  # nothing to be relative to


def test_a_tiny_network_lowers_the_lesson_loss(settings: Settings, loaded: Loaded) -> None:
    sessions = _sessions(settings, loaded, ("tidewater", "ostrawell"))
    assert all(s.heldout and len(s.context) < len(s.rendered) for s in sessions)
    torch.manual_seed(0)
    net = HyperNetwork(_config(loaded.model))
    opts = MetaOptions(out=Path(), train_seeds=[0], eval_seeds=[1], batch_tokens=192, l2=1e-2)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
    pad = int(loaded.tokenizer.pad_token_id)
    fixed = [make_batches(s.rendered, 192, 0)[0] for s in sessions]

    def measured() -> float:
        with torch.no_grad():
            return sum(float(lesson_loss(loaded.model, net(s.visible()), b, pad))
                       for s, b in zip(sessions, fixed, strict=True)) / len(sessions)

    before = measured()
    for step in range(1, 9):
        figures = train_step(net, loaded.model, sessions, [0, 1], step, opts, pad)
        optimizer.zero_grad()
        figures.total.backward()
        optimizer.step()
    after = measured()
    # A random tiny model starts at ln(49152) and moves slowly; the batches are fixed, so
    # the drop is no noise.
    assert after < before - 0.1, (before, after)
    assert figures.penalty > 0.0  # the generated delta W is no longer zero, and is penalised
    assert figures.gap is None  # no hinge unless asked for


def _distinct_sessions(settings: Settings, loaded: Loaded) -> list[Session]:
    """Two sessions whose lessons differ in every name (`_sessions` differ in the path only)."""
    from rune_mcp.trajectory import Trajectory

    first = make_trajectory()
    words = {"tidewater": "ostrawell", "gauges": "beacons", "read_window": "sample_range",
             "station_id": "buoy_key", "hours": "minutes", "fetch": "pull", "average_level":
             "peak_swell", "reports": "digests", "24": "90"}
    text = first.to_json()
    for old, new in words.items():
        text = text.replace(old, new)
    out = []
    for n, traj in enumerate((first, Trajectory.from_json(text))):
        examples = compile_lessons(traj, settings)
        out.append(session_from(f"tide-0{n + 1}", 0, traj, examples, loaded.model,
                                loaded.tokenizer, "lessons", 256))
    return out


def test_the_contrast_hinge_pulls_own_and_rival_adapters_apart(settings: Settings,
                                                               loaded: Loaded) -> None:
    sessions = _distinct_sessions(settings, loaded)
    pad = int(loaded.tokenizer.pad_token_id)

    def trained(contrast: float) -> tuple[HyperNetwork, float | None]:
        torch.manual_seed(0)
        net = HyperNetwork(_config(loaded.model))
        net.set_input_stats([s.visible() for s in sessions])  # as meta_train does
        opts = MetaOptions(out=Path(), train_seeds=[0], eval_seeds=[1], batch_tokens=192,
                           l2=1e-2, contrast=contrast, margin=5.0)
        optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.0)
        for step in range(1, 7):
            figures = train_step(net, loaded.model, sessions, [0, 1], step, opts, pad)
            optimizer.zero_grad()
            figures.total.backward()
            optimizer.step()
        return net, figures.gap

    plain, no_gap = trained(0.0)
    contrasted, gap = trained(1.0)
    assert no_gap is None and gap is not None  # the plain loss measures no gap
    fixed = [make_batches(s.rendered, 192, 0)[0] for s in sessions]

    def margin(net: HyperNetwork) -> float:
        """Mean over both sessions of (the other's adapter - the own adapter) lesson loss."""
        with torch.no_grad():
            adapters = [net(s.visible()) for s in sessions]
            return sum(float(lesson_loss(loaded.model, adapters[1 - i], fixed[i], pad)
                             - lesson_loss(loaded.model, adapters[i], fixed[i], pad))
                       for i in range(2)) / 2

    # Same seed, same steps, same batches: only the hinge differs, and it is what makes each
    # session's own adapter answer its lessons better than the other session's does.
    # Measured: 0.0023 nats without the hinge, 0.024 with it.
    plain_margin, contrasted_margin = margin(plain), margin(contrasted)
    assert contrasted_margin > max(5 * plain_margin, plain_margin + 0.01), (
        contrasted_margin, plain_margin)


def test_the_rival_is_of_the_same_project_and_seed_when_there_is_one() -> None:
    from rune_mcp.distill.hyper.train import rival

    def session(name: str, seed: int) -> Session:
        return Session(name, seed, [], [], torch.zeros(1, 1, 1), [0])

    group = [session("alpha-01", 0), session("alpha-02", 0), session("beta-01", 0),
             session("alpha-03", 1)]
    picked = {rival(group, 0, step, 0) for step in range(1, 40)}
    assert picked == {1}
    assert {rival(group, 2, step, 0) for step in range(1, 40)} <= {0, 1}
    assert rival(group, 3, 5, 0) in {0, 1, 2}
    assert rival(group, 0, 5, 0) == rival(group, 0, 5, 0)
    assert rival(group[:1], 0, 5, 0) is None


def test_heldout_paraphrases_and_seeds() -> None:
    from rune_mcp.config import load_settings

    examples = compile_lessons(make_trajectory(), load_settings())
    hidden = heldout_paraphrases(examples, 0)
    assert hidden and all(examples[i].kind == "qa" for i in hidden)
    assert hidden == heldout_paraphrases(examples, 0)
    assert parse_seeds("0-3,10,2") == [0, 1, 2, 3, 10]
    with pytest.raises(UsageError, match="0-7,12"):
        parse_seeds("a-b")


def _opts(out: Path, steps: int, **values: Any) -> MetaOptions:
    fields: dict[str, Any] = {"projects": 2, "batch_tokens": 192, "eval_every": 4,
                              "eval_sessions": 2, "rank": 2, "alpha": 4.0, "latent": 16,
                              "heads": 2, "head_hidden": 32, "max_tokens": 192,
                              "learning_rate": 5e-3}
    fields.update(values)
    return MetaOptions(out=out, train_seeds=[0], eval_seeds=[7], steps=steps, **fields)


def test_resume_continues_the_same_steps_and_optimizer_state(
    settings: Settings, loaded: Loaded, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    said: list[str] = []
    data = encode_seeds(settings, loaded, _opts(tmp_path, 1), said.append)
    assert {s.seed for s in data[0]} == {0} and {s.seed for s in data[1]} == {7}
    assert len({s.name.rsplit("-", 1)[0] for s in data[1]}) == 2  # two projects, not one
    whole = meta_train(settings, loaded, FAKE_BASE, _opts(tmp_path / "whole", 4), said.append, data)
    assert any("ETA" in line for line in said)
    meta_train(settings, loaded, FAKE_BASE, _opts(tmp_path / "cut", 2), data=data)
    assert read_checkpoint(tmp_path / "cut", "x").step == 2
    resumed = meta_train(settings, loaded, FAKE_BASE, _opts(tmp_path / "cut", 4, resume=True),
                         data=data)
    assert resumed.step == 4 and len(resumed.losses) == 4
    assert resumed.losses == pytest.approx(whole.losses, abs=1e-4)
    a, b = read_checkpoint(tmp_path / "whole", "x"), read_checkpoint(tmp_path / "cut", "x")
    for (name, x), (_, y) in zip(load_network(a).state_dict().items(),
                                 load_network(b).state_dict().items(), strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-4, msg=name)
    steps = [t for k, t in load_file(str(b.folder / b.optimizer["file"])).items()
             if k.endswith(".step")]
    assert steps and all(float(t) == 4.0 for t in steps)  # AdamW's own count carried over
    assert sorted(p.name for p in b.folder.iterdir()) == [
        "hyper-000004.safetensors", INDEX, "optim-000004.safetensors"]
    trained = load_network(a)
    expected = torch.cat([s.visible() for s in data[0]]).float().mean(0)
    torch.testing.assert_close(trained.in_mean, expected)  # fixed from the training sessions
    evals = resumed.evals[-1]
    assert {"base", "bias_only", "generated", "mismatched", "heldout"} <= set(evals)
    assert evals["sessions"] > 1 and evals["spread"] > 0.0  # adapters of 2 sessions, apart
    assert resumed.sessions["eval"] and not set(resumed.sessions["eval"]) & set(
        resumed.sessions["train"])
    with pytest.raises(UsageError, match="--resume"):
        meta_train(settings, loaded, FAKE_BASE, _opts(tmp_path / "cut", 6), data=data)
    with pytest.raises(UsageError, match="rank"):
        meta_train(settings, loaded, FAKE_BASE, _opts(tmp_path / "cut", 6, rank=3, resume=True),
                   data=data)


def test_overlapping_seeds_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hyper", "train", "--train-seeds", "0-2", "--eval-seeds", "2,3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rune: seeds [2] are both training and evaluation seeds")
    assert err.count("\n") == 0


def _save(folder: Path, cfg: HyperConfig) -> Any:
    net = HyperNetwork(cfg)
    _nonzero_b(net)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    return save_checkpoint(folder, net, optimizer, 1, {})


def test_a_missing_or_mismatched_hypernetwork_is_one_sentence(
    settings: Settings, loaded: Loaded
) -> None:
    info = resolve_base(settings)
    folder = default_dir(settings, info.fingerprint)
    with pytest.raises(TrainingError, match=r"^there is no hypernetwork at .*rune hyper train"):
        find_hypernetwork(settings, info)
    _save(folder, _config(loaded.model, fingerprint="f" * 64))
    with pytest.raises(TrainingError) as other_base:
        find_hypernetwork(settings, info)
    assert "trained for base model ffffffffffff" in str(other_base.value)
    _save(folder, _config(loaded.model, ("q_proj", "v_proj"), fingerprint=info.fingerprint))
    with pytest.raises(TrainingError) as other_targets:
        find_hypernetwork(settings, info)
    for err in (other_base.value, other_targets.value):
        text = str(err)
        assert "`rune hyper train" in text and text.endswith(".") and "\n" not in text
    assert "writes adapters for ['q_proj', 'v_proj']" in str(other_targets.value)
    (folder / INDEX).write_text("{")
    with pytest.raises(TrainingError, match="not readable JSON"):
        find_hypernetwork(settings, info)
    elsewhere = settings.with_overrides(hypernetwork=folder.parent / "elsewhere")
    assert default_dir(elsewhere, info.fingerprint) == folder.parent / "elsewhere"
    with pytest.raises(TrainingError, match="no hypernetwork at .*elsewhere"):
        find_hypernetwork(elsewhere, info)


@pytest.fixture
def tiny_library(settings: Settings, loaded: Loaded, tiny_dir: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The library on the tiny model: its shapes replace the embedded base's (same file, same
    fingerprint), no rehearsal (its answers are cached per base fingerprint)."""
    real = resolve_base(settings)
    tiny = dataclasses.replace(real, n_layers=2, embedding_length=64, n_head=4, n_head_kv=2,
                               head_dim=16, n_ff=128)
    monkeypatch.setattr("rune_mcp.distill.remember.resolve_base", lambda s: tiny)
    monkeypatch.setenv("RUNE_BASE_MODEL_HF", str(tiny_dir))
    monkeypatch.setenv("RUNE_LESSONS_REHEARSAL", "false")
    monkeypatch.setenv("RUNE_TRAIN_STEPS", "2")
    monkeypatch.setenv("RUNE_THREADS", "2")
    from rune_mcp.config import load_settings

    return load_settings()


def test_remember_with_the_hypernetwork_stores_an_adapter(
    tiny_library: Settings, loaded: Loaded, monkeypatch: pytest.MonkeyPatch
) -> None:
    info = resolve_base(tiny_library)
    ckpt = _save(default_dir(tiny_library, info.fingerprint),
                 _config(loaded.model, fingerprint=info.fingerprint))

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("hyper writes the adapter without gradient steps")

    with monkeypatch.context() as patch:
        patch.setattr("rune_mcp.distill.remember.train_adapter", no_training)
        result = remember_trajectory(tiny_library, make_trajectory(), "hyper")
    record = Library.open(tiny_library).get(result.adapter_id)
    assert result.method == record.method == "hyper" and not result.reused
    training = record.manifest["training"]
    assert training["hypernetwork"]["sha256"] == ckpt.sha256 and training["steps"] == 0
    assert record.manifest["rank"] == 4 and record.manifest["alpha"] == 8.0
    assert record.gguf_path is not None and record.gguf_path.is_file()
    assert (record.peft_dir / "adapter_model.safetensors").is_file()
    # hyper+lora (here through the setting): the generated adapter, then gradient steps
    other = make_trajectory(project="/home/dev/kestloom")
    started = remember_trajectory(tiny_library.with_overrides(remember_method="hyper+lora"), other)
    record = Library.open(tiny_library).get(started.adapter_id)
    assert record.method == "hyper+lora" and record.manifest["training"]["steps"] == 2
    assert record.manifest["training"]["hypernetwork"]["sha256"] == ckpt.sha256


def test_hyper_eval_scores_a_checkpoint_on_any_seeds(
    tiny_library: Settings, loaded: Loaded, capsys: pytest.CaptureFixture[str]
) -> None:
    info = resolve_base(tiny_library)
    ckpt = _save(default_dir(tiny_library, info.fingerprint),
                 _config(loaded.model, fingerprint=info.fingerprint))
    assert main(["hyper", "eval", "--seeds", "5", "--sessions", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["step"] == ckpt.step and result["seeds"] == [5] and result["sessions"] == 2
    assert result["trained_on"] == 0  # the saved run names no training sessions
    assert {"base", "bias_only", "generated", "mismatched", "heldout"} <= set(result)
    assert result["spread"] > 0.0  # B moved off zero: two sessions, two different adapters
    assert main(["hyper", "eval", "--seeds", "5", "--sessions", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--sessions must be at least 2" in err and err.count("\n") == 0


def test_remember_without_a_hypernetwork_refuses_before_loading(
    tiny_library: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing loads for a missing hypernetwork")

    monkeypatch.setattr("rune_mcp.distill.remember.get_loaded", no_loading)
    with pytest.raises(TrainingError, match="train one with `rune hyper train"):
        remember_trajectory(tiny_library, make_trajectory(), "hyper")
    assert Library.open(tiny_library).list() == []
    args = build_parser().parse_args(["remember", "x.jsonl", "--method", "hyper+lora"])
    assert args.method == "hyper+lora"


def test_encoded_states_are_cached_on_disk_by_what_they_depend_on(
    settings: Settings, loaded: Loaded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rune_mcp.distill.hyper import encode
    from rune_mcp.distill.hyper.encode import StateCache, pooled_states

    cache = StateCache.of(tmp_path, FAKE_BASE, loaded.model)
    texts = [[1, 2, 3, 4], [5, 6, 7]]
    pad = int(loaded.tokenizer.pad_token_id)
    first = cache.states(loaded.model, texts, pad)
    torch.testing.assert_close(first, pooled_states(loaded.model, texts, pad))
    (stored,) = (tmp_path / "hyper-states").iterdir()
    assert stored.suffix == ".safetensors"

    def refuse(*_: Any) -> None:
        raise AssertionError("encoded again")

    monkeypatch.setattr(encode, "pooled_states", refuse)
    torch.testing.assert_close(cache.states(loaded.model, texts, pad), first)  # read back
    # another base, other tokens: other entries, never the stored one
    assert StateCache.of(tmp_path, "other-base", loaded.model).path(texts, pad) != stored
    assert cache.path([[1, 2, 3]], pad) != stored
    monkeypatch.undo()
    stored.write_bytes(b"not a safetensors file")  # damaged: encoded again, and rewritten
    torch.testing.assert_close(cache.states(loaded.model, texts, pad), first)
    assert stored.read_bytes() != b"not a safetensors file"


def test_the_answers_source_pools_each_lesson_over_its_answer_only(
    settings: Settings, loaded: Loaded, tmp_path: Path
) -> None:
    from rune_mcp.distill.collate import IGNORE, render_examples
    from rune_mcp.distill.hyper.encode import StateCache, pool_starts, pooled_states

    examples = compile_lessons(make_trajectory(), settings)[:3]
    tok, pad = loaded.tokenizer, int(loaded.tokenizer.pad_token_id)
    rendered = render_examples(examples, tok, 384)
    assert pool_starts("lessons", rendered) is None
    starts = pool_starts("answers", rendered)
    assert starts is not None and len(starts) == len(rendered)
    for start, r in zip(starts, rendered, strict=True):
        assert r.labels[start] != IGNORE and all(label == IGNORE for label in r.labels[:start])
    texts = [r.input_ids for r in rendered]
    answers = pooled_states(loaded.model, texts, pad, starts=starts)
    # the mean of the answer positions' states of one text read alone, in a batch or not
    hidden = loaded.model.base_model(input_ids=torch.tensor([texts[0]]),
                                     output_hidden_states=True).hidden_states
    by_hand = torch.stack([h[0, starts[0]:].float().mean(dim=0) for h in hidden[1:]])
    torch.testing.assert_close(answers[0], by_hand, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(answers, pooled_states(loaded.model, texts, pad))
    # the cache keeps the two poolings apart
    cache = StateCache.of(tmp_path, FAKE_BASE, loaded.model)
    assert cache.path(texts, pad, starts) != cache.path(texts, pad)
    torch.testing.assert_close(cache.states(loaded.model, texts, pad, starts), answers)
