"""Benchmark the deployment formats: real-time factor, peak memory and CER of one merged Whisper.

Backends, each timed in a fresh Python process so its peak memory (RSS) is its own:
  torch-fp32   the merged transformers checkpoint, PyTorch float32
  ct2-int8     `pefty export --format ct2 --quantization int8` (CTranslate2, int8 on the CPU)
  onnx-fp32    `pefty export --format onnx` (onnxruntime, greedy loop with the KV cache)
  onnx-int8    `pefty export --format onnx --quantization int8` (dynamic int8 MatMuls)

Every backend decodes the same utterances through `Transcriber` (same features, prompt, token
suppression and length limit), after one warm-up batch. The real-time factor is decode seconds /
audio seconds; "encoder" and "decoder" split the decode time; CER (spaces removed) is scored
against the CSV's `sentence` column with `metrics.score_corpus`.

Examples:
    python scripts/bench_export.py --csv data/eval_clean.csv               # offline whisper-base
    python scripts/bench_export.py --model merged/round5 --csv data/eval_clean.csv --limit 50
    python scripts/bench_export.py --audio-dir recordings/ --backends torch-fp32,ct2-int8
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import fmt, machine_info  # noqa: E402
from _common import markdown_table as common_table  # noqa: E402

from pefty_whisper.data.audio import AUDIO_SUFFIXES, SAMPLE_RATE, load_audio  # noqa: E402
from pefty_whisper.data.manifest import read_manifest  # noqa: E402
from pefty_whisper.errors import PeftyError  # noqa: E402
from pefty_whisper.metrics import score_corpus  # noqa: E402

BACKENDS = ("torch-fp32", "ct2-int8", "onnx-fp32", "onnx-int8")
# ru_maxrss is in kilobytes on Linux (bytes on macOS).
RSS_UNIT = 1 if sys.platform == "darwin" else 1024
MB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# The worker: one backend, one process
# --------------------------------------------------------------------------------------------


def peak_rss_mb() -> float:
    """This process's peak resident memory.

    On Linux, VmHWM: ru_maxrss survives exec, so a worker started by a driver that held a
    model would report the driver's peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * RSS_UNIT / MB


