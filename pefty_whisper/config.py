"""The one typed config: defaults in these dataclasses, a YAML file, `section.key=value` overrides.

Every key is validated when the config is loaded, so a typo fails before an hour of training does,
and the error names the closest valid key.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pefty_whisper.errors import ConfigError
from pefty_whisper.whisper.context import ContextMode
from pefty_whisper.whisper.tokens import MAX_TARGET_POSITIONS

NormalizeMode = Literal["spelling", "phonetic", "raw"]
QuantMode = Literal["8bit", "4bit", "none"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
# augment.noise_kinds: generated noises, babble of other utterances, or recordings (file)
NOISE_KINDS = ("white", "pink", "brown", "hum", "babble", "file")


@dataclass(frozen=True)
class DataSection:
    """How manifests are prepared and read."""

    normalize: NormalizeMode = "spelling"
    """How KsponSpeech notation becomes a Whisper target (see data/kspon.py)."""
    test_ratio: float = 0.2
    """Share of each part held out as that round's validation set (`_test.csv`)."""
    split_seed: int = 1234
    """Seed of that split (plus the part number), so a re-run splits the same way."""
    max_duration_s: float = 30.0
    """Whisper sees at most 30 s; longer utterances are dropped and counted, never truncated."""
    min_duration_s: float = 0.1
    """Shorter clips are almost always cut-off noise in KsponSpeech."""
    num_workers: int | None = None
    """Data-loader workers decoding audio (and, without a GPU, computing log-mel) on the fly;
    null: the CPUs but one, shared among a node's training processes, at most 8 each."""
    mix: tuple[str, ...] = ()
    """Sets mixed into every round's training data, each NAME:share (share of each epoch's
    examples, e.g. cv_ko_train:0.1), on top of the round's own set or `--train`."""
    packing: bool = True
    """Train on packed 30 s windows with timestamps (consecutive utterances joined with short
    silences, data/packing.py), the format Whisper was trained on: the model keeps predicting
    timestamps for long-form decoding, and each window carries several utterances. Training
    and validation then run at the full 30 s context. false: one utterance per example."""
    single_share: float = 0.0
    """With packing: the share of utterances kept as single examples with <|notimestamps|>,
    padded to 30 s, so decoding without timestamps keeps working too (each costs a whole
    encoder pass for one utterance)."""
    untimed_share: float = 0.3
    """With packing: the share of packed windows trained without timestamps (<|notimestamps|>
    and the joined text), the other way to keep decoding without timestamps working, at
    packing's cost per utterance."""
    no_speech_share: float = 0.05
    """With packing: no-speech windows (silence, low noise, hum) per speech window, whose target
    is the no-speech token and an empty transcript."""


@dataclass(frozen=True)
class ModelSection:
    """The base model, its precision while training, and what it transcribes."""

    base: str = "openai/whisper-small"
    """Round 1's base: a hub id or a local directory."""
    language: str = "ko"
    """The language every round trains and decodes in (Whisper's code or name)."""
    task: Literal["transcribe", "translate"] = "transcribe"
    """Whisper's task token: transcribe keeps Korean, translate would write English."""
    quant: QuantMode = "8bit"
    """The frozen base's precision while training: LLM.int8, QLoRA nf4, or none (16/32-bit)."""
    context: ContextMode = "full"
    """Encoder context per batch, in training and decoding alike. full: every input padded to
    Whisper's 30 s, as faster-whisper and every other consumer of an export feed it. auto: a batch
    padded to its longest utterance rounded up to context_step_s, with the encoder's position
    table sliced to match: 3-5x less encoder work on short utterances (context.py)."""
    context_step_s: float = 2.0
    """The step (seconds) `context: auto` rounds a batch's longest utterance up to."""

    def __post_init__(self) -> None:
        if not 0 < self.context_step_s <= 30:
            raise ConfigError(
                f"Config key 'model.context_step_s' must be between 0 and 30 seconds; "
                f"got {self.context_step_s}"
            )


