"""`pefty label`: a round's model transcribes unlabelled audio into a prepared set.

Each input is cut by the VAD (faster-whisper's Silero, inference/longform.py) into utterances
of at most label.max_segment_s at pauses; the utterances of many inputs are decoded together
in batches by the Transcriber (CTranslate2's or transformers' batched generate, as
faster-whisper's BatchedInferencePipeline batches VAD chunks), each with its confidence. The
set is written like `pefty prepare`'s (data/NAME.csv; rows into a long file carry start/end),
with the dropped labels in data/NAME.rejects.tsv and the labelling's record in
data/NAME.label.json. The progress is kept aside (label/progress.py) until the set is written,
so a killed run resumes and an existing set is replaced only once the new one is complete.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np

from pefty_whisper import ranks
from pefty_whisper.config import Config, LabelSection
from pefty_whisper.data.audio import SAMPLE_RATE, load_audio
from pefty_whisper.data.prepare import check_set_name
from pefty_whisper.errors import ConfigError, DataError, ModelError, PeftyError
from pefty_whisper.files import weights_hash
from pefty_whisper.inference.longform import chunk_spans, speech_regions
from pefty_whisper.label.filters import Decoded
from pefty_whisper.label.inputs import DatasetPick, LabelInput, label_inputs
from pefty_whisper.label.output import write_labelled_set
from pefty_whisper.label.progress import Progress, ProgressLog, check_settings
from pefty_whisper.whisper.model_dir import ModelDir
from pefty_whisper.workspace import ExportRecord, LabelRecord, MergeRecord, TeacherRecord, Workspace

__all__ = ["LabelReport", "label_set", "teacher_model"]

logger = logging.getLogger(__name__)

SECOND_BEAM_SIZE = 5  # label.second_pass=beam: the teacher again, with a beam search
# Under a launcher a rank that finishes its shard early waits for the slowest at the join:
# labelling a shard takes hours, far beyond the process group's default timeout.
JOIN_TIMEOUT = timedelta(days=2)


@dataclass(frozen=True)
class LabelReport:
    """What one `pefty label` wrote, for the CLI's summary."""

    manifest: Path
    rejects: Path
    record_path: Path
    record: LabelRecord
    resumed: int  # inputs a killed run had finished already
    decoded: int  # utterances this run decoded


@ranks.ends_process_group
def label_set(
    workspace: Workspace,
    config: Config,
    source: str,
    name: str,
    model: str | None = None,
    force: bool = False,
    progress: Callable[[int, float], None] | None = None,
    pick: DatasetPick | None = None,
) -> LabelReport | None:
    """Label SOURCE with a round's model into data/NAME.csv; None on ranks other than 0,
    which label their shard and leave the writing to rank 0. `progress(inputs, seconds)`
    gets every finished input and its audio seconds; `pick` chooses from a dataset SOURCE."""
    check_set_name(name)
    pick = pick or DatasetPick()
    started = time.perf_counter()
    manifest = workspace.manifest_path(name)
    work_dir = workspace.label_work_dir(name)
    if manifest.exists() and not force:
        resume = " (an unfinished relabelling is waiting in it)" if work_dir.is_dir() else ""
        raise PeftyError(
            f"{manifest} already exists: pass --force to label '{name}' again{resume}; the old "
            "set stays until the new one is written"
        )
    if ranks.world_size() > 1:
        ranks.init_process_group(timeout=JOIN_TIMEOUT)  # each rank on its own GPU (LOCAL_RANK)
    ranks.check_shared_workspace(workspace.root)
    teacher = teacher_model(workspace, config, model)
    # A dataset that holds its audio as bytes is written out by rank 0 alone; every rank then
    # gets rank 0's list (or its error).
    inputs = ranks.on_rank_zero(lambda: label_inputs(source, workspace.audio_dir(name), pick))
    second_hash = _second_pass_hash(workspace, config.label.second_pass)
    # The split is part of the source's identity: a resumed run must read the same rows.
    source = f"{source}{pick.describe()}"
    settings = {
        "source": source,
        "inputs": len(inputs),
        "teacher": teacher.model,
        "teacher_hash": teacher.weights_hash,
        "second_pass": config.label.second_pass,
        "second_pass_hash": second_hash,
        "max_segment_s": config.label.max_segment_s,
        "min_segment_s": config.label.min_segment_s,
        "join_pause_s": config.label.join_pause_s,
        "language": config.model.language,
    }
    ranks.on_rank_zero(lambda: _start_or_resume(work_dir, settings, name, force))
    done = Progress(work_dir)
    resumed = len(done.done)
    shard = range(ranks.rank(), len(inputs), ranks.world_size())  # input i: rank i % world
    mine = [i for i in shard if i not in done.done]
    decoded = 0
    if mine:
        labeller = _Labeller(workspace, config, teacher, work_dir, ranks.rank(), done)
        try:
            decoded = labeller.run([(i, inputs[i]) for i in mine], progress)
        finally:
            labeller.log.close()
    ranks.barrier()  # every shard is in its progress file
    if not ranks.is_main_process():
        return None
    record = write_labelled_set(
        workspace, config, name, source, inputs, teacher, second_hash, ranks.world_size(), started
    )
    return LabelReport(
        manifest=manifest,
        rejects=workspace.label_rejects(name),
        record_path=workspace.label_record_of(manifest),
        record=record,
        resumed=resumed,
        decoded=decoded,
    )


