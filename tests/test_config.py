"""Settings: precedence, sources, and one clear sentence for every bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from rune_mcp.config import Settings, describe, load_settings
from rune_mcp.errors import ConfigError


def test_defaults_and_sources(rune_home: Path) -> None:
    settings = load_settings()
    assert settings.home == rune_home
    assert settings.sources["home"] == "env:RUNE_HOME"
    assert settings.sources["lora_rank"] == "default"
    assert settings.lora_rank == 8


def test_toml_then_env_precedence(rune_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rune_home.mkdir(parents=True)
    (rune_home / "rune.toml").write_text('lora_rank = 16\ntrain_steps = 12\n')
    monkeypatch.setenv("RUNE_TRAIN_STEPS", "40")
    settings = load_settings()
    assert settings.lora_rank == 16
    assert settings.sources["lora_rank"] == "rune.toml"
    assert settings.train_steps == 40
    assert settings.sources["train_steps"] == "env:RUNE_TRAIN_STEPS"


def test_env_lists_accept_json_and_commas(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNE_TARGET_MODULES", "q_proj, v_proj")
    assert load_settings().target_modules == ["q_proj", "v_proj"]
    monkeypatch.setenv("RUNE_TARGET_MODULES", '["o_proj"]')
    assert load_settings().target_modules == ["o_proj"]


def test_empty_env_means_unset_optional(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNE_CHROMA_URL", "")
    assert load_settings().chroma_url is None


def test_invalid_toml_names_the_file(rune_home: Path) -> None:
    rune_home.mkdir(parents=True)
    (rune_home / "rune.toml").write_text("lora_rank = = 3\n")
    with pytest.raises(ConfigError, match=r"rune\.toml is not valid TOML"):
        load_settings()


def test_wrong_type_in_toml_names_file_key_and_type(rune_home: Path) -> None:
    rune_home.mkdir(parents=True)
    (rune_home / "rune.toml").write_text('lora_rank = "big"\n')
    with pytest.raises(ConfigError) as err:
        load_settings()
    message = str(err.value)
    assert "rune.toml" in message
    assert "'lora_rank'" in message
    assert "integer" in message


def test_unknown_key_is_refused(rune_home: Path) -> None:
    rune_home.mkdir(parents=True)
    (rune_home / "rune.toml").write_text("lora_rnak = 3\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings()


def test_bad_env_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNE_RECALL_K", "many")
    with pytest.raises(ConfigError, match="environment variable RUNE_RECALL_K"):
        load_settings()


def test_every_field_has_help_text() -> None:
    missing = [name for name, info in Settings.model_fields.items() if not info.description]
    assert missing == []


def test_describe_hides_the_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNE_AUTH_TOKEN", "s3cret-token")
    rows = {row["name"]: row for row in describe(load_settings())}
    assert rows["auth_token"]["value"] == "[set]"
    assert rows["home"]["source"] == "env:RUNE_HOME"


def test_claude_config_dir_is_respected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "cc"))
    assert load_settings().claude_dir == tmp_path / "cc"


def test_with_overrides_validates() -> None:
    settings = load_settings().with_overrides(train_steps=5)
    assert settings.train_steps == 5
    assert settings.sources["train_steps"] == "override"
    with pytest.raises(ConfigError):
        load_settings().with_overrides(train_steps=0)


def test_configuration_doc_lists_every_setting() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"| `{name}` |" not in doc]
    assert missing == [], f"add these settings to docs/configuration.md: {missing}"
    stale = [name for name, field in Settings.model_fields.items()
             if field.default_factory is None and f"| `{name}` | `{field.default!r}` |" not in doc]
    assert stale == [], f"these defaults in docs/configuration.md are out of date: {stale}"
