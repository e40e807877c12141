"""The model card: README.md in the Hub's format for a merged round or an export.

The card is a view of the workspace's records, rewritten whenever they change (`pefty merge`,
`pefty export`, `pefty evaluate`): YAML metadata the Hub indexes (language, license carried from
the base, base_model, library_name of the format, pipeline_tag, tags, datasets, and a model-index
with every evaluation of this model from its EvalRecords: set, protocol, value), then the rounds
table, each round's training settings (RoundRecord) and how to load the model with transformers,
faster-whisper and `pefty transcribe`. Only a card pefty wrote (tagged pefty-whisper) is
rewritten: a hub model's own README, evaluated as a base, is left alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pefty_whisper.evaluate.rounds_table import collect_rounds, format_rounds_table
from pefty_whisper.files import atomic_write_text
from pefty_whisper.metrics import PROTOCOL_DESCRIPTIONS
from pefty_whisper.whisper.model_dir import ModelDir
from pefty_whisper.workspace import (
    EvalLabel,
    EvalRecord,
    ExportRecord,
    MergeRecord,
    RoundRecord,
    Workspace,
)

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from pefty_whisper.config import Config

__all__ = [
    "CARD_FILE",
    "CARD_TAG",
    "model_card",
    "refresh_model_card",
    "update_model_card",
    "write_base_card",
    "write_model_card",
]

logger = logging.getLogger(__name__)

CARD_FILE = "README.md"
CARD_TAG = "pefty-whisper"  # marks a card pefty wrote, and so may rewrite
TASK = "automatic-speech-recognition"
LIBRARIES = {"torch": "transformers", "ct2": "ctranslate2", "onnx": "onnx"}
# Licenses of hub bases known without asking the Hub (OpenAI's Whisper checkpoints).
KNOWN_LICENSES = (("openai/whisper-", "apache-2.0"),)
# An evaluation's figures of a record written before protocols were recorded: (metric type,
# protocol as metrics.PROTOCOLS names it, shown name). Newer records list every protocol.
FIGURES = (
    ("cer", "kspon", "CER, spaces removed"),
    ("cer", "spaces", "CER with spaces"),
    ("wer", "wer", "WER"),
)


@dataclass(frozen=True)
class Lineage:
    """Where a model came from: its rounds (oldest first) and the first round's base."""

    rounds: tuple[RoundRecord, ...]
    root: str | None  # the first round's base as given (a hub id or a path)
    base_model: str | None  # its hub id, where known
    license: str | None
    round: int | None  # the model's own round (an export's source round)
    created: str | None  # when the model was written: older evaluations are of other weights


def write_model_card(
    workspace: Workspace, config: Config, model_dir: Path, repo_id: str | None = None
) -> Path:
    """Write (or rewrite) the card of a model directory of the workspace; `repo_id` names it
    in the card's examples (default: its path in the workspace)."""
    path = Path(model_dir) / CARD_FILE
    atomic_write_text(path, model_card(workspace, config, model_dir, repo_id).content + "\n")
    logger.info("model card written: %s", path)
    return path


def refresh_model_card(workspace: Workspace, config: Config, model_dir: Path) -> Path | None:
    """Rewrite the card if pefty wrote the one there (after an evaluation, so the model-index
    follows the figures); None where there is none or it is someone else's. Its examples name
    the model by its workspace path again: `pefty push` names the repository anew."""
    if not is_pefty_card(Path(model_dir) / CARD_FILE):
        return None
    return write_model_card(workspace, config, model_dir)


def is_pefty_card(path: Path) -> bool:
    if not path.is_file():
        return False
    return CARD_TAG in (_card_metadata(path).get("tags") or ())


def update_model_card(
    workspace: Workspace, config: Config, model_dir: Path, refresh_only: bool = False
) -> Path | None:
    """The card after a merge, an export (`refresh_only` False) or an evaluation (True): the
    model is written either way, so a card that cannot be built is a warning, not a failure."""
    try:
        if refresh_only:
            return refresh_model_card(workspace, config, model_dir)
        return write_model_card(workspace, config, model_dir)
    except Exception as exc:
        logger.warning("%s: model card not written (%s)", model_dir, _first_line(exc))
        return None


