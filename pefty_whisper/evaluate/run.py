"""Evaluate a model on a set the KsponSpeech way: free decoding, CER with spaces removed first.

The language comes from the model's generation config, never from teacher-forced label tokens,
so the figure is what a user of the model gets. One decode is scored under every protocol and
subset, each with its bootstrap interval (figures.py), and every utterance is kept in a TSV
beside the summary, so a number can always be traced back to the sentences behind it.
"""

from __future__ import annotations

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
from pefty_whisper.data.conditions import ConditionedAudio
from pefty_whisper.data.manifest import Utterance, read_manifest
from pefty_whisper.errors import ConfigError, DataError
from pefty_whisper.evaluate.figures import DecodeFigures, per_utterance_tsv, score_decode
from pefty_whisper.evaluate.longform import (
    LongformScore,
    score_longform,
    silence_characters,
    stitch_recordings,
)
from pefty_whisper.files import atomic_write_text
from pefty_whisper.inference.longform import seed_fallback
from pefty_whisper.metrics import UtteranceScore
from pefty_whisper.ranks import (
    barrier,
    check_shared_workspace,
    ends_process_group,
    is_main_process,
    map_batches,
    on_rank_zero,
)
from pefty_whisper.whisper.model_dir import ModelDir
from pefty_whisper.workspace import EvalLabel, EvalRecord, ModelTarget, Workspace

logger = logging.getLogger(__name__)

