"""`pefty label`: unlabelled audio -> a pseudo-labelled set (data/NAME.csv) for the next round."""

from __future__ import annotations

import time
from pathlib import Path

import click

from pefty_whisper.cli.group import load_workspace, main, workspace_options


@main.command()
@click.argument("source")
@click.option("--name", required=True, help="Set name: writes data/NAME.csv.")
@click.option(
    "--model",
    default=None,
    help="The teacher (default: the latest merged round, or its CTranslate2 export).",
)
@click.option("--force", is_flag=True, help="Label NAME again; the old set stays until done.")
@click.option("--split", default=None, help="A dataset SOURCE's split (train, test, ...).")
@click.option("--subset", default=None, help="A hub id's dataset config (FLEURS: ko_kr).")
@click.option("--audio-column", default=None, help="Default: the column typed Audio, or audio.")
@workspace_options
def label(
    source: str,
    name: str,
    model: str | None,
    force: bool,
    split: str | None,
    subset: str | None,
    audio_column: str | None,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Transcribe unlabelled audio with a round's model into a set the next round trains on.

    SOURCE is a folder of audio files of any length, one audio file, a manifest CSV (a path
    column, optional start/end seconds) or a Hugging Face dataset without text (what `prepare
    hf` reads; --split picks one of several splits). Long files are cut by the VAD at pauses
    into utterances of at most label.max_segment_s; labels that fail the label.* filters
    (repetition loops, no speech, low confidence, disagreement with label.second_pass) go to
    data/NAME.rejects.tsv with their reason; data/NAME.label.json records the teacher and the
    filters. A killed run resumes where it stopped. Under torchrun or the DeepSpeed launcher
    each rank labels every WORLD_SIZE-th file.

    \b
    Examples:
      pefty label ~/lectures --name lectures_pl
      pefty label ~/lectures --name lectures_pl -o label.second_pass=merged/round1
      pefty label ~/unlabelled_ds --split train --name ds_pl
      torchrun --nproc-per-node 4 -m pefty_whisper.cli label ~/lectures --name lectures_pl
      pefty train --round 3 --train train_KsponSpeech_03_train --train lectures_pl:0.5
    """
    from pefty_whisper.label import REASONS, DatasetPick, label_set

    workspace, config = load_workspace(workdir, config_path, overrides)
    pick = DatasetPick(split, subset, audio_column)
    with _LabelProgress() as bar:
        report = label_set(
            workspace, config, source, name, model, force, progress=bar.update, pick=pick
        )
    if report is None:  # a rank other than 0: rank 0 writes and reports
        return
    record = report.record
    teacher = record.teacher
    click.echo(f"teacher: {teacher.model} ({teacher.backend}, {teacher.weights_hash[:19]})")
    if report.resumed:
        click.echo(
            f"resumed: {report.resumed:,d} inputs were labelled by an earlier run, "
            f"{report.decoded:,d} utterances decoded now"
        )
    click.echo(
        f"{report.manifest}  {record.kept:,d} utterances  {record.kept_hours:.2f} h  "
        f"(from {record.inputs:,d} inputs, {record.audio_hours:.2f} h)"
    )
    dropped = sum(record.dropped.values())
    if dropped:
        click.echo(f"dropped {dropped:,d} of {record.utterances:,d} utterances:")
        for reason, count in sorted(record.dropped.items(), key=lambda item: -item[1]):
            click.echo(f"  {count:>7,d}  {reason}: {REASONS.get(reason, reason)}")
        click.echo(f"every dropped label, with its scores: {report.rejects}")
    else:
        click.echo(f"no label dropped of {record.utterances:,d}")
    click.echo(f"record: {report.record_path}")


class _LabelProgress:
    """A tqdm bar over inputs that shows the audio hours labelled per hour."""

    def __enter__(self) -> _LabelProgress:
        from tqdm import tqdm

        self.bar = tqdm(unit="file", desc="labelling", disable=None, dynamic_ncols=True)
        self.started, self.audio_seconds = time.perf_counter(), 0.0
        return self

    def update(self, inputs: int, audio_seconds: float) -> None:
        self.audio_seconds += audio_seconds
        elapsed = time.perf_counter() - self.started
        self.bar.update(inputs)
        self.bar.set_postfix(speed=f"{self.audio_seconds / max(elapsed, 1e-9):.1f}x")

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
