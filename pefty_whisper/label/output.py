"""The end of a labelling: every rank's progress joined in the source's order, the filters
applied, and the set written like `pefty prepare`'s (manifest, rejects, record), the record
last, then the progress removed."""

from __future__ import annotations

import csv
import io
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone

from pefty_whisper.config import Config
from pefty_whisper.data.manifest import write_manifest
from pefty_whisper.data.table import Utterance
from pefty_whisper.errors import PeftyError
from pefty_whisper.files import atomic_write_text, package_versions
from pefty_whisper.label.filters import Decoded, drop_reason, filter_settings
from pefty_whisper.label.inputs import LabelInput
from pefty_whisper.label.progress import Progress
from pefty_whisper.workspace import LabelRecord, TeacherRecord, Workspace

__all__ = ["write_labelled_set"]

logger = logging.getLogger(__name__)

REJECT_COLUMNS = (
    "path",
    "start",
    "end",
    "id",
    "reason",
    "text",
    "avg_logprob",
    "no_speech_prob",
    "compression_ratio",
    "disagreement_cer",
    "second_pass",
)


def write_labelled_set(
    workspace: Workspace,
    config: Config,
    name: str,
    source: str,
    inputs: Sequence[LabelInput],
    teacher: TeacherRecord,
    second_hash: str | None,
    world: int,
    started: float,
) -> LabelRecord:
    """Join, filter and write data/NAME.csv, data/NAME.rejects.tsv and data/NAME.label.json."""
    work_dir = workspace.label_work_dir(name)
    progress = Progress(work_dir)
    missing = [i for i in range(len(inputs)) if i not in progress.done]
    if missing:
        raise PeftyError(
            f"{inputs[missing[0]].where}: not labelled ({len(missing)} inputs missing, e.g. "
            f"rank {missing[0] % world}'s): rerun `pefty label` to finish them"
        )
    kept: list[Utterance] = []
    rejects: list[tuple[Decoded, str, str]] = []
    dropped: Counter[str] = Counter()
    audio_s = kept_s = 0.0
    for index, item in enumerate(inputs):
        rows = progress.rows_of(index)
        audio_s += sum(row.seconds for row in rows)
        cut = len(rows) > 1 or (rows and rows[0].start != item.start)
        for row in rows:
            utterance_id = f"{item.name}-{row.segment:03d}" if cut else item.name
            reason = drop_reason(row, config.label)
            if reason:
                dropped[reason] += 1
                rejects.append((row, utterance_id, reason))
                continue
            kept_s += row.seconds
            kept.append(
                Utterance(
                    path=item.path,
                    sentence=row.text.strip(),
                    duration=round(row.seconds, 3),
                    id=utterance_id,
                    start=row.start,
                    end=row.end,
                )
            )
    if not kept:
        raise PeftyError(
            f"every label of '{name}' was dropped ({_counts(dropped)}); loosen the label.* "
            f"thresholds (-o label.min_avg_logprob=null ...) and rerun: the labels are kept in "
            f"{work_dir}, nothing is decoded again"
        )
    manifest = workspace.manifest_path(name)
    atomic_write_text(workspace.label_rejects(name), _rejects_tsv(inputs, rejects))
    write_manifest(manifest, kept)
    record = LabelRecord(
        name=name,
        source=str(source),
        teacher=teacher,
        second_pass=config.label.second_pass,
        second_pass_hash=second_hash,
        filters=filter_settings(config.label),
        inputs=len(inputs),
        utterances=len(kept) + len(rejects),
        kept=len(kept),
        dropped=dict(sorted(dropped.items())),
        audio_hours=round(audio_s / 3600, 4),
        kept_hours=round(kept_s / 3600, 4),
        world_size=world,
        seconds=round(time.perf_counter() - started, 1),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=package_versions("torch", "transformers", "ctranslate2", "faster-whisper"),
    )
    record.write(workspace.label_record_of(manifest))  # last: the set is complete
    shutil.rmtree(work_dir, ignore_errors=True)
    logger.info("%s: %d labels kept, %d dropped (%s)", manifest, len(kept), len(rejects),
                _counts(dropped))  # fmt: skip
    return record


def _counts(dropped: Counter[str]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in dropped.most_common()) or "none"


def _rejects_tsv(inputs: Sequence[LabelInput], rejects: list[tuple[Decoded, str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
    writer.writerow(REJECT_COLUMNS)
    for row, utterance_id, reason in rejects:
        cer = row.disagreement
        writer.writerow(
            [
                inputs[row.input].path,
                _number(row.start),
                _number(row.end),
                utterance_id,
                reason,
                row.text,
                _number(row.avg_logprob),
                _number(row.no_speech_prob),
                f"{row.compression_ratio:.2f}",
                _number(cer),
                row.second or "",
            ]
        )
    return buffer.getvalue()


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