def _start_or_resume(work_dir: Path, settings: dict, name: str, force: bool) -> None:
    try:
        resuming = check_settings(work_dir, settings, name)
    except PeftyError:
        if not force:
            raise
        logger.warning("%s: an unfinished labelling with other settings: started over", work_dir)
        shutil.rmtree(work_dir)
        resuming = check_settings(work_dir, settings, name)
    if resuming:
        logger.info("%s: resuming the unfinished labelling of '%s'", work_dir, name)


def teacher_model(workspace: Workspace, config: Config, model: str | None) -> TeacherRecord:
    """--model resolved like evaluate's: by default the latest merged round, or its
    CTranslate2 export where one exists (and ctranslate2 is installed): the faster decoder."""
    import importlib.util

    if model is None:
        latest = workspace.latest_merged_round()
        if latest is None:
            raise ConfigError(
                "no merged round to label with: run `pefty merge` (or pass --model DIR)"
            )
        export = _ct2_export_of(workspace, latest)
        has_ct2 = importlib.util.find_spec("ctranslate2") is not None
        model = str(export if export is not None and has_ct2 else workspace.merged_dir(latest))
    found = ModelDir.resolve(model, workspace.root)
    if found.is_adapter:
        raise ModelError(f"{found.path} holds a LoRA adapter, not a model: `pefty merge` it first")
    if found.backend == "onnx":
        raise ModelError(
            f"{found.path} is an ONNX export: label with its round's merged model or CTranslate2 "
            "export (--model merged/roundN)"
        )
    merged = MergeRecord.read(found.path)
    export = ExportRecord.read(found.path)
    round_index = merged.round if merged else (export.source_round if export else None)
    return TeacherRecord(
        model=str(found.path), weights_hash=weights_hash(found.path), backend=found.backend,
        round=round_index,
    )  # fmt: skip


def _ct2_export_of(workspace: Workspace, round_index: int) -> Path | None:
    for directory in sorted((workspace.root / "exports").glob("*")):
        record = ExportRecord.read(directory) if directory.is_dir() else None
        if record is not None and record.format == "ct2" and record.source_round == round_index:
            return directory
    return None


def _second_pass_hash(workspace: Workspace, second_pass: str) -> str | None:
    if second_pass in ("none", "beam"):
        return None
    found = ModelDir.resolve(second_pass, workspace.root)
    if found.is_adapter:
        raise ConfigError(
            f"label.second_pass={second_pass}: an adapter; give its merged model (merged/roundN)"
        )
    return weights_hash(found.path)


