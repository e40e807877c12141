"""The one typed config: defaults in these dataclasses, a YAML file, `section.key=value` overrides.

Every key is validated when the config is loaded, so a typo fails before an hour of training does,
and the error names the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pefty_whisper.context import ContextMode
from pefty_whisper.errors import ConfigError

NormalizeMode = Literal["spelling", "phonetic", "raw"]
QuantMode = Literal["8bit", "4bit", "none"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]


@dataclass(frozen=True)
class DataSection:
    # How KsponSpeech notation becomes a Whisper target (see data/kspon.py).
    normalize: NormalizeMode = "spelling"
    # Share of each part held out as that round's validation set (`_test.csv`).
    test_ratio: float = 0.2
    split_seed: int = 1234
    # Whisper sees at most 30 s; longer utterances are dropped and counted, never truncated.
    max_duration_s: float = 30.0
    # Shorter clips are almost always cut-off noise in KsponSpeech.
    min_duration_s: float = 0.1
    # Data-loader workers computing log-mel features on the fly.
    num_workers: int = 2


@dataclass(frozen=True)
class ModelSection:
    # Round 1's base: a hub id or a local directory.
    base: str = "openai/whisper-small"
    language: str = "ko"
    task: Literal["transcribe", "translate"] = "transcribe"
    quant: QuantMode = "8bit"
    # Encoder context per batch, in training and decoding alike. full: every input padded to
    # Whisper's 30 s, as faster-whisper and every other consumer of an export feed it. auto: a
    # batch padded to its longest utterance rounded up to context_step_s, with the encoder's
    # position table sliced to match: 3-5x less encoder work on short utterances (context.py).
    context: ContextMode = "full"
    context_step_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.context_step_s <= 30:
            raise ConfigError(
                f"Config key 'model.context_step_s' must be between 0 and 30 seconds; "
                f"got {self.context_step_s}"
            )


@dataclass(frozen=True)
class LoraSection:
    r: int = 32
    alpha: int = 64
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


@dataclass(frozen=True)
class TrainSection:
    learning_rate: float = 1e-4
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    num_epochs: float = 1.0
    # A positive value overrides num_epochs.
    max_steps: int = -1
    warmup_steps: int = 50
    # A checkpoint is saved at every evaluation, so the best adapter by validation CER is kept.
    eval_steps: int = 500
    # Validation decodes with generate, which is slow: score a fixed seeded subset (0: all).
    max_eval_samples: int = 1000
    logging_steps: int = 25
    save_total_limit: int = 2
    seed: int = 42
    # auto: bf16 on GPUs that have it, else fp16; fp32 on the CPU.
    precision: Precision = "auto"
    # DeepSpeed config: zero2, zero2_offload, zero3 (ds_configs/), a JSON path, or none.
    deepspeed: str = "zero2"
    gradient_checkpointing: bool = True
    # Whisper's decoder holds 448 positions; labels longer than this are dropped and counted.
    max_label_tokens: int = 448


@dataclass(frozen=True)
class DecodeSection:
    """How a model is decoded: by validation during training, evaluate, transcribe, export's
    parity probe and the server alike, so every figure comes from the same decoding."""

    batch_size: int = 8
    beam_size: int = 1
    # New tokens after the prompt. A hallucinating model (a zero-shot base on unfamiliar speech)
    # otherwise repeats itself up to Whisper's 448-token limit on every utterance.
    max_new_tokens: int = 225
    # auto: cuda when the backend sees a GPU, else cpu.
    device: str = "auto"
    # auto: ct2 int8 on the CPU and float16 on a GPU; torch float32 on the CPU, float16 on a GPU.
    compute_type: str = "auto"


@dataclass(frozen=True)
class Config:
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    decode: DecodeSection = field(default_factory=DecodeSection)


# Keys that moved to another section: an old pefty.yaml gets the new name, not a guess.
MOVED_KEYS = {
    "train.eval_batch_size": "decode.batch_size",
    "train.generation_max_length": "decode.max_new_tokens",
}


def load_config(path: Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Build the config from defaults, then the YAML file, then `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
    for override in overrides:
        key, value = _parse_override(override)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raw[section] = {}
        raw[section][name] = value
    return _build(Config, raw, prefix="")


def config_to_dict(config: Config) -> dict[str, Any]:
    """Plain dict (tuples as lists) for YAML and JSON output."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def dump_config(config: Config, path: Path) -> None:
    """Write the resolved config next to an output so the next step can read back what ran."""
    Path(path).write_text(
        yaml.safe_dump(config_to_dict(config), sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )


def all_keys() -> list[str]:
    """Every valid `section.key`, for error hints and the config reference."""
    keys = []
    for section in dataclasses.fields(Config):
        section_type = typing.get_type_hints(Config)[section.name]
        keys.extend(f"{section.name}.{f.name}" for f in dataclasses.fields(section_type))
    return keys


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, ...)")
    return raw


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(
            f"Override '{text}' must look like section.key=value, e.g. train.learning_rate=3e-4"
        )
    return key, yaml.safe_load(value) if value.strip() else ""


def _closest_hint(name: str, choices: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def _build(cls: type, raw: Any, prefix: str) -> Any:
    what = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"'{what}' must be a mapping of keys, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            full = f"{prefix}{key}"
            if full in MOVED_KEYS:
                raise ConfigError(
                    f"Config key '{full}' moved to '{MOVED_KEYS[full]}': rename it in your config"
                )
            hint = _closest_hint(
                full, all_keys() if prefix else [f.name for f in dataclasses.fields(Config)]
            )
            raise ConfigError(
                f"Unknown config key '{full}'.{hint or ' Valid keys: ' + ', '.join(sorted(names))}"
            )
    values = {}
    for key, value in raw.items():
        annotation = hints[key]
        full = f"{prefix}{key}"
        if dataclasses.is_dataclass(annotation):
            values[key] = _build(annotation, value, prefix=f"{full}.")
        else:
            values[key] = _coerce(full, value, annotation)
    return cls(**values)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            hint = _closest_hint(str(value), [str(c) for c in choices])
            raise ConfigError(
                f"Config key '{key}' must be one of {', '.join(map(str, choices))}; "
                f"got {value!r}.{hint}"
            )
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"Config key '{key}' must be a list of strings; got {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"union types are not supported in the config: {key}")
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"Config key '{key}' must be true or false; got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"Config key '{key}' must be an integer; got {value!r}")
        return value
    if annotation is float:
        # PyYAML reads `1e-4` (no dot) as a string; accept any text that is a number.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"Config key '{key}' must be a number; got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"Config key '{key}' must be a string; got {value!r}")
        return value
    raise TypeError(f"unsupported config type for {key}: {annotation}")