@dataclass(frozen=True)
class LoraSection:
    """The LoRA adapter trained in each round."""

    r: int = 32
    """Rank of the update matrices."""
    alpha: int = 64
    """Scale of the update (alpha / r multiplies it)."""
    dropout: float = 0.05
    """Dropout on the adapter's input."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
    """Linear layers that get an adapter: every attention and MLP projection by default."""


@dataclass(frozen=True)
class TrainSection:
    """One round's optimization, checkpoints and validation."""

    learning_rate: float = 1e-4
    """Peak learning rate of the adapter, after warm-up."""
    batch_size: int = 8
    """Utterances per device per step."""
    gradient_accumulation_steps: int = 1
    """Steps whose gradients add up before one optimizer update."""
    num_epochs: float = 1.0
    """Passes over the round's training set, unless max_steps is set."""
    max_steps: int | None = None
    """Optimizer steps of the round; null: as many as num_epochs takes."""
    warmup_steps: int = 50
    """Steps of linear learning-rate warm-up."""
    eval_steps: int = 500
    """Validation every this many steps; a checkpoint is saved at each, so the best adapter by
    validation CER is kept."""
    max_eval_samples: int = 1000
    """Validation decodes with generate, which is slow: score a fixed seeded subset (0: all)."""
    logging_steps: int = 25
    """Steps between logged losses (TensorBoard and log_history.json)."""
    save_total_limit: int = 2
    """Checkpoints kept on disk; the Trainer never deletes the best one."""
    seed: int = 42
    """Seed of the Trainer (initialization, shuffling) and of the validation subset."""
    precision: Precision = "auto"
    """auto: bf16 on GPUs that have it, else fp16; fp32 on the CPU."""
    deepspeed: str = "zero2"
    """DeepSpeed config: zero2, zero2_offload, zero3 (ds_configs/), a JSON path, or none."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass: less memory for more time."""
    max_label_tokens: int = MAX_TARGET_POSITIONS
    """Whisper's decoder holds 448 positions; labels longer than this are dropped and counted,
    and packed windows close before their label would pass it."""

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(
                "Config key 'train.max_steps' must be a positive integer or null (use num_epochs); "
                f"got {self.max_steps}"
            )


@dataclass(frozen=True)
class DecodeSection:
    """How a model is decoded: by validation during training, evaluate, transcribe, export's
    parity probe and the server alike, so every figure comes from the same decoding."""

    batch_size: int = 8
    """Utterances decoded together."""
    beam_size: int = 1
    """Beams of the search; 1 is greedy decoding."""
    max_new_tokens: int = 225
    """New tokens after the prompt. A hallucinating model (a zero-shot base on unfamiliar
    speech) otherwise repeats itself up to Whisper's 448-token limit on every utterance."""
    device: str = "auto"
    """auto: cuda when the backend sees a GPU, else cpu."""
    compute_type: str = "auto"
    """auto: ct2 int8 on the CPU and float16 on a GPU; torch float32 on the CPU, float16 on a
    GPU."""
    longform: Literal["auto", "sequential", "chunked"] = "auto"
    """How a file is decoded by transcribe and serve. sequential: the library's timestamp
    decoding (faster-whisper for ct2, transformers' long-form generate for torch). chunked: VAD
    chunks of at most 30 s cut at pauses, decoded in batches without timestamps (the only path
    for onnx). auto: sequential for ct2, and for torch when the model predicts timestamps."""
    vad: Literal["auto", "always", "never"] = "auto"
    """Silero VAD (shipped with faster-whisper) skips non-speech. auto: always in chunked
    decoding (its only guard against decoding silence), for files over 30 s in sequential
    decoding (short files have the no-speech check). never, in chunked decoding, means fixed
    30 s windows (the old path, for comparison)."""
    condition_on_previous_text: bool = False
    """Prompt each window with the previous one's text (sequential decoding). Off by default: a
    fine-tuned model conditioned on its own errors tends to loop."""
    compression_ratio_threshold: float | None = 2.4
    """A window whose text gzip-compresses better than this is repetitive: decoded again at a
    higher temperature (sequential decoding). null: no check."""
    log_prob_threshold: float | None = -1.0
    """A window whose mean token log-probability is lower is decoded again at a higher
    temperature (sequential decoding). null: no check."""
    no_speech_threshold: float | None = 0.6
    """A window whose no-speech probability is above this (and whose log-probability is below
    log_prob_threshold) is silence: no text. null: no check."""


@dataclass(frozen=True)
class ServeSection:
    """`pefty serve`: where it listens and what it accepts."""

    host: str = "127.0.0.1"
    """Loopback by default: the server has no authentication."""
    port: int = 8000
    """TCP port of the HTTP server."""
    max_upload_mb: float = 25.0
    """Larger uploads get 413 (OpenAI's API has the same limit)."""
    max_duration_s: float = 1800.0
    """Longer audio gets 413 before any decoding."""
    max_batch: int = 8
    """Requests decoded together; more wait in the queue."""
    batch_wait_ms: int = 10
    """How long the first request of a batch waits for others to join it."""
    max_queue: int = 64
    """Requests waiting beyond this get 503, so a flood cannot exhaust memory."""

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1 or self.max_upload_mb <= 0:
            raise ConfigError(
                "Config keys 'serve.max_batch', 'serve.max_queue' and 'serve.max_upload_mb' "
                f"must be positive; got {self.max_batch}, {self.max_queue}, {self.max_upload_mb}"
            )