def model_card(
    workspace: Workspace, config: Config, model_dir: Path, repo_id: str | None = None
) -> ModelCard:
    """The card of a merged round or an export, from the workspace's records."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    model_dir = Path(model_dir).resolve()
    backend = ModelDir(model_dir).backend  # a non-model directory fails here, with the way out
    lineage = read_lineage(workspace, model_dir)
    label = workspace.model_target(config, str(model_dir)).label
    evals = model_evaluations(workspace, label, lineage.created, model_dir)
    language = _language(lineage, config)
    root_name = Path(lineage.base_model or lineage.root or "whisper").name
    name = f"{root_name}-{language}-{label}"
    results = [
        EvalResult(
            task_type=TASK,
            task_name="Automatic Speech Recognition",
            dataset_type=record.set,
            dataset_name=record.set,
            dataset_config=eval_label.variant or None,
            metric_type=metric,
            metric_value=value,
            metric_name=shown,
            metric_config=protocol,
            metric_args={"backend": record.backend, "utterances": record.num_utterances, **args},
        )
        for eval_label, record in evals
        for metric, protocol, shown, value, args in _figures(record)
    ]
    tags = [CARD_TAG, "whisper", "lora", "korean" if language == "ko" else language]
    tags += [] if backend == "torch" else [LIBRARIES[backend]]
    data = ModelCardData(
        language=language,
        license=lineage.license,
        base_model=lineage.base_model,
        library_name=LIBRARIES[backend],
        pipeline_tag=TASK,
        tags=tags,
        datasets=_datasets(lineage) or None,
        model_name=name,
        eval_results=results or None,
    )
    model_id = repo_id or _workspace_path(workspace, model_dir)
    body = _body(workspace, name, backend, model_id, lineage, evals)
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")


def read_lineage(workspace: Workspace, model_dir: Path) -> Lineage:
    """The rounds behind a merged model (or the merged model an export came from), following
    each merged round's base back to the first round's."""
    export = ExportRecord.read(model_dir)
    merged = MergeRecord.read(model_dir)
    created = export.created if export is not None else merged.merged if merged else None
    if export is not None:
        source = Path(export.source)
        merged = MergeRecord.read(source) if source.is_dir() else None
    own_round = merged.round if merged is not None else None
    if export is not None and export.source_round is not None:
        own_round = export.source_round
    rounds, root, root_dir, seen = [], None, None, set()
    while merged is not None and merged.round not in seen:
        seen.add(merged.round)
        record = RoundRecord.read(merged.adapter_dir) if merged.adapter_dir.is_dir() else None
        record = record or workspace.round_record(merged.round)
        if record is not None:
            rounds.append(record)
        root, root_dir = merged.base, merged.base_dir
        base = _local_dir(workspace, merged.base) or merged.base_dir
        merged = MergeRecord.read(base) if base.is_dir() else None
    local = _local_dir(workspace, root) if root else None
    base_model = None if local is not None or root is None else root  # not a path: a hub id
    card_dir = local or root_dir
    meta = _card_metadata(card_dir / CARD_FILE) if card_dir and card_dir.is_dir() else {}
    base_model = base_model or meta.get("base_model")
    license_ = meta.get("license") or _known_license(base_model or root)
    return Lineage(tuple(reversed(rounds)), root, base_model, license_, own_round, created)


def model_evaluations(
    workspace: Workspace, label: str, created: str | None, model_dir: Path
) -> list[tuple[EvalLabel, EvalRecord]]:
    """The model's evaluations (eval/<label>/, every set and variant, of this directory), but
    none older than the model itself: a round merged again with --force has other weights
    than they measured."""
    found = []
    for eval_label, record in sorted(
        workspace.eval_records().items(), key=lambda item: (item[0].set_name, item[0].variant)
    ):
        if eval_label.folder != label or not _same_model(record, model_dir):
            continue
        if created is not None and (record.evaluated or "") < created:
            logger.info("the card leaves out %s: evaluated before the model was written", label)
            continue
        found.append((eval_label, record))
    return found


def write_base_card(base_dir: Path, base_model: str, license_: str, note: str) -> Path:
    """A short card for a base pefty put in a workspace (the demo's offline whisper-base), so
    the cards of the rounds trained on it carry its hub id and license."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(
        base_model=base_model,
        license=license_,
        library_name="transformers",
        pipeline_tag=TASK,
        tags=["whisper"],
    )
    path = Path(base_dir) / CARD_FILE
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n# {Path(base_model).name}\n\n{note}\n")
    atomic_write_text(path, card.content + "\n")
    return path


