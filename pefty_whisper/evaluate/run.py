"""Evaluate a model on a set the KsponSpeech way: free decoding, CER with spaces removed first.

The language comes from the model's generation config, never from teacher-forced label tokens,
so the figure is what a user of the model gets. Every utterance is kept in a TSV beside the
summary, so a number can always be traced back to the sentences behind it.
"""

from __future__ import annotations

import csv
import io
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pefty_whisper.config import Config
from pefty_whisper.data.audio import SAMPLE_RATE, load_audio
from pefty_whisper.data.manifest import Utterance, read_manifest
from pefty_whisper.errors import ConfigError, DataError
from pefty_whisper.evaluate.longform import (
    LongformScore,
    score_longform,
    silence_characters,
    stitch_recordings,
)
from pefty_whisper.files import atomic_write_text
from pefty_whisper.metrics import UtteranceScore, score_corpus
from pefty_whisper.whisper.model_dir import ModelDir
from pefty_whisper.workspace import EvalLabel, EvalRecord, ModelTarget, Workspace

logger = logging.getLogger(__name__)

NORMALIZATION = (
    "NFC, lower-case, Unicode punctuation removed, spaces collapsed; "
    "cer removes all spaces (primary), cer_with_spaces keeps them, wer splits on spaces"
)
WORST_SHOWN = 5


@dataclass(frozen=True)
class EvalReport:
    label: EvalLabel  # where it is kept: its model, set and variant
    backend: str
    context: str  # the encoder context decoded at: full (30 s) or auto (see context.py)
    language: str | None  # the prompt's language; None: detected per utterance
    cer: float  # spaces removed, the primary figure
    cer_with_spaces: float
    wer: float
    num_utterances: int
    audio_seconds: float
    seconds: float
    json_path: Path
    tsv_path: Path
    worst: tuple[tuple[str, UtteranceScore], ...]
    # Whole-recording figures (longform_eval.py): None when not asked for.
    longform: LongformScore | None = None
    silence_chars: dict[str, int] | None = None

    @property
    def real_time_factor(self) -> float:
        return self.seconds / max(self.audio_seconds, 1e-9)

    @property
    def utterances_per_second(self) -> float:
        return self.num_utterances / max(self.seconds, 1e-9)