class _Labeller:
    """One rank's decoding: inputs cut by the VAD, utterances batched across inputs, every
    batch appended to the progress file as it finishes."""

    def __init__(
        self,
        workspace: Workspace,
        config: Config,
        teacher: TeacherRecord,
        work_dir: Path,
        rank: int,
        done: Progress,
    ) -> None:
        from pefty_whisper.inference import Transcriber, TranscriberOptions

        self.section: LabelSection = config.label
        options = replace(TranscriberOptions.from_config(config), longform="chunked")
        self.teacher = Transcriber(Path(teacher.model), options)
        self.second = None
        second = self.section.second_pass
        if second == "beam":
            self.second = Transcriber(
                Path(teacher.model), replace(options, beam_size=SECOND_BEAM_SIZE)
            )
        elif second != "none":
            self.second = Transcriber(ModelDir.resolve(second, workspace.root).path, options)
        self.batch_size = config.decode.batch_size
        self.done = done
        self.log = ProgressLog(work_dir, rank)

    def run(
        self,
        inputs: Sequence[tuple[int, LabelInput]],
        progress: Callable[[int, float], None] | None,
    ) -> int:
        pending: list[tuple[Decoded, np.ndarray]] = []
        waiting: dict[int, tuple[int, int, float]] = {}  # input -> (left, count, seconds)
        decoded = 0
        for index, item in inputs:
            cut, seconds = self._cut(index, item)
            todo = [
                (row, piece) for row, piece in cut if (index, row.segment) not in self.done.rows
            ]
            self.log.rows(row for row, _ in todo if row.reason)  # dropped before decoding
            todo = [(row, piece) for row, piece in todo if not row.reason]
            waiting[index] = (len(todo), len(cut), seconds)
            pending += todo
            while len(pending) >= self.batch_size:
                decoded += self._decode(pending[: self.batch_size], waiting, progress)
                pending = pending[self.batch_size :]
            self._finish(waiting, progress)
        if pending:
            decoded += self._decode(pending, waiting, progress)
        self._finish(waiting, progress)
        return decoded

    def _cut(self, index: int, item: LabelInput) -> tuple[list[tuple[Decoded, np.ndarray]], float]:
        """The input's utterances with their samples (those the VAD drops carry their reason),
        and its seconds of audio."""
        empty = np.zeros(0, dtype=np.float32)
        try:
            audio = load_audio(item.path, item.start, item.end)
        except DataError as exc:
            logger.warning("%s: %s", item.where, exc)
            return [(Decoded(index, 0, item.start, item.end, reason="unreadable"), empty)], 0.0
        offset = item.start or 0.0
        duration = len(audio) / SAMPLE_RATE
        section = self.section
        regions = speech_regions(audio, section.max_segment_s)
        if not regions:
            row = Decoded(index, 0, item.start, item.end, duration, reason="no_speech_vad")
            return [(row, empty)], duration
        if duration <= section.max_segment_s:  # the whole input, as it is
            return [(Decoded(index, 0, item.start, item.end, round(duration, 3)), audio)], duration
        cut = []
        for k, (start, end) in enumerate(
            chunk_spans(regions, section.max_segment_s, section.join_pause_s)
        ):
            first, last = round(start * SAMPLE_RATE), min(round(end * SAMPLE_RATE), len(audio))
            seconds = round((last - first) / SAMPLE_RATE, 3)
            times = (round(offset + first / SAMPLE_RATE, 3), round(offset + last / SAMPLE_RATE, 3))
            reason = "" if seconds >= section.min_segment_s else "too_short"
            cut.append((Decoded(index, k, *times, seconds, reason=reason), audio[first:last]))
        return cut, duration

    def _decode(
        self,
        batch: list[tuple[Decoded, np.ndarray]],
        waiting: dict[int, tuple[int, int, float]],
        progress: Callable[[int, float], None] | None,
    ) -> int:
        pieces = [piece for _, piece in batch]
        scored = self.teacher.transcribe_scored(pieces)
        second = self.second.transcribe_batch(pieces) if self.second is not None else None
        rows = []
        for k, ((row, _), found) in enumerate(zip(batch, scored, strict=True)):
            rows.append(
                replace(
                    row,
                    text=found.text,
                    avg_logprob=round(found.avg_logprob, 4),
                    no_speech_prob=None
                    if found.no_speech_prob is None
                    else round(found.no_speech_prob, 4),
                    second=second[k] if second is not None else None,
                )
            )
            left, count, seconds = waiting[row.input]
            waiting[row.input] = (left - 1, count, seconds)
        self.log.rows(rows)
        self._finish(waiting, progress)
        return len(rows)

    def _finish(
        self,
        waiting: dict[int, tuple[int, int, float]],
        progress: Callable[[int, float], None] | None,
    ) -> None:
        """Mark the inputs whose every utterance is written, and flush: what a kill keeps."""
        for index, (left, count, seconds) in list(waiting.items()):
            if left == 0:
                self.log.done(index, count)
                del waiting[index]
                if progress is not None:
                    progress(1, seconds)
        self.log.flush()
