"""The workspace layout: every path and name pefty reads or writes, and the records kept there.

Outputs are written through `files.py` (a temporary sibling renamed into place), so a killed
command never leaves a half-written file or model directory that looks finished.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from pefty_whisper.config import Config, ModelSection, load_config
from pefty_whisper.data.manifest import round_manifest_name
from pefty_whisper.errors import PeftyError
from pefty_whisper.files import atomic_write_text, lock_path

logger = logging.getLogger(__name__)

CONFIG_FILE = "pefty.yaml"
ROUND_FILE = "round.json"
BASE_LABEL = "round0"  # eval/round0/: the configured base, zero-shot
# Field metadata: a key written only when it differs from its default, so a record of a kind
# written before the key existed comes back from a re-write key for key.
OMIT_DEFAULT = "omit_default"


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, root: str | Path | None = None) -> Workspace:
        """The workspace rooted at `root`, or the current directory."""
        return cls(Path(root or ".").resolve())

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def audio_dir(self, name: str) -> Path:
        """Audio that `prepare hf` had to write out (a dataset that holds it as bytes)."""
        return self.root / "audio" / name

    def manifest_path(self, name: str) -> Path:
        """`--set eval_clean` means data/eval_clean.csv; a path to a CSV is taken as it is."""
        candidate = Path(name)
        if candidate.suffix == ".csv":
            return candidate if candidate.is_absolute() else self.root / candidate
        return self.data_dir / f"{name}.csv"

    def round_manifest(self, round_index: int, split: str) -> Path:
        """Round N trains on part N of KsponSpeech: train_KsponSpeech_0N_{train,test}.csv."""
        return self.data_dir / f"{round_manifest_name(round_index, split)}.csv"

    def adapter_dir(self, round_index: int) -> Path:
        return self.root / "adapters" / self.round_label(round_index)

    def adapter_staging_dir(self, round_index: int) -> Path:
        """Where `train --force` trains: swapped in for adapters/roundN only once finished, so a
        typo, a crash or Ctrl-C in the new run never costs the old round."""
        return self.root / "adapters" / f".{self.round_label(round_index)}.next"

    def round_lock(self, round_index: int) -> Path:
        """adapters/.roundN.lock: one `pefty train` per round at a time."""
        return lock_path(self.adapter_dir(round_index))

    def merged_dir(self, round_index: int) -> Path:
        return self.root / "merged" / self.round_label(round_index)

    def merged_ref(self, round_index: int) -> str:
        """merged/roundN as a base or `--model` is written: relative, so a workspace can move."""
        return self.merged_dir(round_index).relative_to(self.root).as_posix()

    # -- rounds: which exist, which finished ---------------------------------------------------

    def round_record(self, round_index: int) -> RoundRecord | None:
        """adapters/roundN/round.json, or None while the round has not finished."""
        return RoundRecord.read(self.adapter_dir(round_index))

    def merge_record(self, round_index: int) -> MergeRecord | None:
        """merged/roundN/round.json, or None while the round is not merged."""
        return MergeRecord.read(self.merged_dir(round_index))

    def round_finished(self, round_index: int) -> bool:
        return (self.adapter_dir(round_index) / ROUND_FILE).is_file()

    def merge_finished(self, round_index: int) -> bool:
        return (self.merged_dir(round_index) / ROUND_FILE).is_file()

    def round_indices(self) -> list[int]:
        """Every round with an adapters/ or merged/ folder, finished or not."""
        return sorted(
            {index for folder in ("adapters", "merged") for index in self._round_folders(folder)}
        )

    def latest_adapter_round(self) -> int | None:
        """The highest round whose adapter finished (what `pefty merge` takes by default)."""
        return max(self.finished_rounds("adapters"), default=None)

    def latest_merged_round(self) -> int | None:
        """The highest merged round (what evaluate and export take by default)."""
        return max(self.finished_rounds("merged"), default=None)

    def export_dir(self, name: str) -> Path:
        return self.root / "exports" / name

    def export_dir_for(self, model_name: str, fmt: str, quantization: str | None) -> Path:
        """exports/round5-ct2-int8 for round5 in ct2 int8: the one way export names are made."""
        return self.export_dir(export_name(model_name, fmt, quantization))

    def finished_rounds(self, folder: str) -> list[int]:
        """Round numbers under adapters/ or merged/ whose round.json says they finished."""
        return sorted(
            index
            for index, directory in self._round_folders(folder).items()
            if (directory / ROUND_FILE).is_file()
        )

    def _round_folders(self, folder: str) -> dict[int, Path]:
        found = {}
        for directory in (self.root / folder).glob("round*"):
            index = self.label_round(directory.name)
            if index is not None and directory.is_dir():
                found[index] = directory
        return found

    # -- evaluations: eval/<label>/<set>.json and .tsv -----------------------------------------

    @staticmethod
    def round_label(round_index: int) -> str:
        """roundN: the folder of a round under adapters/ and merged/, and its eval/ label."""
        return f"round{round_index}"

    @staticmethod
    def adapter_label(round_index: int) -> str:
        """An adapter evaluated before its merge is kept apart from the merged round's figures."""
        return f"round{round_index}-adapter"

    @staticmethod
    def converted_label(label: str, backend: str) -> str:
        """A checkpoint decoded through a conversion (round2-ct2) is kept beside its PyTorch
        figures, which `pefty rounds` reports, not over them."""
        return f"{label}-{backend}"

    @staticmethod
    def model_label(path: Path) -> str:
        """The label of a model outside the rounds: its folder name, safe as a folder name."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name or "model")

    @staticmethod
    def label_round(label: str) -> int | None:
        """N for the label roundN (0 for the base); None for any other label."""
        match = re.fullmatch(r"round(\d+)", label)
        return int(match.group(1)) if match else None

    def eval_dir(self, label: str) -> Path:
        return self.root / "eval" / label

    def eval_json(self, label: str, set_name: str, variant: str = "") -> Path:
        """The summary of one evaluation: metrics, model, set, backend. A variant (a partial
        set, another context) is eval_clean@first-50.json, never the round's eval_clean.json."""
        return self.eval_dir(label) / f"{set_name}{'@' + variant if variant else ''}.json"

    def eval_tsv(self, label: str, set_name: str, variant: str = "") -> Path:
        """One row per utterance of an evaluation, so a figure traces back to its sentences."""
        return self.eval_dir(label) / f"{set_name}{'@' + variant if variant else ''}.tsv"

    def eval_summaries(self) -> list[Path]:
        """Every eval/<label>/<set>.json, for the rounds table."""
        return sorted((self.root / "eval").glob("*/*.json"))

    def load_config(self, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
        """`--config` if given, else the workspace's pefty.yaml if present, else the defaults."""
        if path is None and (self.root / CONFIG_FILE).is_file():
            path = self.root / CONFIG_FILE
        return load_config(Path(path) if path is not None else None, overrides)


# -- records: round.json of adapters/roundN and merged/roundN -------------------------------------
#
# One dataclass per record, one read/write pair: the JSON keys on disk are the field names, so a
# record written by an earlier version reads back as long as it has the required keys.


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


# -- records: export.json of exports/<name> (written by pefty_whisper.export) ---------------------
#
# The parity record of an export: what it was made from, and how its transcripts of the probe
# compare with PyTorch's. The JSON keys are the field names, read and written only here.

EXPORT_FILE = "export.json"


def export_name(model_name: str, fmt: str, quantization: str | None) -> str:
    """`round5` + ct2 + int8 -> `round5-ct2-int8`: the folder name under exports/."""
    parts = [model_name or "model", fmt] + ([quantization] if quantization else [])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


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