@dataclass(frozen=True)
class AugmentSection:
    """Training-time augmentation (data/augment.py), all off by default. Each transform draws
    from its own generator seeded by (seed, epoch, utterance index), so any number of loader
    workers augments an utterance the same way."""

    spec_augment: bool = False
    """Mask log-mel time and frequency bands inside the model (transformers' SpecAugment,
    WhisperConfig.apply_spec_augment); applied in training only, never in validation."""
    mask_time_prob: float = 0.05
    """With spec_augment: the largest share of frames masked (transformers' default)."""
    mask_time_length: int = 10
    """With spec_augment: frames per time mask (10 ms each)."""
    mask_feature_prob: float = 0.0
    """With spec_augment: the largest share of mel bins masked (0: no frequency masks)."""
    mask_feature_length: int = 10
    """With spec_augment: mel bins per frequency mask."""
    speed: tuple[float, ...] = (0.9, 1.0, 1.1)
    """Speed factors, one drawn per perturbed utterance (Kaldi/ESPnet's 0.9/1.0/1.1: tempo and
    pitch both change; 1.1 is shorter)."""
    speed_prob: float = 0.0
    """Share of utterances speed-perturbed."""
    noise_prob: float = 0.0
    """Share of utterances with additive noise."""
    noise_snr_db: tuple[float, float] = (5.0, 20.0)
    """[low, high]: the SNR (dB, against the utterance's own power) is drawn uniformly in it."""
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown", "hum", "babble")
    """Noises drawn from: white, pink, brown, hum (50/60 Hz mains), babble (other utterances
    summed), file (a recording from noise_dir)."""
    noise_dir: str | None = None
    """Folder of noise recordings (.wav/.flac at any depth, e.g. MUSAN's noise/) for kind file."""
    telephone_prob: float = 0.0
    """Share of utterances sent through a telephone channel (300-3,400 Hz, 8 kHz mu-law)."""
    gain_prob: float = 0.0
    """Share of utterances whose level changes."""
    gain_db: tuple[float, float] = (-10.0, 6.0)
    """[low, high]: the gain (dB) is drawn uniformly in it, lowered where it would clip."""
    seed: int = 0
    """Seed of every augmentation draw."""

    def __post_init__(self) -> None:
        for key in ("noise_snr_db", "gain_db"):
            low, high = getattr(self, key)
            if low > high:
                raise ConfigError(
                    f"Config key 'augment.{key}' must be [low, high]; got {[low, high]}"
                )
        if self.speed_prob > 0 and not self.speed:
            raise ConfigError("Config key 'augment.speed' must list a factor when speed_prob > 0")
        for kind in self.noise_kinds:
            if kind not in NOISE_KINDS:
                raise ConfigError(
                    f"Config key 'augment.noise_kinds' takes {', '.join(NOISE_KINDS)}; "
                    f"got {kind!r}.{_closest_hint(kind, NOISE_KINDS)}"
                )
        if self.noise_prob > 0 and not self.noise_kinds:
            raise ConfigError(
                "Config key 'augment.noise_kinds' must name a kind when noise_prob > 0"
            )
        if ("file" in self.noise_kinds) != (self.noise_dir is not None):
            raise ConfigError(
                "Config keys 'augment.noise_kinds' and 'augment.noise_dir' go together: "
                "kind file draws from noise_dir, so set both or neither"
            )


@dataclass(frozen=True)
class Config:
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    decode: DecodeSection = field(default_factory=DecodeSection)
    serve: ServeSection = field(default_factory=ServeSection)
    augment: AugmentSection = field(default_factory=AugmentSection)


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
}


def _check_value(key: str, value: Any) -> None:
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
            hint = _closest_hint(text, [*LANGUAGES, *TO_LANGUAGE_CODE])
            raise ConfigError(
                f"Config key '{key}' must be a Whisper language code or name "
                f"({', '.join(sorted(LANGUAGES))}); got {value!r}.{hint}"
            )


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
    errors: list[str] = []
    config = _build(Config, raw, "", errors)
    if errors:
        raise ConfigError(_all_errors(errors, path if not overrides else None))
    return config


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


