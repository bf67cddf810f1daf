"""One settings model for all of Rune, read from defaults, `rune.toml` and `RUNE_*` variables.

Precedence, lowest first: the field's default, `<RUNE_HOME>/rune.toml`, then the environment
variable `RUNE_<FIELD>` (upper case). `rune config show` prints every effective value and which
of the three it came from, so a user never has to guess why Rune behaves as it does.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from rune_mcp.errors import ConfigError

CONFIG_FILE = "rune.toml"
ENV_PREFIX = "RUNE_"
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The two projections that write into the residual stream: on the bundled session they learned
# as well as all seven (`rune bench sweep`), and llama.cpp applies an unmerged LoRA as extra
# small products per module, so two modules keep generation far closer to base speed than
# seven (figures: docs/runtime.md#performance).
DEFAULT_TARGETS = ["o_proj", "down_proj"]


def _default_home() -> Path:
    return Path(platformdirs.user_data_dir("rune", appauthor=False))


def _default_cache() -> Path:
    return Path(platformdirs.user_cache_dir("rune", appauthor=False))


def _default_claude_dir() -> Path:
    # Claude Code moves its whole config folder when CLAUDE_CONFIG_DIR is set.
    env = os.environ.get("CLAUDE_CONFIG_DIR")
    return Path(env) if env else Path.home() / ".claude"


class Settings(BaseModel):
    """Every knob Rune has. Each field's description is its help text."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    # --- where things live -------------------------------------------------------------
    home: Path = Field(
        default_factory=_default_home,
        description="Data directory: adapter library, index, job queue, logs (RUNE_HOME).",
    )
    cache_dir: Path = Field(
        default_factory=_default_cache,
        description="Cache for derived model files shared by all libraries (RUNE_CACHE_DIR).",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level for stderr and the log file under RUNE_HOME."
    )

    # --- models ----------------------------------------------------------------------
    base_model: Path | None = Field(
        default=None,
        description="GGUF file of the base model; empty means the embedded SmolLM2-135M-Instruct.",
    )
    base_model_hf: Path | None = Field(
        default=None,
        description="Optional transformers-format folder with the same weights as base_model "
        "(used for training on GPU instead of dequantizing the GGUF).",
    )
    embedder: Path | None = Field(
        default=None,
        description="sentence-transformers model folder; empty means the embedded all-MiniLM-L6-v2.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Device for training and the transformers backend."
    )
    threads: int = Field(
        default_factory=lambda: max(1, os.cpu_count() or 1),
        ge=1,
        description="CPU threads for llama.cpp and torch; left unset, llama.cpp starts with the "
        "cores other processes leave idle.",
    )
    context_size: int = Field(
        default=4096, ge=256, description="Context window (tokens) of the llama.cpp runtime."
    )

    # --- library and recall -------------------------------------------------------------
    chroma_url: str | None = Field(
        default=None,
        description="URL of a Chroma server (`chroma run`); empty means an embedded index "
        "under RUNE_HOME.",
    )
    recall_k: int = Field(default=3, ge=1, le=100, description="Adapters returned by recall.")
    recall_min_similarity: float = Field(
        default=0.35,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity below which recall returns nothing.",
    )
    recall_fitness_margin: float = Field(
        default=0.1,
        ge=0.0,
        le=1.0,
        description="How much less similar to the task than the best single-session hit an "
        "evolved merge holding that hit may be and still be recalled first (its fitness beat "
        "every single adapter of its project); 0 means similarity alone decides.",
    )

    # --- distillation -----------------------------------------------------------------
    train_method: Literal["lora", "qlora"] = Field(
        default="lora", description="LoRA on full-precision weights, or QLoRA on an NF4 base."
    )
    remember_method: Literal["lora", "hyper", "hyper+lora"] = Field(
        default="lora",
        description="How a session becomes an adapter: lora trains it by gradient steps "
        "(train_method sets the precision); hyper writes it in one forward pass of the "
        "hypernetwork trained by `rune hyper train`; hyper+lora starts train_steps gradient "
        "steps from the hypernetwork's adapter.",
    )
    hypernetwork: Path | None = Field(
        default=None,
        description="Checkpoint folder of the hypernetwork that remember_method hyper and the "
        "hypernetwork conditions of `rune bench memory` use "
        "(`rune hyper train` writes one); empty means RUNE_HOME/hyper/<base fingerprint>.",
    )
    lora_rank: int = Field(default=8, ge=1, le=256, description="LoRA rank r.")
    lora_alpha: float = Field(default=16.0, gt=0, description="LoRA alpha (scale = alpha / r).")
    lora_dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    lora_top_layers: int = Field(
        default=0, ge=0,
        description="LoRA only in this many of the upper decoder layers (0 = every layer); "
        "the backward pass then stops early.",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS),
        description="Linear modules that get LoRA weights.",
    )
    train_steps: int = Field(default=30, ge=1, description="Optimizer steps per adapter.")
    learning_rate: float = Field(default=1e-3, gt=0, description="AdamW learning rate.")
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="constant",
        description="Learning rate over the train_steps: constant, or cosine from "
        "learning_rate down to a tenth of it at the last step.",
    )
    answer_key_weight: float = Field(
        default=1.0, ge=1.0,
        description="Loss weight of answer tokens inside inline code spans (identifiers, "
        "commands) against 1 for the rest of the answer.",
    )
    seed: int = Field(default=0, description="Seed for training and sampling.")
    answer_check_every: int = Field(
        default=0, ge=0,
        description="Every this many steps, the model in training answers the session's "
        "held-out questions; training stops once answer_check_share are right (0 = off).",
    )
    answer_check_share: float = Field(
        default=1.0, gt=0.0, le=1.0,
        description="Share of held-out questions answered right at which training stops.",
    )
    train_time_budget_s: float = Field(
        default=900.0, gt=0, description="Training stops early after this many seconds."
    )
    max_example_tokens: int = Field(
        default=512, ge=32, description="Longest training example, in tokens."
    )
    lesson_token_budget: int = Field(
        default=6000, ge=256, description="Total tokens of lessons compiled from one session."
    )
    lessons_episodes: bool = Field(
        default=True, description="Compile attempt -> error -> fix episode examples."
    )
    lessons_qa: bool = Field(default=True, description="Compile short question/answer lessons.")
    lessons_facts: bool = Field(
        default=True,
        description="Compile each fixed error as a fact asked a dozen ways, both directions, "
        "answered in its first sentence.",
    )
    lessons_final: bool = Field(
        default=True, description="Compile task -> final working actions examples."
    )
    lessons_rehearsal: bool = Field(
        default=True,
        description="Also train on general prompts answered by the base model itself, so "
        "unrelated answers stay as they were.",
    )
    rehearsal_loss: Literal["ce", "kl"] = Field(
        default="ce",
        description="How rehearsal examples are trained: ce takes the base's answer as the "
        "target; kl holds the whole next-token distribution to the base's (top 32 and the rest).",
    )
    anchor_weight: float = Field(
        default=1.0, ge=0.0,
        description="Weight of the KL terms to the base (rehearsal_loss = kl, anchor_code_tokens).",
    )
    anchor_code_tokens: int = Field(
        default=0, ge=0, le=65_536,
        description="Tokens of standard-library source (modules the general guard never "
        "samples) the adapter is held to the base on by KL, one 128-token window a step on top "
        "of the lessons (0 = off).",
    )
    teacher_weight: float = Field(
        default=0.0, ge=0.0, le=10.0,
        description="Weight of the KL to the base model reading the session (the teacher) on "
        "lesson answers, where its top token is the answer's (0 = off).",
    )
    unlikelihood_weight: float = Field(
        default=0.0,
        ge=0.0,
        description="Weight of an unlikelihood term on failed attempts (0 = no loss on them).",
    )
    train_batch_tokens: int = Field(
        default=384, ge=64, description="Tokens per optimizer step (examples packed per batch)."
    )

    # --- runtime ----------------------------------------------------------------------
    backend: Literal["auto", "llamacpp", "transformers", "vllm"] = Field(
        default="auto",
        description="Inference backend; auto is transformers on CUDA, llama.cpp otherwise.",
    )
    vllm_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL of a vLLM server with LoRA on."
    )
    adapter_cache_mb: int = Field(
        default=512, ge=1, description="Memory for loaded adapters before the oldest is evicted."
    )
    max_tokens: int = Field(default=512, ge=1, description="Default generation length.")
    repeat_ngram: int = Field(
        default=8, ge=0, le=64,
        description="Repetition guard: no run of this many tokens occurs repeat_times times in "
        "an answer (llama.cpp and transformers; 0 = off).",
    )
    repeat_times: int = Field(
        default=3, ge=2, le=16, description="How often a repeat_ngram run of tokens may not occur.",
    )

    # --- evolution (docs/evolution.md) ------------------------------------------------------
    self_probe_share: float = Field(
        default=0.25, ge=0.0, lt=1.0,
        description="Share of each lesson's phrasings (lessons phrased 3+ ways) held out of "
        "training and stored with the adapter as its self-probes (0 = none).",
    )
    evolve_after_sessions: int = Field(
        default=0, ge=0,
        description="Queue `rune evolve` for a project after every N new sessions of it (0 = off).",
    )
    evolve_budget_s: float = Field(
        default=600.0, gt=0, description="Seconds one evolve run may search before it stops.",
    )
    evolve_generations: int = Field(
        default=4, ge=1, le=200, description="CMA-ES generations one evolve run searches at most.",
    )
    evolve_answer_tokens: int = Field(
        default=48, ge=4, le=512,
        description="Length of the free answers a self-probe is asked for while evolving.",
    )
    evolve_probes: int = Field(
        default=4, ge=1, le=1000,
        description="Self-probes per session one fitness evaluation asks, one lesson at a "
        "time in turn, the same for every candidate (all of them when a session holds fewer).",
    )
    evolve_scored_weight: float = Field(
        default=0.25, ge=0.0,
        description="Fitness per nat of mean log-probability per token of the self-probes' "
        "answers gained over the base.",
    )
    evolve_drift_weight: float = Field(
        default=2.0, ge=0.0,
        description="Fitness lost per nat of NLL per token the general corpus gains over the base.",
    )
    evolve_drift_tokens: int = Field(
        default=256, ge=16, le=20_000,
        description="Tokens of the standard library sample the general drift is measured on.",
    )

    # --- server -----------------------------------------------------------------------
    http_host: str = Field(default="127.0.0.1", description="Bind address of `rune serve --http`.")
    http_port: int = Field(default=8765, ge=1, le=65535, description="Port of `rune serve --http`.")
    auth_token: str | None = Field(
        default=None, description="Bearer token required by `rune serve --http` when set."
    )
    max_request_bytes: int = Field(
        default=4_000_000, ge=1024, description="Largest request or text argument accepted."
    )
    max_json_depth: int = Field(
        default=64, ge=8, le=128,
        description="Deepest nesting of arrays and objects accepted in one stdio message.",
    )
    http_header_timeout: float = Field(
        default=10.0, gt=0, le=300,
        description="Seconds an HTTP client has to send a request's headers (from connecting, "
        "or from the end of the previous response) before it is disconnected.",
    )
    http_body_timeout: float = Field(
        default=30.0, gt=0, le=3600,
        description="Seconds an HTTP client has to send a request's body once its headers are "
        "in, before it is disconnected.",
    )
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="Extra folders whose transcripts tools may read (agents' folders are always allowed).",
    )

    # --- capture and watcher ------------------------------------------------------------
    # The agents' folders; each is read only by its agent's module in rune_mcp/agents/.
    claude_dir: Path = Field(
        default_factory=_default_claude_dir,
        description="Claude Code's config folder (CLAUDE_CONFIG_DIR or ~/.claude).",
    )
    codex_dir: Path = Field(
        default_factory=lambda: Path.home() / ".codex", description="Codex CLI's folder."
    )
    cursor_dir: Path = Field(
        default_factory=lambda: Path.home() / ".cursor", description="Cursor's per-user folder."
    )
    cursor_state_db: Path | None = Field(
        default=None, description="Cursor's state.vscdb; empty means the platform default."
    )
    aider_roots: list[Path] = Field(
        default_factory=list, description="Project roots searched for .aider.chat.history.md."
    )
    idle_seconds: float = Field(
        default=300.0, gt=0, description="A transcript idle this long counts as a finished session."
    )
    min_session_steps: int = Field(
        default=4, ge=1, description="Sessions with fewer steps are too small to remember."
    )
    watch_subagents: bool = Field(
        default=False, description="Also remember subagent and compaction transcripts."
    )
    exclude_projects: list[str] = Field(
        default_factory=list,
        description="Project folders or glob patterns (`~/work/secret`, `/srv/*`) never "
        "remembered: the watcher and hooks skip their sessions and explicit requests are "
        "refused. Also matched against transcript paths.",
    )
    ignore_projects: list[str] = Field(
        default_factory=list,
        description="Older name of exclude_projects; its entries still apply.",
    )
    watch_rescan_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Seconds between the watcher's reconciliation scans (file events can be "
        "dropped by the kernel; the scan finds what they missed).",
    )
    watch_polling: bool = Field(
        default=False,
        description="Watch by polling instead of inotify/FSEvents (network file systems).",
    )
    watch_backfill_hours: float = Field(
        default=24.0,
        ge=0,
        description="On its first start the watcher remembers sessions written this many hours "
        "before; older transcripts are recorded as history and skipped unless they grow.",
    )

    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @property
    def sources(self) -> dict[str, str]:
        """Where each field's value came from: `default`, `rune.toml` or `env:RUNE_X`."""
        return dict(self._sources)

    @property
    def config_file(self) -> Path:
        return self.home / CONFIG_FILE

    def ensure_home(self) -> Path:
        """Create RUNE_HOME if needed; an unusable one is a ConfigError naming the setting."""
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            probe = self.home / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(
                f"RUNE_HOME {self.home} is not writable ({exc.strerror or exc}); set RUNE_HOME "
                "(environment) to a writable folder."
            ) from exc
        return self.home

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with some fields replaced (validated), keeping the recorded sources."""
        data = self.model_dump()
        data.update(values)
        new = _validate(data, {k: "override" for k in values})
        new._sources = {**self._sources, **{k: "override" for k in values}}
        return new


def _env_value(field: str, raw: str) -> Any:
    """Environment strings become lists from JSON or comma-separated text; the rest is
    coerced by pydantic (`"8"` -> 8, `"true"` -> True, `""` -> None)."""
    annotation = str(Settings.model_fields[field].annotation)
    if "list" in annotation:
        text = raw.strip()
        if text.startswith("["):
            try:
                return json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    f"{ENV_PREFIX}{field.upper()} is not a valid JSON list ({exc.msg}); "
                    "use JSON or comma-separated values."
                ) from exc
        return [part.strip() for part in text.split(",") if part.strip()]
    if raw == "" and Settings.model_fields[field].default is None:
        return None
    return raw


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except (FileNotFoundError, NotADirectoryError):
        return {}  # no file is the usual case; an unusable RUNE_HOME is reported where it is used
    except PermissionError as exc:
        raise ConfigError(f"cannot read {path}: permission denied; fix its permissions.") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); fix or remove the file.") from exc


def _validate(
    data: dict[str, Any], sources: dict[str, str], toml_path: Path | None = None
) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        where = sources.get(key, "")
        if where.startswith("env:"):
            place = f"environment variable {where[4:]}"
        elif where == CONFIG_FILE:
            place = f"{toml_path}, key '{key}'"
        else:
            place = f"setting '{key}'"
        if err["type"] == "extra_forbidden":
            raise ConfigError(
                f"{place}: unknown setting; `rune config show` lists the valid ones."
            ) from exc
        raise ConfigError(f"{place}: {err['msg'].lower()} (got {err.get('input')!r}).") from exc


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build the effective settings from defaults, `rune.toml` and the environment."""
    env = os.environ if env is None else env
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    env_values: dict[str, Any] = {}
    for field in Settings.model_fields:
        name = f"{ENV_PREFIX}{field.upper()}"
        if name in env:
            env_values[field] = _env_value(field, env[name])
            sources[field] = f"env:{name}"
    home = Path(env_values.get("home") or _default_home()).expanduser()
    toml_path = home / CONFIG_FILE
    for key, value in _read_toml(toml_path).items():
        if key not in sources:
            data[key] = value
            sources[key] = CONFIG_FILE
    data.update(env_values)
    settings = _validate(data, sources, toml_path)
    settings._sources = {f: sources.get(f, "default") for f in Settings.model_fields}
    return settings


def describe(settings: Settings) -> list[dict[str, Any]]:
    """Rows for `rune config show`: name, value, source and help text of every field."""
    rows = []
    sources = settings.sources
    for name, info in Settings.model_fields.items():
        value = getattr(settings, name)
        if name == "auth_token" and value:
            value = "[set]"  # never echo a secret
        rows.append(
            {
                "name": name,
                "env": f"{ENV_PREFIX}{name.upper()}",
                "value": _jsonable(value),
                "source": sources.get(name, "default"),
                "help": info.description or "",
            }
        )
    return rows


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value
