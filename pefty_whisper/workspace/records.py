"""The workspace's records: round.json, export.json and the eval summaries, one JSON codec.

One dataclass per record, one read/write pair: the JSON keys on disk are the field names, so a
record written by an earlier version reads back as long as it has the required keys (keys it
does not know are ignored: a newer version may add some).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from pefty_whisper.config import ModelSection
from pefty_whisper.errors import PeftyError
from pefty_whisper.files import atomic_write_text

ROUND_FILE = "round.json"
EXPORT_FILE = "export.json"

# Field metadata: a key written only when it differs from its default, so a record of a kind
# written before the key existed comes back from a re-write key for key.
OMIT_DEFAULT = "omit_default"


class _RoundJson:
    """round.json read and written in one place; its presence marks a round (or merge) finished."""

    KIND: ClassVar[str]

    @classmethod
    def read(cls, directory: Path) -> Self | None:
        """The record in `directory`, or None if it has none (the step did not finish)."""
        path = Path(directory) / ROUND_FILE
        if not path.is_file():
            return None
        raw = _read_json(path)
        kind = raw.get("kind", cls.KIND) if isinstance(raw, dict) else cls.KIND
        if kind != cls.KIND:
            raise PeftyError(
                f"{path}: a record of kind '{kind}' where '{cls.KIND}' was expected "
                "(adapters/roundN holds adapters, merged/roundN merged models)"
            )
        return _from_json(cls, raw, path, "")

    def write(self, directory: Path) -> None:
        """Written last, atomically: readers see a finished step or none."""
        body = _to_json(self)
        body = {"round": body.pop("round"), "kind": self.KIND, **body}
        atomic_write_text(
            Path(directory) / ROUND_FILE,
            json.dumps(body, indent=2, ensure_ascii=False) + "\n",
        )


@dataclass(frozen=True)
class TeacherRecord:
    """The model that wrote a set's pseudo-labels (`pefty label`), as its lineage."""

    model: str  # the directory decoded, resolved
    weights_hash: str  # files.weights_hash of it, as round.json records a base
    backend: str  # torch or ct2
    round: int | None = None  # the round it is (merged/roundN or its export), where known


@dataclass(frozen=True)
class LabelRecord:
    """data/NAME.label.json: how a pseudo-labelled set was made; a round that trains on the
    set copies its teacher and filters into round.json."""

    name: str
    source: str  # the SOURCE as given
    teacher: TeacherRecord
    second_pass: str  # label.second_pass: none, beam, or the model compared with
    second_pass_hash: str | None  # weights hash of that model (None: none or beam)
    filters: dict[str, Any]  # the label.* thresholds applied
    inputs: int  # files (or spans) of the source
    utterances: int  # utterances cut from them by the VAD, kept or not
    kept: int
    dropped: dict[str, int]  # by reason (label/filters.py REASONS)
    audio_hours: float  # of the inputs
    kept_hours: float
    world_size: int
    seconds: float
    created: str
    versions: dict[str, str]

    @classmethod
    def read(cls, path: Path) -> LabelRecord | None:
        """The record at `path`, or None for a set that was not labelled (prepared)."""
        return _from_json(cls, _read_json(path), path, "") if Path(path).is_file() else None

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(_to_json(self), indent=2, ensure_ascii=False) + "\n")


@dataclass(frozen=True)
class DataRecord:
    """One manifest a round read: its rows, and what was kept and dropped before training."""

    path: Path
    rows: int
    rejected_rows: int
    kept: int
    dropped_audio_over_max_duration: int = 0
    dropped_labels_over_max_tokens: int = 0
    dropped_unreadable_audio: int = 0
    # Training sets of a round that mixes several: the share of each epoch asked for it, and
    # the examples drawn from it per epoch (absent from records of unmixed rounds)
    share: float | None = field(default=None, metadata={OMIT_DEFAULT: True})
    drawn: int | None = field(default=None, metadata={OMIT_DEFAULT: True})
    # A pseudo-labelled set (`pefty label`): the model that labelled it and the filters its
    # labels passed (absent for sets with their own transcripts)
    teacher: TeacherRecord | None = field(default=None, metadata={OMIT_DEFAULT: True})
    label_filters: dict[str, Any] | None = field(default=None, metadata={OMIT_DEFAULT: True})

    @property
    def name(self) -> str:
        """The set's name (train_KsponSpeech_02_train), as the rounds table shows it."""
        return self.path.stem


@dataclass(frozen=True)
class RoundData:
    train: DataRecord  # the round's own set (the first `--train`)
    validation: DataRecord
    # further training sets mixed in, with their shares
    mixed: tuple[DataRecord, ...] = field(default=(), metadata={OMIT_DEFAULT: True})

    @property
    def train_label(self) -> str:
        """`train_KsponSpeech_02_train + cv_ko_train 10%` for a mixed round, else the name."""
        sets = [self.train, *self.mixed]
        if len(sets) == 1:
            return self.train.name
        return " + ".join(f"{d.name} {100 * (d.share or 0):.0f}%" for d in sets)

    @property
    def train_examples(self) -> int:
        """Examples per epoch: the kept utterances, or what a mixed round draws from each set."""
        if not self.mixed:
            return self.train.kept
        return sum(d.kept if d.drawn is None else d.drawn for d in (self.train, *self.mixed))