def field_docs(section: type) -> dict[str, str]:
    """Each field's attribute docstring (the string literal right under it), read from the
    source: Python keeps no such docstrings at run time."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(section)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for statement, after in zip(body, body[1:], strict=False):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[statement.target.id] = " ".join(after.value.value.split())
    return docs


def config_reference() -> str:
    """Every key with its type, default and purpose, generated from the dataclasses and their
    docstrings, so the reference cannot drift from the code."""
    lines = []
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        section_type = hints[section.name]
        summary = (section_type.__doc__ or "").strip().split("\n\n")[0]
        lines += textwrap.wrap(
            f"{section.name}: {' '.join(summary.split())}", 100, subsequent_indent="    "
        )
        docs = field_docs(section_type)
        field_types = typing.get_type_hints(section_type)
        for f in dataclasses.fields(section_type):
            kind, default = _type_text(field_types[f.name]), _yaml_text(f.default)
            lines.append(f"  {section.name}.{f.name}: {kind} = {default}")
            lines += textwrap.wrap(
                docs.get(f.name, ""), 96, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return " | ".join(str(choice) for choice in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        return f"{' | '.join(_type_text(a) for a in inner)} or null"
    if origin is tuple:
        return "list of numbers" if typing.get_args(annotation)[0] is float else "list of strings"
    return getattr(annotation, "__name__", str(annotation))


def _yaml_text(value: Any) -> str:
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...")


def _all_errors(errors: list[str], path: Path | None) -> str:
    """One message for every error of a config, so a user fixes them all in one go."""
    if len(errors) == 1:
        return errors[0]
    where = f" in {path}" if path is not None else ""
    return f"{len(errors)} config errors{where}:\n" + "\n".join(f"  {e}" for e in errors)


def _read_yaml(path: Path) -> dict[str, Any]:
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


def _build(cls: type, raw: Any, prefix: str, errors: list[str]) -> Any:
    """The dataclass `cls` from `raw`; each problem is added to `errors` (None is returned then)
    and the rest is still checked, so one load reports every error of a file."""
    what = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        errors.append(f"'{what}' must be a mapping of keys, got {raw!r}")
        return None
    found = len(errors)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            errors.append(_unknown_key(f"{prefix}{key}", prefix, names))
    values = {}
    for key, value in raw.items():
        if key not in names:
            continue
        annotation = hints[key]
        full = f"{prefix}{key}"
        if dataclasses.is_dataclass(annotation):
            section = _build(annotation, value, f"{full}.", errors)
            if section is not None:
                values[key] = section
            continue
        try:
            values[key] = _coerce(full, value, annotation)
            _check_value(full, values[key])
        except ConfigError as exc:
            errors.append(str(exc))
    try:
        built = cls(**values)  # __post_init__ checks what spans a value (ranges, sentinels)
    except ConfigError as exc:
        errors.append(str(exc))
        return None
    return built if len(errors) == found else None


def _unknown_key(full: str, prefix: str, names: set[str]) -> str:
    if full in MOVED_KEYS:
        return f"Config key '{full}' moved to '{MOVED_KEYS[full]}': rename it in your config"
    hint = _closest_hint(
        full, all_keys() if prefix else [f.name for f in dataclasses.fields(Config)]
    )
    return f"Unknown config key '{full}'.{hint or ' Valid keys: ' + ', '.join(sorted(names))}"


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
        args = typing.get_args(annotation)
        if args[0] is float:  # tuple[float, ...], or tuple[float, float]: a [low, high] range
            count = None if args[-1] is Ellipsis else len(args)
            if count is None and isinstance(value, (int, float)):
                value = [value]  # `augment.speed=1.1` on the command line
            what = f"a list of {count} numbers" if count else "a list of numbers"
            if not isinstance(value, (list, tuple)) or len(value) != (count or len(value)):
                raise ConfigError(f"Config key '{key}' must be {what}; got {value!r}")
            try:
                return tuple(_coerce(key, v, float) for v in value)
            except ConfigError:
                raise ConfigError(f"Config key '{key}' must be {what}; got {value!r}") from None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"Config key '{key}' must be a list of strings; got {value!r}")
        return tuple(value)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) != 1 or len(typing.get_args(annotation)) != 2:
            raise TypeError(f"only `X | None` unions are supported in the config: {key}")
        return None if value is None else _coerce(key, value, inner[0])
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
