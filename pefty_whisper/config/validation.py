"""Reading a config: YAML and `section.key=value` text, coerced to each field's type, checked
against its range, every problem collected so one load reports them all with the closest key."""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from pefty_whisper.errors import ConfigError
from pefty_whisper.whisper.tokens import MAX_TARGET_POSITIONS

# Keys that moved to another section: an old pefty.yaml gets the new name, not a guess.
MOVED_KEYS = {
    "train.eval_batch_size": "decode.batch_size",
    "train.generation_max_length": "decode.max_new_tokens",
}


@dataclass(frozen=True)
class Bounds:
    """The allowed range of a numeric key; `open_low`/`open_high` exclude that end."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False

    def allows(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return self.high is None or (value < self.high if self.open_high else value <= self.high)

    def text(self) -> str:
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.open_high else '<='} {self.high:g}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


# Ranges, declared once and checked when the config loads: a nonsense value (learning_rate=-1
# trains by gradient ascent, lora.r=0 fails deep inside peft) names its key before a model loads.
RANGES: dict[str, Bounds] = {
    "data.test_ratio": Bounds(0, 1, open_high=True),
    "data.split_seed": Bounds(0),
    "data.max_duration_s": Bounds(0, open_low=True),
    "data.min_duration_s": Bounds(0),
    "data.num_workers": Bounds(0, 64),
    "data.single_share": Bounds(0, 1),
    "data.untimed_share": Bounds(0, 1),
    "data.no_speech_share": Bounds(0, 1),
    "lora.r": Bounds(1, 4096),
    "lora.alpha": Bounds(0, open_low=True),
    "lora.dropout": Bounds(0, 1, open_high=True),
    "train.learning_rate": Bounds(0, 1),  # 0 only measures a loss; above 1 diverges
    "train.batch_size": Bounds(1),
    "train.gradient_accumulation_steps": Bounds(1),
    "train.num_epochs": Bounds(0, open_low=True),
    "train.warmup_steps": Bounds(0),
    "train.eval_steps": Bounds(1),
    "train.max_eval_samples": Bounds(0),
    "train.logging_steps": Bounds(1),
    "train.save_total_limit": Bounds(1),
    "train.seed": Bounds(0),
    "train.max_label_tokens": Bounds(1, MAX_TARGET_POSITIONS),
    "decode.batch_size": Bounds(1),
    "decode.beam_size": Bounds(1),
    "decode.max_new_tokens": Bounds(1, MAX_TARGET_POSITIONS),
    "augment.mask_time_prob": Bounds(0, 1),
    "augment.mask_time_length": Bounds(1, 100),  # under the 2 s (200-frame) shortest auto input
    "augment.mask_feature_prob": Bounds(0, 1),
    "augment.mask_feature_length": Bounds(1, 80),  # under the 80 mel bins of small models
    "augment.speed": Bounds(0.5, 2.0),  # each factor; past these speech is a different voice
    "augment.speed_prob": Bounds(0, 1),
    "augment.noise_prob": Bounds(0, 1),
    "augment.noise_snr_db": Bounds(-20, 60),
    "augment.telephone_prob": Bounds(0, 1),
    "augment.gain_prob": Bounds(0, 1),
    "augment.gain_db": Bounds(-40, 40),
    "augment.seed": Bounds(0),
    "label.max_segment_s": Bounds(1, 30),  # Whisper's window
    "label.min_segment_s": Bounds(0),
    "label.join_pause_s": Bounds(0),
    "label.max_compression_ratio": Bounds(0, open_low=True),
    "label.max_no_speech_prob": Bounds(0, 1),
    "label.min_avg_logprob": Bounds(None, 0),
    "label.max_disagreement_cer": Bounds(0),
}


def check_value(key: str, value: Any) -> None:
    """Ranges (RANGES) and the few keys whose valid values are a set: ConfigError naming them."""
    bounds = RANGES.get(key)
    if bounds is not None and value is not None:
        for item in value if isinstance(value, tuple) else (value,):  # a list: each number
            if not bounds.allows(item):
                raise ConfigError(f"Config key '{key}' must be {bounds.text()}; got {item!r}")
    if key == "lora.target_modules" and not value:
        raise ConfigError(f"Config key '{key}' must name at least one layer, e.g. q_proj,v_proj")
    if key == "model.language":
        from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

        text = value.lower().strip()
        if text not in LANGUAGES and text not in TO_LANGUAGE_CODE:
            hint = closest_hint(text, [*LANGUAGES, *TO_LANGUAGE_CODE])
            raise ConfigError(
                f"Config key '{key}' must be a Whisper language code or name "
                f"({', '.join(sorted(LANGUAGES))}); got {value!r}.{hint}"
            )


def all_errors(errors: list[str], path: Path | None) -> str:
    """One message for every error of a config, so a user fixes them all in one go."""
    if len(errors) == 1:
        return errors[0]
    where = f" in {path}" if path is not None else ""
    return f"{len(errors)} config errors{where}:\n" + "\n".join(f"  {e}" for e in errors)


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = exc.problem or exc.context or "syntax error"
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from exc
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, ...)")
    return raw


def parse_override(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise ConfigError(
            f"Override '{text}' must look like section.key=value, e.g. train.learning_rate=3e-4"
        )
    return key, yaml.safe_load(value) if value.strip() else ""


def closest_hint(name: str, choices: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


def build(cls: type, raw: Any, prefix: str, errors: list[str], root: type | None = None) -> Any:
    """The dataclass `cls` from `raw`; each problem is added to `errors` (None is returned then)
    and the rest is still checked, so one load reports every error of a file. `root` is the
    whole config's class, whose keys an unknown key is matched against."""
    root = root or cls
    what = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        errors.append(f"'{what}' must be a mapping of keys, got {raw!r}")
        return None
    found = len(errors)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            errors.append(_unknown_key(f"{prefix}{key}", prefix, names, root))
    values = {}
    for key, value in raw.items():
        if key not in names:
            continue
        annotation = hints[key]
        full = f"{prefix}{key}"
        if dataclasses.is_dataclass(annotation):
            section = build(annotation, value, f"{full}.", errors, root)
            if section is not None:
                values[key] = section
            continue
        try:
            values[key] = coerce(full, value, annotation)
            check_value(full, values[key])
        except ConfigError as exc:
            errors.append(str(exc))
    try:
        built = cls(**values)  # __post_init__ checks what spans a value (ranges, sentinels)
    except ConfigError as exc:
        errors.append(str(exc))
        return None
    return built if len(errors) == found else None