def evaluate_set(
    workspace: Workspace,
    config: Config,
    set_name: str,
    model: str | None = None,
    backend: str = "auto",
    limit: int | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, float], None] | None = None,
    longform: bool = True,
    language: str | None = None,
) -> EvalReport:
    """Decode every utterance of a set, score it, write eval/<label>/<set>.json and .tsv.

    Only a full evaluation at the workspace's own context is the round's figure; a partial one
    (`limit`) or one at another context is written beside it (<set>@<variant>.json) and shown
    as such by `pefty rounds`. `backend` auto decodes a directory with its own backend.
    With `longform`, the set is also stitched into recordings of a few minutes and decoded
    whole, and generated silence is decoded (longform_eval.py). `language` decodes a set in
    another language than model.language (the rounds table shows its WER).
    """
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be 1 or more (the first N utterances); got {limit}")
    if language is not None:
        from pefty_whisper.whisper.tokens import language_code

        language = language_code(language)  # an unknown name fails before the model loads
        if language == language_code(config.model.language):
            language = None  # the round's own language: its own figure
    target = workspace.model_target(config, model)
    manifest = read_manifest(workspace.manifest_path(set_name))
    utterances = manifest.utterances[:limit] if limit else manifest.utterances
    if not utterances:
        raise DataError(f"{manifest.path}: no utterances to evaluate")
    set_label = Path(set_name).stem
    from pefty_whisper.inference import Transcriber, TranscriberOptions

    batch_size = batch_size or config.decode.batch_size
    decodable = _decodable_model(workspace, config, target, backend)
    with decodable as model_dir:
        # The config's decode section, as validation during training uses it: its length cap
        # keeps a hallucinating model (the zero-shot base) from decoding to Whisper's limit.
        options = replace(
            TranscriberOptions.from_config(config, "ct2" if decodable.converted else backend),
            batch_size=batch_size,
            language=language,
        )
        transcriber = Transcriber(model_dir, options)
        hypotheses, seconds, audio_seconds = decode_utterances(
            transcriber, utterances, batch_size, progress
        )
        whole, silence = None, None
        if longform:
            recordings = stitch_recordings(utterances, seed=config.train.seed)
            whole = score_longform(transcriber, recordings)
            silence = silence_characters(transcriber, seed=config.train.seed)
    scores = score_corpus([u.sentence for u in utterances], hypotheses)
    partial = len(utterances) < len(manifest.utterances)
    label = EvalLabel(
        model=target.label,
        set_name=set_label,
        backend=transcriber.backend if decodable.converted else "",
        language=language,
        context=None
        if decodable.converted
        else _other_context(workspace, config, target.label, transcriber.context),
        first=len(utterances) if partial else None,
    )
    json_path = workspace.eval_json(label)
    tsv_path = workspace.eval_tsv(label)
    atomic_write_text(tsv_path, _per_utterance_tsv(utterances, scores.utterances))
    worst = sorted(
        zip((u.id for u in utterances), scores.utterances, strict=True),
        key=lambda pair: pair[1].chars.errors,
        reverse=True,
    )[:WORST_SHOWN]
    report = EvalReport(
        label=label,
        backend=transcriber.backend,
        context=transcriber.context,
        language=transcriber.language,
        cer=scores.cer,
        cer_with_spaces=scores.cer_with_spaces,
        wer=scores.wer,
        num_utterances=len(utterances),
        audio_seconds=audio_seconds,
        seconds=seconds,
        json_path=json_path,
        tsv_path=tsv_path,
        worst=tuple(worst),
        longform=whole,
        silence_chars=silence,
    )
    record = _record(report, target, manifest.path, limit, len(manifest.utterances))
    record.write(json_path)
    from pefty_whisper.card import update_model_card
    from pefty_whisper.tracking import log_evaluation

    if target.adapter_dir is None and not decodable.converted:
        # The model-index of a card pefty wrote follows the figures.
        update_model_card(workspace, config, target.model_dir, refresh_only=True)
    log_evaluation(target, label, record)  # to the round's MLflow / W&B run, if it has one
    return report


def _other_context(workspace: Workspace, config: Config, label: str, context: str) -> str | None:
    """The context a round was decoded at, where it is not the round's own (the one it was
    trained with, else the config's): kept apart as <set>@context-auto. A conversion or an
    export is apart by its label already; its context is in its record."""
    index = workspace.label_round(label)
    if index is None:
        return None
    record = workspace.round_record(index)
    trained = (record.config.get("model") or {}).get("context") if record else None
    return context if context != (trained or config.model.context) else None