def run_worker(spec_path: Path) -> None:
    """Load one model, warm up, transcribe every file; write the figures as JSON."""
    from pefty_whisper.inference import Transcriber, TranscriberOptions

    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    audios = [load_audio(p) for p in spec["paths"]]
    rss_before_load = peak_rss_mb()
    started = time.perf_counter()
    options = TranscriberOptions(
        batch_size=spec["batch_size"],
        max_new_tokens=spec["max_new_tokens"],
        device="cpu",
        compute_type=spec["compute_type"],
        num_threads=spec["threads"],
    )
    transcriber = Transcriber(Path(spec["model_dir"]), options)
    load_s = time.perf_counter() - started
    rss_after_load = peak_rss_mb()
    transcriber.transcribe_batch(audios[: spec["batch_size"]])  # warm-up: allocator, kernels
    transcriber.timings.reset()
    started = time.perf_counter()
    tokens = transcriber.transcribe_tokens(audios)
    decode_s = time.perf_counter() - started
    hypotheses = [transcriber.detokenize(t) for t in tokens]
    result = {
        "load_s": load_s,
        "decode_s": decode_s,
        "encoder_s": transcriber.timings.encoder_s,
        "decoder_s": transcriber.timings.decoder_s,
        "features_s": transcriber.timings.features_s,
        "rss_before_load_mb": rss_before_load,
        "rss_after_load_mb": rss_after_load,
        "peak_rss_mb": peak_rss_mb(),
        "generated_tokens": sum(len(t) + 1 for t in tokens),  # + end-of-text
        "hypotheses": hypotheses,
    }
    Path(spec["result"]).write_text(json.dumps(result, ensure_ascii=False), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


def read_inputs(csv_path: Path | None, audio_dir: Path | None, limit: int) -> tuple[list, list]:
    """(paths, references); references are None for a plain folder of audio."""
    if csv_path is not None:
        utterances = read_manifest(csv_path).utterances[:limit]
        return [u.path for u in utterances], [u.sentence for u in utterances]
    if audio_dir is None:
        raise click.UsageError("pass --csv or --audio-dir")
    paths = sorted(str(p) for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    return paths[:limit], [None] * min(limit, len(paths))


def offline_base(work: Path) -> Path:
    """The offline whisper-base as a transformers checkpoint (what `pefty demo` starts from)."""
    from pefty_whisper.demo.weights import assemble_offline_whisper_base
    from pefty_whisper.export.import_ct2 import import_ct2

    out = work / "whisper-base"
    if not (out / "config.json").is_file():
        ct2_dir = assemble_offline_whisper_base(work / "whisper-base-ct2")
        import_ct2(ct2_dir, out)
    return out


def make_exports(
    model: Path, work: Path, backends: list[str], probe: list, max_new_tokens: int
) -> dict[str, Any]:
    """Export the model once per format (reused on a rerun with the same --work)."""
    from pefty_whisper.export import export_ct2, export_onnx
    from pefty_whisper.inference import TranscriberOptions
    from pefty_whisper.workspace import ExportRecord

    dirs: dict[str, Any] = {"torch-fp32": {"dir": str(model)}}
    options = TranscriberOptions(max_new_tokens=max_new_tokens)
    check = {"probe_audio": probe, "probe_options": options}
    jobs = {
        "ct2-int8": lambda out: export_ct2(model, out, "int8", **check),
        "onnx-fp32": lambda out: export_onnx(model, out, **check),
        "onnx-int8": lambda out: export_onnx(model, out, quantize_int8=True, **check),
    }
    for name in backends:
        if name not in jobs:
            continue
        out = work / name
        found = ExportRecord.read(out)
        if found is not None:
            record = found.to_dict()
            click.echo(f"reusing {out}")
        else:
            click.echo(f"exporting {name} -> {out}")
            jobs[name](out)
            record = ExportRecord.read(out).to_dict()
        dirs[name] = {"dir": str(out), "export_seconds": record["seconds"], "export": record}
    return dirs


def run_backend(name: str, model_dir: str, paths: list[str], settings: dict, work: Path) -> dict:
    spec = {
        "model_dir": model_dir,
        "paths": paths,
        "compute_type": "int8" if name == "ct2-int8" else "auto",
        "result": str(work / f"{name}.result.json"),
        **settings,
    }
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        tail = "\n".join(completed.stderr.strip().splitlines()[-15:])
        raise click.ClickException(f"{name} failed (exit {completed.returncode}):\n{tail}")
    result = json.loads(Path(spec["result"]).read_text(encoding="utf-8"))
    result["process_s"] = time.perf_counter() - started
    return result


def summarize(name: str, result: dict, audio_s: float, references: list) -> dict[str, Any]:
    row = {
        "backend": name,
        "rtf": result["decode_s"] / audio_s,
        "decode_s": result["decode_s"],
        "encoder_s": result["encoder_s"],
        "decoder_s": result["decoder_s"],
        "features_s": result["features_s"],
        # Zero-shot models loop until the length limit, so compare decoders per token too.
        "decoder_ms_per_token": 1000 * result["decoder_s"] / result["generated_tokens"],
        "generated_tokens": result["generated_tokens"],
        "load_s": result["load_s"],
        "peak_rss_mb": result["peak_rss_mb"],
        "model_rss_mb": result["rss_after_load_mb"] - result["rss_before_load_mb"],
        "cer": None,
        "cer_with_spaces": None,
        "wer": None,
        "hypotheses": result["hypotheses"],
    }
    if all(r is not None for r in references):
        scores = score_corpus(references, result["hypotheses"])
        row.update(cer=scores.cer, cer_with_spaces=scores.cer_with_spaces, wer=scores.wer)
    return row


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = [
        "backend", "RTF", "decode s", "encoder s", "decoder s", "tokens", "decoder ms/token",
        "load s", "peak RSS MB", "RSS growth at load MB", "CER %", "WER %",
    ]  # fmt: skip
    cells = [
        [
            r["backend"],
            fmt(r["rtf"], 3),
            fmt(r["decode_s"], 1),
            fmt(r["encoder_s"], 1),
            fmt(r["decoder_s"], 1),
            r["generated_tokens"],
            fmt(r["decoder_ms_per_token"], 1),
            fmt(r["load_s"], 1),
            fmt(r["peak_rss_mb"], 0),
            fmt(r["model_rss_mb"], 0),
            fmt(r["cer"]),
            fmt(r["wer"]),
        ]  # fmt: skip
        for r in rows
    ]
    return common_table(header, cells)


@click.command(epilog="Example: python scripts/bench_export.py --csv data/eval_clean.csv")
@click.option(
    "--model",
    type=click.Path(path_type=Path, file_okay=False),
    help="Merged transformers checkpoint (default: the offline whisper-base, imported).",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Manifest with `path` and `sentence` columns (e.g. data/eval_clean.csv).",
)
@click.option(
    "--audio-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Or a folder of audio files (no references: no CER).",
)
@click.option(
    "--backends",
    default=",".join(BACKENDS),
    show_default=True,
    help="Comma-separated subset of " + ", ".join(BACKENDS) + ".",
)
@click.option("--limit", type=int, default=20, show_default=True, help="Utterances to decode.")
@click.option("--batch-size", type=int, default=8, show_default=True)
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--threads", type=int, default=0, show_default=True, help="0: library default.")
@click.option(
    "--work",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where exports and worker files go (default: a temporary directory); reused if present.",
)
@click.option(
    "--out",
    "out_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("bench/export.json"),
    show_default=True,
)
@click.option("--worker", type=click.Path(path_type=Path), hidden=True)
def main(
    model: Path | None,
    csv_path: Path | None,
    audio_dir: Path | None,
    backends: str,
    limit: int,
    batch_size: int,
    max_new_tokens: int,
    threads: int,
    work: Path | None,
    out_path: Path,
    worker: Path | None,
) -> None:
    """Real-time factor, peak memory and CER of torch, CTranslate2 and ONNX on one model."""
    if worker is not None:
        run_worker(worker)
        return
    if (csv_path is None) == (audio_dir is None):
        raise click.UsageError("pass exactly one of --csv and --audio-dir")
    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in BACKENDS]
    if unknown:
        raise click.UsageError(f"unknown backend {unknown[0]!r}: use {', '.join(BACKENDS)}")
    try:
        paths, references = read_inputs(csv_path, audio_dir, limit)
        if not paths:
            raise click.UsageError("no audio to decode")
        temporary = None
        if work is None:
            temporary = tempfile.TemporaryDirectory(prefix="bench_export_")
            work = Path(temporary.name)
        work.mkdir(parents=True, exist_ok=True)
        model = model or offline_base(work)
        audios = [load_audio(p) for p in paths]
        audio_s = sum(len(a) for a in audios) / SAMPLE_RATE
        click.echo(f"{len(paths)} utterances, {audio_s:.1f} s of audio; model {model}")
        exports = make_exports(model, work, chosen, audios[:3], max_new_tokens)
        settings = {"batch_size": batch_size, "max_new_tokens": max_new_tokens, "threads": threads}
        rows = []
        for name in chosen:
            click.echo(f"decoding with {name} ...")
            result = run_backend(name, exports[name]["dir"], paths, settings, work)
            rows.append(summarize(name, result, audio_s, references))
    except PeftyError as exc:
        raise click.ClickException(str(exc)) from exc
    table = markdown_table(rows)
    click.echo("\n" + table)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "model": str(model),
        "inputs": str(csv_path or audio_dir),
        "utterances": len(paths),
        "audio_seconds": audio_s,
        "settings": settings,
        "machine": machine_info("ctranslate2", "onnxruntime", "onnx", "faster-whisper"),
        "exports": {
            name: {k: v for k, v in info.items() if k != "export"} | _parity(info)
            for name, info in exports.items()
        },
        "results": rows,
        "references": references,
        "table": table,
    }
    out_path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    click.echo(f"\nwritten to {out_path}")
    if temporary is not None:
        temporary.cleanup()


def _parity(info: dict[str, Any]) -> dict[str, Any]:
    record = info.get("export")
    if not record:
        return {}
    return {"probe": record["probe"], "parity": record["parity"]}


if __name__ == "__main__":
    main()