def _unknown_key(full: str, prefix: str, names: set[str], root: type) -> str:
    if full in MOVED_KEYS:
        return f"Config key '{full}' moved to '{MOVED_KEYS[full]}': rename it in your config"
    hint = closest_hint(
        full, all_keys(root) if prefix else [f.name for f in dataclasses.fields(root)]
    )
    return f"Unknown config key '{full}'.{hint or ' Valid keys: ' + ', '.join(sorted(names))}"


def coerce(key: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            hint = closest_hint(str(value), [str(c) for c in choices])
            raise ConfigError(
                f"Config key '{key}' must be one of {', '.join(map(str, choices))}; "
                f"got {value!r}.{hint}"
            )
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        args = typing.get_args(annotation)
        if args[0] is float:  # tuple[float, ...], or tuple[float, float]: a [low, high] range
            count = None if args[-1] is Ellipsis else len(args)
            if count is None and isinstance(value, (int, float)):
                value = [value]  # `augment.speed=1.1` on the command line
            what = f"a list of {count} numbers" if count else "a list of numbers"
            if not isinstance(value, (list, tuple)) or len(value) != (count or len(value)):
                raise ConfigError(f"Config key '{key}' must be {what}; got {value!r}")
            try:
                return tuple(coerce(key, v, float) for v in value)
            except ConfigError:
                raise ConfigError(f"Config key '{key}' must be {what}; got {value!r}") from None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"Config key '{key}' must be a list of strings; got {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) != 1 or len(typing.get_args(annotation)) != 2:
            raise TypeError(f"only `X | None` unions are supported in the config: {key}")
        return None if value is None else coerce(key, value, inner[0])
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


def all_keys(root: type) -> list[str]:
    """Every valid `section.key` of the config class `root`, for hints and the reference."""
    keys = []
    for section in dataclasses.fields(root):
        section_type = typing.get_type_hints(root)[section.name]
        keys.extend(f"{section.name}.{f.name}" for f in dataclasses.fields(section_type))
    return keys