# ---- the body ----------------------------------------------------------------------------------


def _body(
    workspace: Workspace,
    name: str,
    backend: str,
    model_id: str,
    lineage: Lineage,
    evals: list[tuple[EvalLabel, EvalRecord]],
) -> str:
    kinds = {"torch": "a transformers checkpoint", "ct2": "a CTranslate2 model", "onnx": "ONNX"}
    base = lineage.base_model or lineage.root or "a Whisper base"
    rounds = len(lineage.rounds)
    parts = [
        f"# {name}",
        f"Whisper fine-tuned for Korean speech recognition with pefty-whisper: "
        f"{rounds} round{'s' if rounds != 1 else ''} of LoRA on a frozen base, each merged into "
        f"the next round's base, starting from `{base}`. This directory is "
        f"{kinds[backend]}.",
        "## Evaluation",
        _eval_table(evals),
    ]
    if lineage.round is not None:
        rows = [
            replace(row, base=_shown_base(row.base))
            for row in collect_rounds(workspace)
            if row.round_index <= lineage.round
        ]
        if rows:
            table = format_rounds_table(rows)
            note = "One row per round (`pefty rounds`); round 0 is the base, zero-shot."
            parts += ["## Rounds", note, _code(table)]
    if lineage.rounds:
        parts += ["## Training", _training_table(lineage.rounds)]
    parts += ["## How to use it", _usage(backend, model_id)]
    return "\n\n".join(parts) + "\n"