@dataclass(frozen=True)
class ValidationRecord:
    """The best validation of a round: the checkpoint its adapter was taken from."""

    step: int | None = None
    cer: float | None = None  # spaces removed, the figure the best adapter is chosen by
    cer_with_spaces: float | None = None
    wer: float | None = None
    loss: float | None = None


@dataclass(frozen=True)
class RoundRecord(_RoundJson):
    """adapters/roundN/round.json: the lineage of a trained adapter, which merge checks."""

    KIND: ClassVar[str] = "adapter"

    round: int
    base: str  # as the user gave it: a workspace path (merged/round1) or a hub id
    base_dir: Path  # where it was found
    base_hash: str  # files.weights_hash of base_dir at training time
    data: RoundData
    quant: str
    deepspeed: str
    world_size: int
    steps: int
    resumed_from: str | None
    train_loss: float | None
    best_validation: ValidationRecord
    trainable_parameters: int
    started: str
    finished: str
    seconds: float
    versions: dict[str, str]
    config: dict[str, Any]  # the resolved config as trained (config_to_dict)
    # data.packing: windows, packed/single/no-speech counts and utterances of one pass, and
    # the windows the round saw (data/packing.py); absent for a round of single utterances.
    packing: dict[str, int] | None = field(default=None, metadata={OMIT_DEFAULT: True})
    # The augment: section at work (train/augmentation.py): SpecAugment's switch, and the
    # passes, utterances and count of each waveform op; absent for a round without any.
    augment: dict[str, Any] | None = field(default=None, metadata={OMIT_DEFAULT: True})
    # train.report_to's runs: {"mlflow": {"run_id", "experiment_id", "tracking_uri"}, "wandb":
    # {"run_id", "project", "entity", "dir", "mode"}}, where `pefty evaluate` logs its figures.
    tracking: dict[str, dict[str, str]] | None = field(default=None, metadata={OMIT_DEFAULT: True})

    def model_section(self, current: ModelSection) -> ModelSection:
        """The model section the round was trained with (language, task), for decoding it;
        `current` fills what the record lacks."""
        model = self.config.get("model") or {}
        return dataclasses.replace(
            current,
            base=model.get("base", current.base),
            language=model.get("language", current.language),
            task=model.get("task", current.task),
            quant=model.get("quant", current.quant),
        )


@dataclass(frozen=True)
class MergeCheck:
    """Merged logits against the unmerged adapter model's, on a fixed probe batch."""

    max_abs_logit_diff: float
    tolerance: float


