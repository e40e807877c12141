"""`pefty prepare kspon|folder|csv|hf`: a corpus -> manifests (data/*.csv)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from pefty_whisper.cli.group import load_workspace, main, progress_bar, workspace_options


@main.group()
def prepare() -> None:
    """Turn a corpus into manifests (data/*.csv: path,sentence,duration,id,raw[,phonetic]).

    \b
    pefty prepare kspon --root /data/KsponSpeech    # KsponSpeech, all rounds
    pefty prepare folder ~/my_audio --name mine     # audio + .txt transcripts
    pefty prepare csv my.csv --name mine --split    # any CSV with path + text
    """


@prepare.command("kspon")
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="KsponSpeech root: KsponSpeech_01..05/, KsponSpeech_eval/ and scripts/*.trn.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: data/ in the workspace).",
)
@click.option(
    "--scripts",
    "scripts_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Folder of train.trn, dev.trn, eval_clean.trn, eval_other.trn (default: ROOT/scripts). "
    "Without .trn files the per-utterance CP949 .txt transcripts are read.",
)
@click.option(
    "--normalize",
    type=click.Choice(["spelling", "phonetic", "raw"]),
    default=None,
    help="Transcript mode (default: data.normalize, 'spelling': the written form, tags removed).",
)
@workspace_options
def prepare_kspon_command(
    root: Path,
    out: Path | None,
    scripts_dir: Path | None,
    normalize: str | None,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Write one train/test CSV pair per KsponSpeech part, plus dev and eval sets.

    \b
    Writes data/train_KsponSpeech_01_train.csv ... _05_test.csv, dev.csv,
    eval_clean.csv, eval_other.csv and prepare_rejects.tsv (skipped lines and why).
    Re-running gives identical files.

    \b
    Example:
      pefty prepare kspon --root /data/KsponSpeech -o data.test_ratio=0.1
    """
    from pefty_whisper.data.prepare import prepare_kspon

    workspace, config = load_workspace(
        workdir, config_path, overrides, {"data.normalize": normalize}
    )
    data = config.data
    report = prepare_kspon(
        root, out or workspace.data_dir, data, scripts_dir=scripts_dir, track=progress_bar
    )
    _echo_prepare_report(report, data.max_duration_s)


def generic_prepare_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `prepare folder` and `prepare csv`."""
    options = [
        click.option("--name", required=True, help="Manifest name: writes data/NAME.csv."),
        click.option("--split", is_flag=True, help="Write NAME_train.csv and NAME_test.csv."),
        click.option(
            "--normalize",
            type=click.Choice(["spelling", "phonetic", "raw"]),
            default="raw",
            show_default=True,
            help="Transcript mode: 'spelling' strips KsponSpeech notation, 'raw' tidies spaces.",
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Output directory (default: data/ in the workspace).",
        ),
        workspace_options,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@prepare.command("folder")
@click.argument("src", type=click.Path(file_okay=False, exists=True, path_type=Path))
@generic_prepare_options
def prepare_folder_command(src: Path, **options: Any) -> None:
    """Any folder of audio (pcm/wav/flac) with a .txt beside each file, or .trn scripts.

    \b
    Example:
      pefty prepare folder ~/recordings --name clinic --split
    """
    from pefty_whisper.data.prepare import prepare_folder

    _run_generic_prepare(prepare_folder, src, **options)


@prepare.command("csv")
@click.argument("src", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@generic_prepare_options
def prepare_csv_command(src: Path, **options: Any) -> None:
    """A CSV with an audio column (path/audio/file) and a text column (sentence/text/transcript).

    Relative audio paths are taken from the CSV's folder. Every file is checked and its
    duration recorded.

    \b
    Example:
      pefty prepare csv zeroth/train.csv --name zeroth --split
    """
    from pefty_whisper.data.prepare import prepare_csv

    _run_generic_prepare(prepare_csv, src, **options)


@prepare.command("hf")
@click.argument("source")
@click.option("--name", required=True, help="Manifest name: writes data/NAME.csv.")
@click.option("--split", "dataset_split", default=None, help="Dataset split (train, test, ...).")
@click.option(
    "--subset", "config_name", default=None, help="Dataset config of a hub id (FLEURS: ko_kr)."
)
@click.option("--audio-column", default=None, help="Default: the column typed Audio, or audio.")
@click.option("--text-column", default=None, help="Default: sentence/text/transcription.")
@click.option("--holdout", is_flag=True, help="Also split into NAME_train.csv and NAME_test.csv.")
@click.option(
    "--normalize",
    type=click.Choice(["spelling", "phonetic", "raw"]),
    default="raw",
    show_default=True,
    help="Transcript mode: 'spelling' only for corpora written in ETRI notation.",
)
@workspace_options
def prepare_hf_command(
    source: str,
    name: str,
    dataset_split: str | None,
    config_name: str | None,
    audio_column: str | None,
    text_column: str | None,
    holdout: bool,
    normalize: str,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """A Hugging Face datasets corpus: a save_to_disk folder, an audio folder, or a hub id.

    Audio stored in the dataset as bytes is written to audio/NAME/ in the
    workspace; audio files it points to are referenced where they are. Decoded
    with soundfile (no torchcodec needed). A hub id works only online.

    \b
    Examples:
      pefty prepare hf ~/fleurs_ko_test --name fleurs_ko
      pefty prepare hf google/fleurs --subset ko_kr --split test --name fleurs_ko
    """
    from pefty_whisper.data.prepare import prepare_hf

    workspace, config = load_workspace(workdir, config_path, overrides)
    report = prepare_hf(
        source,
        workspace.data_dir,
        name,
        config.data,
        normalize,
        audio_dir=workspace.audio_dir(name),
        dataset_split=dataset_split,
        config_name=config_name,
        audio_column=audio_column,
        text_column=text_column,
        holdout=holdout,
        track=progress_bar,
    )
    _echo_prepare_report(report, config.data.max_duration_s)


def _run_generic_prepare(
    prepare_function: Callable[..., Any],
    src: Path,
    name: str,
    split: bool,
    normalize: str,
    out: Path | None,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:

    workspace, config = load_workspace(workdir, config_path, overrides)
    report = prepare_function(
        src, out or workspace.data_dir, name, config.data, normalize, split, track=progress_bar
    )
    _echo_prepare_report(report, config.data.max_duration_s)


def _echo_prepare_report(report: Any, max_duration_s: float) -> None:
    for manifest in report.manifests.values():
        click.echo(
            f"{manifest.path}  {len(manifest.utterances):>7,d} utterances  {manifest.hours:7.2f} h"
        )
    if report.rejects:
        reasons = ", ".join(f"{n} {r}" for r, n in report.reject_counts().most_common())
        click.echo(f"skipped {len(report.rejects):,d} lines: {reasons}")
        click.echo(f"every skipped line, with file and line number: {report.rejects_path}")
    else:
        click.echo("no lines skipped")
    if report.duplicates:
        click.echo(
            f"{report.duplicates:,d} audio files listed more than once: kept once "
            f"(first: {report.first_duplicate})"
        )
    if report.outside_root:
        click.echo(
            f"{report.outside_root:,d} audio paths lie outside the data root (absolute or ..), "
            f"e.g. {report.first_outside}"
        )
    for source in report.fully_rejected:
        click.echo(f"warning: every line of {source} was rejected (see {report.rejects_path})")
    if report.odd_byte_files:
        click.echo(
            f"{report.odd_byte_files:,d} pcm files had an odd byte count (last byte dropped)"
        )
    if report.over_max_duration:
        click.echo(
            f"{report.over_max_duration:,d} utterances are longer than {max_duration_s:g} s: "
            "kept in the manifests, dropped (and counted) at training time"
        )
