"""The final model as users run it: `pefty export`, `transcribe`, `serve`, `push`, `import-ct2`."""

from __future__ import annotations

from pathlib import Path

import click

from pefty_whisper.cli.group import load_workspace, main, workspace_options
from pefty_whisper.errors import PeftyError


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

    workspace, config = load_workspace(workdir, config_path, overrides)
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
    type=click.Choice(["text", "json", "srt", "vtt"]),
    default="text",
    show_default=True,
)
@click.option(
    "--longform",
    type=click.Choice(["auto", "sequential", "chunked"]),
    default=None,
    help="Default: decode.longform (auto: timestamps where the model has them, else VAD chunks).",
)
@click.option("--vad", type=click.Choice(["auto", "always", "never"]), help="Default: decode.vad.")
@click.option(
    "--word-timestamps",
    is_flag=True,
    help="Time every word (json: each segment's words; srt: a cue per word; vtt: a timestamp "
    "before each word). Decodes sequentially, so it needs a ct2 or torch model.",
)
@workspace_options
def transcribe(
    audio: tuple[Path, ...],
    model: str,
    backend: str | None,
    output_format: str,
    longform: str | None,
    vad: str | None,
    word_timestamps: bool,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Transcribe audio files of any length (pcm, wav, flac) with segment times.

    \b
    Examples:
      pefty transcribe call.wav --model merged/round5
      pefty transcribe lecture.wav --model exports/round5-ct2-int8 --format srt
      pefty transcribe talk.wav --model exports/round5-ct2-int8 --word-timestamps --format vtt
    """
    from pefty_whisper.inference import transcribe_paths
    from pefty_whisper.inference.formats import format_transcriptions

    if word_timestamps:
        # Words are timed on the sequential path only: asked for, it is the path.
        if longform == "chunked":
            raise click.UsageError("--word-timestamps needs sequential decoding, not chunked")
        longform = "sequential"
    workspace, config = load_workspace(
        workdir, config_path, overrides, {"decode.longform": longform, "decode.vad": vad}
    )
    report = transcribe_paths(
        workspace, config, model, audio, backend or "auto", word_timestamps=word_timestamps
    )
    if report.transcriptions:
        click.echo(format_transcriptions(report.transcriptions, output_format))
    methods = ", ".join(sorted({t.method for t in report.transcriptions})) or "-"
    click.echo(
        f"{len(report.transcriptions)} file(s), {report.audio_seconds:.1f} s of audio in "
        f"{report.seconds:.1f} s ({report.backend}, {methods}, real-time factor "
        f"{report.real_time_factor:.3f})",
        err=True,
    )
    if report.failures:
        for path, reason in report.failures:
            click.echo(f"not transcribed: {path}: {reason}", err=True)
        raise PeftyError(f"{len(report.failures)} of {len(audio)} file(s) could not be read")


@main.command()
@click.option("--model", required=True, help="merged/roundN, an exports/ directory or a hub id.")
@click.option("--host", default=None, help="Default: serve.host (127.0.0.1, loopback only).")
@click.option("--port", type=int, default=None, help="Default: serve.port (8000).")
@click.option("--backend", type=click.Choice(["torch", "ct2", "onnx"]), default=None)
@workspace_options
def serve(
    model: str,
    host: str | None,
    port: int | None,
    backend: str | None,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Serve a model over OpenAI's transcription API until Ctrl-C or SIGTERM.

    \b
    Example:
      pefty serve --model exports/round5-ct2-int8 --port 8000
      curl -F file=@call.wav http://127.0.0.1:8000/v1/audio/transcriptions
    """
    from pefty_whisper.serve import serve as serve_model

    workspace, config = load_workspace(workdir, config_path, overrides)
    serve_model(workspace, config, model, host, port, backend or "auto")


@main.command()
@click.argument("model_dir")
@click.option("--repo", required=True, help="The Hub repository to upload to: user/name.")
@click.option("--private", is_flag=True, help="Create the repository private.")
@click.option("--message", default=None, help="Commit message (default: pefty push DIR).")
@workspace_options
def push(
    model_dir: str,
    repo: str,
    private: bool,
    message: str | None,
    workdir: Path | None,
    config_path: Path | None,
    overrides: tuple[str, ...],
) -> None:
    """Upload a merged round or an export to the Hugging Face Hub, with its model card.

    \b
    The card (README.md) is rewritten first from the workspace's records,
    naming the repository in its examples. Log in first (`hf auth login`
    or HF_TOKEN).

    \b
    Examples:
      pefty push merged/round5 --repo me/whisper-small-ko-kspon
      pefty push exports/round5-ct2-int8 --repo me/whisper-small-ko-kspon-ct2 --private
    """
    from pefty_whisper.hub import push_model

    workspace, config = load_workspace(workdir, config_path, overrides)
    url = push_model(workspace, config, model_dir, repo, private=private, message=message)
    click.echo(f"{model_dir} pushed to {repo}: {url}")


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
