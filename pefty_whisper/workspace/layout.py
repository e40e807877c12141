"""The workspace layout: every path, folder and label pefty reads or writes.

Outputs are written through `files.py` (a temporary sibling renamed into place), so a killed
command never leaves a half-written file or model directory that looks finished. The records
kept there are records.py's.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pefty_whisper.config import Config, load_config
from pefty_whisper.data.manifest import round_manifest_name
from pefty_whisper.errors import ConfigError
from pefty_whisper.files import lock_path
from pefty_whisper.whisper.model_dir import ModelDir, check_model_dir
from pefty_whisper.workspace.records import ROUND_FILE, EvalRecord, MergeRecord, RoundRecord

logger = logging.getLogger(__name__)

CONFIG_FILE = "pefty.yaml"
BASE_LABEL = "round0"  # eval/round0/: the configured base, zero-shot
# A checkpoint decoded through a conversion to one of these backends is kept apart (round2-ct2).
CONVERSION_BACKENDS = ("ct2", "onnx")
_TIMESTAMPS = "timestamps"  # the variant word of an evaluation decoded with timestamps


@dataclass(frozen=True)
class EvalLabel:
    """Where one evaluation is kept: eval/<folder>/<set>[@<variant>].json and .tsv.

    Only a full evaluation at the workspace's context, decoded by the model's own backend, is
    the round's figure; a conversion (round2-ct2), another language (`@lang-en`), another
    context (`@context-auto`), a partial set (`@first-50`) or the set under an evaluation
    condition (`@cond-telephone`, data/conditions.py) is kept beside it, never over it.
    This class is the one place these names are made and read back.
    """

    model: str  # roundN, roundN-adapter, or a model folder's name
    set_name: str
    backend: str = ""  # a checkpoint decoded through a conversion to this backend
    language: str | None = None  # decoded in another language than model.language
    context: str | None = None  # decoded at another context than model.context
    first: int | None = None  # only the first N utterances of the set
    timestamps: bool = False  # each utterance decoded with timestamps (`evaluate --timestamps`)
    condition: str | None = None  # the audio under a named condition (telephone, noise-10db)

    @property
    def folder(self) -> str:
        return f"{self.model}-{self.backend}" if self.backend else self.model

    @property
    def variant(self) -> str:
        """'' for the round's own figure, else
        `lang-en-context-auto-first-50-decode-timestamps-cond-telephone` (in that order; the
        condition last, since its name has dashes of its own)."""
        parts = [f"lang-{self.language}"] if self.language else []
        if self.context:
            parts.append(f"context-{self.context}")
        if self.first is not None:
            parts.append(f"first-{self.first}")
        if self.timestamps:
            parts.append(f"decode-{_TIMESTAMPS}")
        if self.condition:
            parts.append(f"cond-{self.condition}")
        return "-".join(parts)

    @property
    def column(self) -> str:
        """The set as the rounds table shows it: `eval_clean`, or `eval_clean@telephone` for
        the set under a condition, a column of its own."""
        return f"{self.set_name}@{self.condition}" if self.condition else self.set_name

    @property
    def stem(self) -> str:
        return f"{self.set_name}@{self.variant}" if self.variant else self.set_name

    @property
    def reference(self) -> str:
        """`round2-ct2@context-auto`: the evaluation as `pefty compare` names it (its set
        aside); the inverse of `from_reference`."""
        return f"{self.folder}@{self.variant}" if self.variant else self.folder

    @property
    def round(self) -> int | None:
        """N when the model is roundN (0: the base), else None."""
        match = re.fullmatch(r"round(\d+)", self.model)
        return int(match.group(1)) if match else None

    @classmethod
    def parse(cls, folder: str, stem: str) -> EvalLabel:
        """The label of eval/<folder>/<stem>.json; the inverse of folder and stem."""
        model, backend = folder, ""
        backends = "|".join(CONVERSION_BACKENDS)
        match = re.fullmatch(rf"(round\d+)-({backends})", folder)
        if match:
            model, backend = match.group(1), match.group(2)
        set_name, _, variant = stem.partition("@")
        condition = None
        if variant.startswith("cond-") or "-cond-" in variant:
            variant, _, condition = ("-" + variant).partition("-cond-")
            variant = variant[1:]
        words = variant.split("-") if variant else []
        keys = dict(zip(words[::2], words[1::2], strict=False))
        unknown = set(keys) - {"lang", "context", "first", "decode"}
        if (
            len(words) % 2
            or unknown
            or ("first" in keys and not keys["first"].isdigit())
            or keys.get("decode", _TIMESTAMPS) != _TIMESTAMPS
            or condition == ""
        ):
            raise ConfigError(f"eval/{folder}/{stem}.json: not an evaluation's name")
        return cls(
            model=model,
            set_name=set_name,
            backend=backend,
            language=keys.get("lang"),
            context=keys.get("context"),
            first=int(keys["first"]) if "first" in keys else None,
            timestamps="decode" in keys,
            condition=condition,
        )

    @classmethod
    def from_reference(cls, reference: str, set_name: str) -> EvalLabel:
        """`round2`, `round2-ct2` or `round2@context-auto` (an eval/ folder, with a variant)
        on `set_name`: how `pefty compare` names an evaluation that is not a model."""
        folder, _, variant = reference.partition("@")
        return cls.parse(folder, f"{set_name}@{variant}" if variant else set_name)


@dataclass(frozen=True)
class ModelTarget:
    """What evaluate or export works on: a model directory (or an adapter to merge first) and
    the label its evaluations are kept under."""

    model_dir: Path
    label: str  # eval/<label>/: roundN for merged/roundN, round0 for the configured base
    adapter_dir: Path | None = None


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

    # -- pseudo-labelled sets (`pefty label`): beside the manifest ---------------------------

    @staticmethod
    def label_record_of(manifest: Path) -> Path:
        """data/NAME.label.json of data/NAME.csv: present where the set was pseudo-labelled."""
        return Path(manifest).with_suffix(".label.json")

    def label_rejects(self, name: str) -> Path:
        """data/NAME.rejects.tsv: every dropped pseudo-label with its reason and scores."""
        return self.data_dir / f"{name}.rejects.tsv"

    def label_work_dir(self, name: str) -> Path:
        """data/.NAME.label/: a labelling's progress until it is written (resumable)."""
        return self.data_dir / f".{name}.label"

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
    def model_label(path: Path) -> str:
        """The label of a model outside the rounds: its folder name, safe as a folder name."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", path.name or "model")

    @staticmethod
    def label_round(label: str) -> int | None:
        """N for the label roundN (0 for the base); None for any other label."""
        match = re.fullmatch(r"round(\d+)", label)
        return int(match.group(1)) if match else None

    def eval_json(self, label: EvalLabel) -> Path:
        """The summary of one evaluation (records.EvalRecord)."""
        return self.root / "eval" / label.folder / f"{label.stem}.json"

    def eval_tsv(self, label: EvalLabel) -> Path:
        """One row per utterance of an evaluation, so a figure traces back to its sentences."""
        return self.root / "eval" / label.folder / f"{label.stem}.tsv"

    def eval_labels(self) -> list[tuple[EvalLabel, Path]]:
        """Every evaluation of the workspace with its summary's path, for the rounds table."""
        return [
            (EvalLabel.parse(path.parent.name, path.stem), path)
            for path in sorted((self.root / "eval").glob("*/*.json"))
        ]

    def eval_records(self) -> dict[EvalLabel, EvalRecord]:
        """Every evaluation of the workspace with its record (the rounds table, model cards)."""
        return {label: EvalRecord.read(path) for label, path in self.eval_labels()}

    def model_target(self, config: Config, model: str | None = None) -> ModelTarget:
        """`--model` of evaluate and export: omitted, the latest merged round (or the base
        before any round); an adapter is kept apart as roundN-adapter, an export or any other
        model by its folder's name, the configured base as round0."""
        if model is None:
            latest = self.latest_merged_round()
            model = self.merged_ref(latest) if latest is not None else config.model.base
        found = ModelDir.resolve(model, self.root)
        if found.is_adapter:
            adapter = RoundRecord.read(found.path)
            label = self.adapter_label(adapter.round) if adapter else self.model_label(found.path)
            return ModelTarget(found.path, label, adapter_dir=found.path)
        if found.is_export:
            return ModelTarget(found.path, self.model_label(found.path))
        merged = MergeRecord.read(found.path)
        if merged is not None:
            label = self.round_label(merged.round)
        elif self._is_configured_base(model, found.path, config.model.base):
            label = BASE_LABEL
        else:
            label = self.model_label(found.path)
        return ModelTarget(check_model_dir(found.path), label)

    def _is_configured_base(self, model: str, model_dir: Path, base: str) -> bool:
        """Whether `model` is round 1's base (round 0), without resolving a hub id: offline,
        that would fail for every other model too."""
        candidate = Path(base) if Path(base).is_absolute() else self.root / base
        return model == base or (candidate.is_dir() and candidate.resolve() == model_dir.resolve())

    def load_config(self, path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
        """`--config` if given, else the workspace's pefty.yaml if present, else the defaults."""
        if path is None and (self.root / CONFIG_FILE).is_file():
            path = self.root / CONFIG_FILE
        return load_config(Path(path) if path is not None else None, overrides)


def export_name(model_name: str, fmt: str, quantization: str | None) -> str:
    """`round5` + ct2 + int8 -> `round5-ct2-int8`: the folder name under exports/."""
    parts = [model_name or "model", fmt] + ([quantization] if quantization else [])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))