@dataclass(frozen=True)
class MergeRecord(_RoundJson):
    """merged/roundN/round.json: which adapter went into which base; the next round's base."""

    KIND: ClassVar[str] = "merged"

    round: int
    adapter_dir: Path
    base: str
    base_dir: Path
    base_hash: str
    weights_hash: str  # of the merged weights: the next round records it as its base_hash
    dtype: str
    merge_check: MergeCheck
    data: RoundData | None  # copied from the adapter's record
    steps: int | None
    best_validation: ValidationRecord | None
    merged: str
    versions: dict[str, str]
    tracking: dict[str, dict[str, str]] | None = field(  # copied from the adapter's record
        default=None, metadata={OMIT_DEFAULT: True}
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PeftyError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def _from_json(cls: type, raw: Any, path: Path, where: str) -> Any:
    """A record dataclass from its JSON object, nested records included; keys it does not know
    are ignored (a newer version may add some), missing required ones are an error."""
    if not isinstance(raw, dict):
        raise PeftyError(f"{path}: '{where or 'the record'}' must be a JSON object, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    missing = [
        f"{where}{f.name}"
        for f in fields
        if f.name not in raw
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise PeftyError(
            f"{path}: missing {', '.join(repr(m) for m in missing)}: the record is damaged; "
            "restore it, or redo the step that wrote it with --force"
        )
    values = {}
    for f in fields:
        if f.name in raw:
            values[f.name] = _field_value(hints[f.name], raw[f.name], path, f"{where}{f.name}")
    return cls(**values)


def _field_value(annotation: Any, value: Any, path: Path, where: str) -> Any:
    if value is None:
        return None
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else Any
    if dataclasses.is_dataclass(annotation):
        return _from_json(annotation, value, path, f"{where}.")
    if typing.get_origin(annotation) is dict and isinstance(value, dict):
        inner = typing.get_args(annotation)[1]
        if dataclasses.is_dataclass(inner):
            return {k: _from_json(inner, v, path, f"{where}.{k}.") for k, v in value.items()}
    if typing.get_origin(annotation) is tuple and isinstance(value, list):
        inner = typing.get_args(annotation)[0]
        return tuple(_field_value(inner, v, path, f"{where}[{i}]") for i, v in enumerate(value))
    if annotation is Path:
        return Path(value)
    return value


def _to_json(record: Any) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {
                f.name: plain(getattr(value, f.name))
                for f in dataclasses.fields(value)
                if not (f.metadata.get(OMIT_DEFAULT) and getattr(value, f.name) == f.default)
            }
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(record)


@dataclass(frozen=True)
class ExportProbe:
    """The probe decoded by PyTorch and by the export, and how far apart they came out."""

    kind: str  # "given", "espeak-ng" or "tones"
    utterances: int
    max_new_tokens: int
    compute_type: str  # what the export was decoded with (CPU probes of float16 use float32)
    identical_transcripts: int
    identical_tokens: int
    cer_difference: float | None  # the export's CER against PyTorch's transcripts, in points
    torch: list[str]
    exported: list[str]


@dataclass(frozen=True)
class ExportParity:
    """ONNX graph outputs against PyTorch's on one probe utterance (None for CTranslate2)."""

    encoder_max_abs_diff: float | None = None
    decoder_max_abs_logit_diff: float | None = None


@dataclass(frozen=True)
class ExportRecord:
    """exports/<name>/export.json: the source's lineage and the export's agreement with it."""

    format: str  # "ct2" or "onnx"
    quantization: str | None  # ct2: its quantization; onnx: "int8" or None (float32)
    source: str  # the model directory exported, resolved
    source_weights: str  # files.weights_hash of the source
    source_round: int | None
    language: str | None
    task: str | None
    n_mels: int | None
    probe: ExportProbe
    parity: ExportParity
    exporter: str | None  # "ctranslate2", "dynamo" or "torchscript"
    files: list[str]
    packages: dict[str, str]
    created: str
    seconds: float

    @classmethod
    def read(cls, path_or_dir: str | Path) -> ExportRecord | None:
        """The record of an export directory (or the export.json path itself); None for an
        export made elsewhere, which has none."""
        path = Path(path_or_dir)
        if path.is_dir() or path.name != EXPORT_FILE:
            path = path / EXPORT_FILE
        if not path.is_file():
            return None
        return _from_json(cls, _read_json(path), path, "")

    def write(self, directory: Path) -> Path:
        """Written last into the export's temporary directory, so it names every file."""
        path = Path(directory) / EXPORT_FILE
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written to export.json."""
        return _to_json(self)


# -- records: eval/<label>/<set>[@variant].json (written by pefty_whisper.evaluate) ---------------


@dataclass(frozen=True)
class RateFigure:
    """An error rate with its bootstrap interval (intervals.py): what `9.9% ±1.2` is made of."""

    rate: float  # percent: errors over reference_length
    low: float  # the interval's bounds, in percent (percentile intervals need not be symmetric)
    high: float
    errors: int
    reference_length: int  # characters, or words for WER
    units: int  # utterances (or recordings) resampled

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def format(self, digits: int = 1) -> str:
        """`9.9% ±1.2`: the figure and its uncertainty in one table cell."""
        return f"{self.rate:.{digits}f}% ±{self.half_width:.{digits}f}"


@dataclass(frozen=True)
class BootstrapSettings:
    """How the intervals of an evaluation were drawn: the same settings give the same bounds."""

    resamples: int
    seed: int
    confidence: float


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation's summary: the model, the set, how it was decoded, and its figures."""

    model: str  # the model directory decoded
    label: str  # its eval/ folder (roundN, roundN-ct2, ...)
    set: str
    manifest: str
    limit: int | None
    backend: str
    context: str  # the encoder context decoded at: full (30 s) or auto
    language: str | None  # the prompt's language; None: detected per utterance
    cer: float  # spaces removed, the primary figure
    cer_with_spaces: float
    wer: float
    num_utterances: int
    audio_seconds: float
    seconds: float
    real_time_factor: float
    utterances_per_second: float
    normalization: str
    evaluated: str
    # Whole-recording figures (evaluate/longform.py), None when not asked for.
    longform: dict[str, Any] | None = None
    silence_chars: dict[str, int] | None = None
    variant: str | None = None  # None: the round's own figure
    partial: bool = False
    set_size: int | None = None
    # Every scoring protocol's figure with its interval (metrics.PROTOCOLS: kspon is `cer`),
    # and the subsets' (digits, Latin letters, duration buckets) under kspon; empty in records
    # written before protocols existed. The per-utterance TSV recomputes all of them.
    protocols: dict[str, RateFigure] = field(default_factory=dict)
    subsets: dict[str, RateFigure] = field(default_factory=dict)
    bootstrap: BootstrapSettings | None = None
    timestamps: bool = False  # each utterance decoded with timestamps (`--timestamps`)
    condition: str | None = None  # the evaluation condition the audio was put under

    @classmethod
    def read(cls, path: Path) -> EvalRecord:
        return _from_json(cls, _read_json(path), path, "")

    def write(self, path: Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as written to eval/<label>/<set>.json."""
        return _to_json(self)