NORMALIZATION = (
    "NFC, lower-case, Unicode punctuation removed, spaces collapsed; "
    "cer removes all spaces (primary), cer_with_spaces keeps them, wer splits on spaces; "
    "protocols: kspon (= cer), kspon-phonetic, dual, spaces (= cer_with_spaces), wer"
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
    # Every protocol's and subset's figure with its interval (figures.py).
    figures: DecodeFigures | None = None
    timestamps: bool = False

    @property
    def real_time_factor(self) -> float:
        return self.seconds / max(self.audio_seconds, 1e-9)

    @property
    def utterances_per_second(self) -> float:
        return self.num_utterances / max(self.seconds, 1e-9)


@ends_process_group
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
    timestamps: bool = False,
    condition: str | None = None,
) -> EvalReport:
    """Decode every utterance of a set, score it, write eval/<label>/<set>.json and .tsv.

    Only a full evaluation at the workspace's own context is the round's figure; a partial one
    (`limit`) or one at another context is written beside it (<set>@<variant>.json) and shown
    as such by `pefty rounds`. `backend` auto decodes a directory with its own backend.
    With `longform`, the set is also stitched into recordings of a few minutes and decoded
    whole, and generated silence is decoded (longform_eval.py). `language` decodes a set in
    another language than model.language (the rounds table shows its WER). `timestamps`
    decodes each utterance (and the recordings) by timestamps, the sequential long-form path,
    instead of with `<|notimestamps|>`: kept apart as <set>@decode-timestamps. `condition`
    (data/conditions.py: telephone, noise-babble-10db, ...) degrades each utterance, seeded by
    its row, and is kept apart as <set>@cond-<condition>, a column of its own in the rounds
    table; the long-form and silence figures are the clean set's, so they are skipped then.

    Under a launcher (torchrun, the DeepSpeed launcher) each rank decodes its share of the
    batches on its own device; every rank holds the joined result and rank 0 alone writes it.
    """
    check_shared_workspace(workspace.root)
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
    conditioned = None
    if condition is not None:  # a bad name or a missing noise folder fails before the model
        conditioned = ConditionedAudio(utterances, condition, config.augment)
        if all(step.transform == "clean" for step in conditioned.condition.steps):
            conditioned = None  # the set as recorded: the round's own figure
        elif longform:
            logger.info("long-form and silence figures skipped under a condition")
            longform = False
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
        if timestamps:
            options = replace(options, longform="sequential")
        transcriber = Transcriber(model_dir, options)
        durations: list[float] = [0.0] * len(utterances)
        hypotheses, seconds, audio_seconds = decode_utterances(
            transcriber, utterances, batch_size, progress, timestamps, durations, conditioned
        )
        whole, silence = None, None
        if longform:
            recordings = stitch_recordings(utterances, seed=config.train.seed)
            whole = score_longform(transcriber, recordings)
            silence = on_rank_zero(lambda: silence_characters(transcriber, config.train.seed))
    # The bootstrap's own fixed seed (not train.seed): an evaluation's intervals are the same
    # whichever seed the round was trained with.
    protocol_scores, figures = score_decode(utterances, hypotheses, durations=durations)
    scores = protocol_scores.spelling
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
        timestamps=timestamps,
        condition=conditioned.condition.name if conditioned else None,
    )
    json_path = workspace.eval_json(label)
    tsv_path = workspace.eval_tsv(label)
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
        figures=figures,
        timestamps=timestamps,
    )
    record = _record(report, target, manifest.path, limit, len(manifest.utterances))
    if not is_main_process():
        return report  # every rank holds the figures; rank 0 alone writes them
    atomic_write_text(
        tsv_path, per_utterance_tsv(utterances, protocol_scores, figures.counts.durations)
    )
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
    timestamps: bool = False,
    durations: list[float] | None = None,
    load: Callable[[int], Any] | None = None,
) -> tuple[list[str], float, float]:
    """Hypotheses in manifest order, decoding time, and audio seconds. `load(row)` gives a
    row's audio where it is not the file as recorded (an evaluation condition).

    Utterances are decoded in order of duration so each batch's transcripts are of similar
    length and the decoder wastes few steps on finished rows. With `timestamps` each batch
    goes through the long-form path (the transcriber's decode.longform, sequential for this),
    which decodes by timestamps as a packed window was trained. `durations`, when given, gets
    each utterance's decoded seconds at its index (the duration buckets of a manifest without
    a duration column). Under a launcher each rank decodes its share of these batches
    (ranks.rank_batches) and every rank gets all the rows; `progress` counts this rank's.
    """
    order = sorted(range(len(utterances)), key=lambda i: utterances[i].duration or 0.0)

    def decode(indices: list[int]) -> list[tuple[str, float]]:
        seed_fallback(indices[0])  # a batch decodes alike in any rank, after any other work
        audios = [
            load(i) if load else load_audio(utterances[i].path, *utterances[i].span)
            for i in indices
        ]
        if timestamps:
            texts = [t.text for t in transcriber.transcribe_audios(audios)]
        else:
            texts = transcriber.transcribe_batch(audios)
        seconds = [len(audio) / SAMPLE_RATE for audio in audios]
        if progress is not None:
            progress(len(indices), sum(seconds))
        return list(zip(texts, seconds, strict=True))

    started = time.perf_counter()
    decoded = map_batches(order, batch_size, decode)
    rows = [decoded[i] for i in range(len(utterances))]
    if durations is not None:
        durations[:] = [seconds for _, seconds in rows]
    return [text for text, _ in rows], time.perf_counter() - started, sum(s for _, s in rows)


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

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is None:
            barrier()  # rank 0's temporary merge stays until every rank is done with it
        if self.tmp is not None:
            self.tmp.cleanup()

    def _merged_adapter(self) -> Path:
        """The same merge as `pefty merge` (base check, logit check, the round's language and
        task), into a temporary directory the evaluation removes."""
        from pefty_whisper.merge import merge_into

        assert self.target.adapter_dir is not None
        adapter_dir = self.target.adapter_dir

        def merge() -> str:  # on rank 0; the other ranks load its merge from the workspace
            self.tmp = tempfile.TemporaryDirectory(prefix="pefty-eval-", dir=self.workspace.root)
            out_dir = Path(self.tmp.name) / "merged"
            merge_into(adapter_dir, self.workspace, self.config, out_dir)
            return str(out_dir)

        return Path(on_rank_zero(merge))

    def _ct2_export(self, model_dir: Path) -> Path:
        import torch

        from pefty_whisper.export import export_ct2

        # The ct2 backend's defaults: int8 on the CPU, float16 on a GPU.
        quantization = "float16" if torch.cuda.is_available() else "int8"
        out_dir = self.workspace.export_dir_for(self.target.label, "ct2", quantization)

        def convert() -> None:  # on rank 0 alone: the other ranks wait, then load its export
            if not ModelDir(out_dir).is_ct2:
                logger.info("converting %s to CTranslate2 %s: %s", model_dir, quantization, out_dir)
                export_ct2(model_dir, out_dir, quantization=quantization)

        on_rank_zero(convert)
        return out_dir


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
        condition=report.label.condition,
        partial=report.label.first is not None,
        set_size=set_size,
        protocols=report.figures.protocols if report.figures else {},
        subsets=report.figures.subsets if report.figures else {},
        bootstrap=report.figures.bootstrap if report.figures else None,
        timestamps=report.timestamps,
    )
