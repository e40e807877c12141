"""The one typed config: defaults in these dataclasses, a YAML file, `section.key=value` overrides.

Every key is validated when the config is loaded, so a typo fails before an hour of training does,
and the error names the closest valid key.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pefty_whisper.config.validation import (
    all_errors,
    build,
    closest_hint,
    parse_override,
    read_yaml,
)
from pefty_whisper.errors import ConfigError
from pefty_whisper.whisper.context import ContextMode
from pefty_whisper.whisper.tokens import MAX_TARGET_POSITIONS

NormalizeMode = Literal["spelling", "phonetic", "raw"]
QuantMode = Literal["8bit", "4bit", "none"]
Precision = Literal["auto", "fp32", "fp16", "bf16"]
# train.report_to: the Trainer's integrations pefty records a run for (tracking.py)
REPORTERS = ("tensorboard", "mlflow", "wandb", "none")
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
    report_to: tuple[str, ...] = ("tensorboard",)
    """Where the round's run is logged, through the Trainer's integrations: tensorboard (the
    round's logs/), mlflow, wandb, several (a list), or none. MLflow and W&B runs get the round's
    lineage as parameters, and `pefty evaluate` logs its figures to the same run (the
    [track] extra installs them; their usual environment variables apply)."""

    def __post_init__(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(
                "Config key 'train.max_steps' must be a positive integer or null (use num_epochs); "
                f"got {self.max_steps}"
            )
        for name in self.report_to:
            if name not in REPORTERS:
                raise ConfigError(
                    f"Config key 'train.report_to' takes {', '.join(REPORTERS)} (or a list); "
                    f"got {name!r}.{closest_hint(name, REPORTERS)}"
                )
        if "none" in self.report_to and len(self.report_to) > 1:
            raise ConfigError("Config key 'train.report_to': none cannot go with other reporters")


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
    recover: bool = True
    """After sequential decoding, VAD speech that no segment covers (a sentence the decode
    skipped) is decoded again on its own, without timestamps, and put back in time order as a
    segment marked recovered; a piece whose no-speech probability is above
    no_speech_threshold stays out. A segment whose text is far shorter than the speech under
    it has that speech decoded again region by region, which replaces it where it writes
    clearly more. false: skipped speech is only reported (uncovered_speech)."""


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
                    f"got {kind!r}.{closest_hint(kind, NOISE_KINDS)}"
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
class LabelSection:
    """`pefty label`: how unlabelled audio is cut into utterances and which labels are kept.

    Every utterance's scores are kept in the labelling's progress, so the thresholds apply when
    the set is written: a relabel is never needed to filter differently."""

    max_segment_s: float = 30.0
    """Speech regions of the VAD are joined, at pauses, into utterances of at most this long."""
    min_segment_s: float = 1.0
    """Shorter utterances are dropped (a cough, a click): too little to learn from."""
    join_pause_s: float = 0.5
    """Regions are joined across pauses shorter than this; a longer pause ends an utterance."""
    min_avg_logprob: float | None = -1.0
    """Labels whose mean token log-probability is lower are dropped (Whisper's own -1.0).
    null: no check."""
    max_compression_ratio: float | None = 2.4
    """Labels whose text gzip-compresses better than this are repetition loops: dropped.
    null: no check."""
    max_no_speech_prob: float | None = 0.6
    """Utterances whose no-speech probability is higher are dropped as not speech. null: no
    check."""
    second_pass: str = "none"
    """A second decode each label is compared with: none, beam (the teacher again with beam
    search of 5), or a model (merged/round1: the previous round, resolved like --model)."""
    max_disagreement_cer: float | None = 0.3
    """With a second pass: labels whose CER against the second decode is higher are dropped.
    null: no check."""


@dataclass(frozen=True)
class Config:
    data: DataSection = field(default_factory=DataSection)
    model: ModelSection = field(default_factory=ModelSection)
    lora: LoraSection = field(default_factory=LoraSection)
    train: TrainSection = field(default_factory=TrainSection)
    decode: DecodeSection = field(default_factory=DecodeSection)
    serve: ServeSection = field(default_factory=ServeSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    label: LabelSection = field(default_factory=LabelSection)


def load_config(path: Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Build the config from defaults, then the YAML file, then `section.key=value` overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml(Path(path))
    for override in overrides:
        key, value = parse_override(override)
        section, name = key.split(".", 1)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raw[section] = {}
        raw[section][name] = value
    errors: list[str] = []
    config = build(Config, raw, "", errors)
    if errors:
        raise ConfigError(all_errors(errors, path if not overrides else None))
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