def _eval_table(evals: list[tuple[EvalLabel, EvalRecord]]) -> str:
    if not evals:
        return "Not evaluated yet: `pefty evaluate --set eval_clean --model <this model>`."
    lines = [
        "| set | variant | backend | context | utterances | CER, spaces removed | "
        "CER with spaces | WER | long-form CER |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for label, r in evals:
        longform = f"{r.longform['cer']:.2f}" if r.longform else "-"
        lines.append(
            f"| {r.set} | {label.variant or '-'} | {r.backend} | {r.context} | "
            f"{r.num_utterances:,d} | {r.cer:.2f} | {r.cer_with_spaces:.2f} | {r.wer:.2f} | "
            f"{longform} |"
        )
    normalization = evals[0][1].normalization
    return "\n".join(lines) + f"\n\nIn percent. Scoring: {normalization}."


def _training_table(rounds: tuple[RoundRecord, ...]) -> str:
    lines = [
        "| round | base | training data | examples | steps | batch | learning rate | "
        "LoRA r / alpha / dropout | base precision | DeepSpeed | packing | best valid CER | "
        "hours |",
        "|---:|---|---|---:|---:|---|---:|---|---|---|---|---:|---:|",
    ]
    for r in rounds:
        train, lora = r.config.get("train") or {}, r.config.get("lora") or {}
        packing = "yes" if (r.config.get("data") or {}).get("packing") else "no"
        batch = (
            f"{train.get('batch_size', '?')} x {train.get('gradient_accumulation_steps', 1)} "
            f"x {r.world_size}"
        )
        cer = r.best_validation.cer
        lines.append(
            f"| {r.round} | `{_shown_base(r.base)}` | {r.data.train_label} | "
            f"{r.data.train_examples:,d} | "
            f"{r.steps:,d} | {batch} | {train.get('learning_rate', '?')} | "
            f"{lora.get('r', '?')} / {lora.get('alpha', '?')} / {lora.get('dropout', '?')} | "
            f"{r.quant} | {r.deepspeed} | {packing} | "
            f"{'-' if cer is None else f'{cer:.2f}'} | {r.seconds / 3600:.2f} |"
        )
    modules = (rounds[-1].config.get("lora") or {}).get("target_modules") or []
    note = "Batch: utterances (or packed windows) per device x accumulation x processes."
    if modules:
        note += f" LoRA on {', '.join(modules)}."
    return "\n".join(lines) + f"\n\n{note}"


def _usage(backend: str, model_id: str) -> str:
    pefty = _code(
        f"pefty transcribe call.wav --model {model_id} --format srt\n"
        f"pefty transcribe call.wav --model {model_id} --word-timestamps --format json\n"
        f"pefty serve --model {model_id}   # OpenAI's API and a page at http://127.0.0.1:8000/",
        "bash",
    )
    if backend == "ct2":
        faster = _code(
            "from faster_whisper import WhisperModel\n\n"
            f'model = WhisperModel("{model_id}", compute_type="int8")\n'
            'segments, info = model.transcribe("call.wav", language="ko", word_timestamps=True)\n'
            'print(" ".join(segment.text for segment in segments))',
            "python",
        )
        transformers = (
            f"`pefty import-ct2 {model_id} imported/` turns it back into a transformers "
            "checkpoint (the merged round it came from is one already)."
        )
    else:
        transformers = _code(
            "from transformers import pipeline\n\n"
            f'asr = pipeline("automatic-speech-recognition", model="{model_id}")\n'
            'print(asr("call.wav", return_timestamps=True)["text"])  # Korean: its generation '
            "config says so",
            "python",
        )
        if backend == "onnx":
            transformers = (
                "ONNX graphs in Optimum's layout (encoder_model.onnx, decoder_model.onnx, "
                "decoder_with_past_model.onnx) for onnxruntime; pefty decodes them as below."
            )
        faster = (
            f"Convert it first: `pefty export --model {model_id} --format ct2` writes a "
            "CTranslate2 model that `faster_whisper.WhisperModel` loads."
            if backend == "torch"
            else "Use the CTranslate2 export of the same round."
        )
    return "\n\n".join(
        ["### transformers", transformers, "### faster-whisper", faster, "### pefty", pefty]
    )


# ---- helpers -----------------------------------------------------------------------------------


def _shown_base(base: str) -> str:
    """A base as given, but an absolute path only by its name: a card is published."""
    return Path(base).name if Path(base).is_absolute() else base


def _figures(record: EvalRecord) -> list[tuple[str, str, str, float, dict[str, Any]]]:
    """(metric type, protocol, shown name, value, metric_args) of each figure of a record: every
    scoring protocol it holds with its 95% interval (docs/scoring.md), then long-form CER."""
    if record.protocols:
        found = [
            (
                "wer" if protocol == "wer" else "cer",
                protocol,
                PROTOCOL_DESCRIPTIONS.get(protocol, protocol),  # type: ignore[call-overload]
                figure.rate,
                {"interval": [figure.low, figure.high]},
            )
            for protocol, figure in record.protocols.items()
        ]
    else:
        values = {"kspon": record.cer, "spaces": record.cer_with_spaces, "wer": record.wer}
        found = [(m, protocol, shown, values[protocol], {}) for m, protocol, shown in FIGURES]
    if record.longform:
        found.append(("cer", "long-form", "long-form CER", record.longform["cer"], {}))
    return found


def _same_model(record: EvalRecord, model_dir: Path) -> bool:
    """Whether the record is of this directory (another merge of the same round shares its
    label); a record whose directory is gone (a moved workspace) counts by its label."""
    evaluated = Path(record.model)
    return not evaluated.exists() or evaluated.resolve() == model_dir.resolve()


def _datasets(lineage: Lineage) -> list[str]:
    names: list[str] = []
    for record in lineage.rounds:
        for data in (record.data.train, *record.data.mixed):
            if data.name not in names:
                names.append(data.name)
    return names


def _language(lineage: Lineage, config: Config) -> str:
    from pefty_whisper.whisper.tokens import language_code

    trained = (lineage.rounds[-1].config.get("model") or {}) if lineage.rounds else {}
    return language_code(trained.get("language") or config.model.language)


def _local_dir(workspace: Workspace, base: str | None) -> Path | None:
    if not base:
        return None
    for candidate in (Path(base), workspace.root / base):
        if candidate.is_dir():
            return candidate
    return None


def _known_license(model: str | None) -> str | None:
    return next((lic for prefix, lic in KNOWN_LICENSES if (model or "").startswith(prefix)), None)


def _card_metadata(path: Path) -> dict[str, Any]:
    """A card's YAML metadata, {} where there is none or it does not parse."""
    if not path.is_file():
        return {}
    from huggingface_hub import ModelCard

    try:
        return ModelCard.load(path, ignore_metadata_errors=True).data.to_dict()
    except Exception as exc:  # someone else's README: never a reason to fail a merge
        logger.debug("%s: no readable card metadata (%s)", path, exc)
        return {}


def _workspace_path(workspace: Workspace, model_dir: Path) -> str:
    try:
        return model_dir.relative_to(workspace.root).as_posix()
    except ValueError:
        return str(model_dir)


def _code(text: str, language: str = "text") -> str:
    return f"```{language}\n{text}\n```"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
