"""Benchmark `pefty evaluate`'s decoding: torch vs CTranslate2 on whisper-base, and where time goes.

Decodes the sample corpus's eval set with each backend through the same `decode_utterances` path
the command uses, and reports utterances/s, real-time factor, CER, and the split between encoder
and decoder time, at Whisper's 30 s context and at `model.context: auto` (each batch padded to
its longest utterance, see pefty_whisper/context.py). The first run is the baseline. Run it on
a quiet machine; it is a measurement, not a test.

    python scripts/bench_eval.py                     # offline whisper-base, sample eval_clean
    python scripts/bench_eval.py --model demo/merged/round2 --csv demo/data/eval_clean.csv
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import machine_info, ratio  # noqa: E402
from _common import markdown_table as common_table  # noqa: E402

from pefty_whisper.data.manifest import read_manifest  # noqa: E402
from pefty_whisper.data.prepare import prepare_kspon  # noqa: E402
from pefty_whisper.demo.base import ensure_offline_base  # noqa: E402
from pefty_whisper.demo.pipeline import ensure_sample_corpus  # noqa: E402
from pefty_whisper.evaluate.run import decode_utterances  # noqa: E402
from pefty_whisper.inference import Transcriber, TranscriberOptions  # noqa: E402
from pefty_whisper.metrics import score_corpus  # noqa: E402
from pefty_whisper.whisper.model_dir import ModelDir  # noqa: E402

BATCH_SIZE = 8
# (label, backend, ct2 quantization, context); the first is the baseline.
RUNS = (
    ("torch fp32, 30 s", "torch", None, "full"),
    ("ct2 int8, 30 s", "ct2", "int8", "full"),
    ("ct2 float32, 30 s", "ct2", "float32", "full"),
    ("torch fp32, auto", "torch", None, "auto"),
    ("ct2 int8, auto", "ct2", "int8", "auto"),
    ("ct2 float32, auto", "ct2", "float32", "auto"),
)


@click.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("bench/eval"))
@click.option("--model", type=click.Path(path_type=Path), default=None)
@click.option("--csv", "csv_path", type=click.Path(path_type=Path), default=None)
@click.option("--limit", type=int, default=40, show_default=True)
@click.option(
    "--max-new-tokens",
    type=int,
    default=96,
    show_default=True,
    help="The demo's decode.max_new_tokens: a hallucinating model stops there.",
)
@click.option("--out", type=click.Path(path_type=Path), default=None)
def main(
    workdir: Path,
    model: Path | None,
    csv_path: Path | None,
    limit: int,
    max_new_tokens: int,
    out: Path | None,
) -> None:
    from pefty_whisper.config import DataSection
    from pefty_whisper.export import export_ct2

    workdir.mkdir(parents=True, exist_ok=True)
    model = model or ensure_offline_base(workdir)
    if csv_path is None:
        prepare_kspon(ensure_sample_corpus(workdir), workdir / "data", DataSection())
        csv_path = workdir / "data" / "eval_clean.csv"
    utterances = read_manifest(csv_path).utterances[:limit]
    results = []
    for label, backend, quantization, context in RUNS:
        model_dir = model
        if backend == "ct2":
            model_dir = workdir / f"{model.name}-ct2-{quantization}"
            if not ModelDir(model_dir).is_ct2:
                export_ct2(model, model_dir, quantization=quantization, force=True)
        options = TranscriberOptions(
            backend=backend,
            batch_size=BATCH_SIZE,
            max_new_tokens=max_new_tokens,
            context=context,
        )
        results.append(measure(label, model_dir, options, utterances))
        click.echo(f"{label}: {results[-1]}", err=True)
    click.echo(markdown_table(results))
    record = {
        "machine": machine_info(),
        "model": str(model),
        "utterances": len(utterances),
        "batch_size": BATCH_SIZE,
        "max_new_tokens": max_new_tokens,
        "results": results,
    }
    out = out or workdir / "bench_eval.json"
    out.write_text(json.dumps(record, indent=2))
    click.echo(f"written: {out}")


def measure(
    label: str, model_dir: Path, options: TranscriberOptions, utterances: list
) -> dict[str, Any]:
    # Loading is outside the timed region: evaluate's cost is the decoding.
    transcriber = Transcriber(model_dir, options)
    transcriber.timings.reset()
    started = time.perf_counter()
    hypotheses, _, audio_seconds = decode_utterances(transcriber, utterances, options.batch_size)
    elapsed = time.perf_counter() - started
    scores = score_corpus([u.sentence for u in utterances], hypotheses)
    timings = transcriber.timings
    return {
        "label": label,
        "utterances_per_second": round(len(utterances) / elapsed, 3),
        "real_time_factor": round(elapsed / audio_seconds, 4),
        "cer": round(scores.cer, 2),
        "encoder_s": round(timings.encoder_s, 2),
        "decoder_s": round(timings.decoder_s, 2),
        "features_s": round(timings.features_s, 2),
        "seconds": round(elapsed, 2),
    }


def markdown_table(results: list[dict]) -> str:
    baseline = results[0]["seconds"]
    header = ["run", "utt/s", "RTF", f"speed vs {results[0]['label']}", "CER %", "encoder s"]
    header += ["decoder s", "features s"]
    rows = [
        [
            r["label"],
            r["utterances_per_second"],
            r["real_time_factor"],
            ratio(baseline, r["seconds"]),
            r["cer"],
            r["encoder_s"],
            r["decoder_s"],
            r["features_s"],
        ]  # fmt: skip
        for r in results
    ]
    return common_table(header, rows)


if __name__ == "__main__":
    main()