def decode_utterances(
    transcriber: Any,
    utterances: list[Utterance],
    batch_size: int,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[list[str], float, float]:
    """Hypotheses in manifest order, decoding time, and audio seconds.

    Utterances are decoded in order of duration so each batch's transcripts are of similar
    length and the decoder wastes few steps on finished rows.
    """
    order = sorted(range(len(utterances)), key=lambda i: utterances[i].duration or 0.0)
    hypotheses: list[str] = [""] * len(utterances)
    audio_seconds = 0.0
    started = time.perf_counter()
    for start in range(0, len(order), batch_size):
        indices = order[start : start + batch_size]
        audios = [load_audio(utterances[i].path) for i in indices]
        batch_seconds = sum(len(a) for a in audios) / SAMPLE_RATE
        for i, text in zip(indices, transcriber.transcribe_batch(audios), strict=True):
            hypotheses[i] = text
        audio_seconds += batch_seconds
        if progress is not None:
            progress(len(indices), batch_seconds)
    return hypotheses, time.perf_counter() - started, audio_seconds


class _decodable_model:
    """The directory a backend can load: an adapter is merged into a temporary checkpoint, and
    a transformers checkpoint is converted for the ct2 backend (kept in exports/ for reuse)."""

    def __init__(
        self, workspace: Workspace, config: Config, target: ModelTarget, backend: str
    ) -> None:
        self.workspace, self.config, self.target, self.backend = workspace, config, target, backend
        self.tmp: tempfile.TemporaryDirectory | None = None
        self.converted = False  # a checkpoint converted for the backend (not its own format)

    def __enter__(self) -> Path:
        model_dir = self.target.model_dir
        if self.target.adapter_dir is not None:
            model_dir = self._merged_adapter()
        if self.backend == "ct2" and not ModelDir(model_dir).is_ct2:
            # A transformers checkpoint asked for at ct2: converted (an export is its own).
            model_dir = self._ct2_export(model_dir)
            self.converted = True
        return model_dir

    def __exit__(self, *exc: object) -> None:
        if self.tmp is not None:
            self.tmp.cleanup()

    def _merged_adapter(self) -> Path:
        """The same merge as `pefty merge` (base check, logit check, the round's language and
        task), into a temporary directory the evaluation removes."""
        from pefty_whisper.merge import merge_into

        assert self.target.adapter_dir is not None
        self.tmp = tempfile.TemporaryDirectory(prefix="pefty-eval-", dir=self.workspace.root)
        out_dir = Path(self.tmp.name) / "merged"
        merge_into(self.target.adapter_dir, self.workspace, self.config, out_dir)
        return out_dir

    def _ct2_export(self, model_dir: Path) -> Path:
        import torch

        from pefty_whisper.export import export_ct2

        # The ct2 backend's defaults: int8 on the CPU, float16 on a GPU.
        quantization = "float16" if torch.cuda.is_available() else "int8"
        out_dir = self.workspace.export_dir_for(self.target.label, "ct2", quantization)
        if not ModelDir(out_dir).is_ct2:
            logger.info("converting %s to CTranslate2 %s in %s", model_dir, quantization, out_dir)
            export_ct2(model_dir, out_dir, quantization=quantization)
        return out_dir


def _per_utterance_tsv(utterances: list[Utterance], scores: tuple[UtteranceScore, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(
        (
            "id",
            "reference",
            "hypothesis",
            "char_errors",
            "substitutions",
            "deletions",
            "insertions",
            "reference_chars",
            "word_errors",
            "reference_words",
        )
    )
    for utterance, score in zip(utterances, scores, strict=True):
        c, w = score.chars, score.words
        writer.writerow(
            (
                utterance.id,
                score.reference,
                score.hypothesis,
                c.errors,
                c.substitutions,
                c.deletions,
                c.insertions,
                c.reference_length,
                w.errors,
                w.reference_length,
            )
        )
    return buffer.getvalue()


def _record(
    report: EvalReport, target: ModelTarget, manifest: Path, limit: int | None, set_size: int
) -> EvalRecord:
    return EvalRecord(
        model=str(target.model_dir),
        label=report.label.folder,
        set=report.label.set_name,
        manifest=str(manifest),
        limit=limit,
        backend=report.backend,
        context=report.context,
        language=report.language,
        cer=report.cer,
        cer_with_spaces=report.cer_with_spaces,
        wer=report.wer,
        num_utterances=report.num_utterances,
        audio_seconds=round(report.audio_seconds, 2),
        seconds=round(report.seconds, 2),
        real_time_factor=report.real_time_factor,
        utterances_per_second=report.utterances_per_second,
        normalization=NORMALIZATION,
        evaluated=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        longform=report.longform.as_dict() if report.longform else None,
        silence_chars=report.silence_chars,
        variant=report.label.variant or None,
        partial=report.label.first is not None,
        set_size=set_size,
    )


def read_eval_results(workspace: Workspace) -> dict[EvalLabel, EvalRecord]:
    """Every evaluation of the workspace with its record, for `pefty rounds`."""
    return workspace.eval_records()
