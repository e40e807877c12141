"""The parity check every export passes: a probe decoded by PyTorch and by the export, through
the same Transcriber, and the agreement written into export.json beside the model."""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.errors import DataError
from pefty_whisper.files import package_versions, weights_hash
from pefty_whisper.inference import Transcriber, TranscriberOptions
from pefty_whisper.metrics import score_corpus
from pefty_whisper.workspace import (
    EXPORT_FILE,
    ExportParity,
    ExportProbe,
    ExportRecord,
    MergeRecord,
)

__all__ = [
    "PROBE_SENTENCES",
    "ExportReport",
    "compare_with_torch",
    "probe_or_default",
    "synthesize_probe",
    "write_export_record",
]

logger = logging.getLogger(__name__)

# Short, fixed Korean sentences for the probe when espeak-ng is installed.
PROBE_SENTENCES = (
    "안녕하세요 오늘 날씨가 정말 좋네요",
    "내일 오후 세 시에 회의가 있습니다",
    "이 모델은 한국어 음성을 받아 적습니다",
)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it agrees with PyTorch on the probe."""

    out_dir: Path
    format: str  # "ct2" or "onnx"
    quantization: str | None  # ct2: its quantization; onnx: "int8" or None (float32)
    probe_utterances: int
    identical_transcripts: int
    # CER in points of the exported transcripts scored against the PyTorch transcripts:
    # 0.0 when every transcript is the same.
    cer_difference: float | None
    max_abs_logit_diff: float | None  # onnx decoder logits vs PyTorch, where measured
    seconds: float
    max_abs_encoder_diff: float | None = None  # onnx encoder output vs PyTorch


def probe_or_default(
    probe_audio: Sequence[np.ndarray] | None,
) -> tuple[list[np.ndarray], str]:
    """The given waveforms (kind "given"), or a synthesized probe."""
    if probe_audio is not None:
        probe = [np.asarray(a, dtype=np.float32) for a in probe_audio]
        if not probe:
            raise DataError("probe_audio is empty: pass at least one waveform, or None")
        return probe, "given"
    return synthesize_probe()


def synthesize_probe() -> tuple[list[np.ndarray], str]:
    """A small deterministic probe: espeak-ng Korean sentences if installed, else tones."""
    if shutil.which("espeak-ng"):
        from pefty_whisper.data.espeak import Voice, synthesize

        try:
            return [synthesize(s, Voice("ko", 150, 50)) for s in PROBE_SENTENCES], "espeak-ng"
        except DataError as exc:
            logger.warning("espeak-ng probe failed (%s); probing with tones", exc)
    return _tone_probe(), "tones"


def _tone_probe() -> list[np.ndarray]:
    # Vowel-like harmonic tones with a gliding pitch and a little noise, 1.5 to 4.5 s long.
    rng = np.random.default_rng(0)
    clips = []
    for seconds, pitch in ((1.5, 120.0), (3.0, 180.0), (4.5, 240.0)):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        phase = 2 * np.pi * np.cumsum(pitch * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))) / SAMPLE_RATE
        voice = sum(np.sin(k * phase) / k for k in range(1, 6))
        clip = 0.1 * voice * np.hanning(len(t)) + 0.005 * rng.standard_normal(len(t))
        clips.append(clip.astype(np.float32))
    return clips


def compare_with_torch(
    model_dir: Path,
    export_dir: Path,
    probe: list[np.ndarray],
    torch_options: TranscriberOptions,
    export_options: TranscriberOptions,
    lossless: bool,
) -> dict[str, Any]:
    """Decode the probe with PyTorch and with the export, through the same Transcriber code."""
    reference = Transcriber(model_dir, replace(torch_options, backend="torch", compute_type="auto"))
    torch_tokens = reference.transcribe_tokens(probe)
    torch_texts = [reference.detokenize(t) for t in torch_tokens]
    # Without a configured language the prompt is only for the logit check: any language will do.
    prompt = reference.prompt_ids(reference.language or "en")
    del reference
    exported = Transcriber(export_dir, export_options)
    export_tokens = exported.transcribe_tokens(probe)
    export_texts = [exported.detokenize(t) for t in export_tokens]
    identical = sum(a == b for a, b in zip(torch_texts, export_texts, strict=True))
    cer = score_corpus(torch_texts, export_texts).cer
    if identical < len(probe):
        # Expected of a quantized export; a float32 export should match PyTorch exactly.
        (logger.warning if lossless else logger.info)(
            "export differs from PyTorch on %d of %d probe utterances (CER %.2f vs PyTorch)",
            len(probe) - identical,
            len(probe),
            cer,
        )
    return {
        "prompt": prompt,
        "language": exported.language,
        # What the export really decoded with: on a GPU without CTranslate2's CUDA libraries
        # the engine falls back to the CPU.
        "compute_type": getattr(exported.engine, "compute_type", export_options.compute_type),
        "max_new_tokens": torch_options.max_new_tokens,
        "torch_tokens": torch_tokens,
        "torch": torch_texts,
        "exported": export_texts,
        "identical_transcripts": identical,
        "identical_tokens": sum(a == b for a, b in zip(torch_tokens, export_tokens, strict=True)),
        "cer_difference": cer,
    }


def write_export_record(
    tmp: Path,
    out_dir: Path,
    fmt: str,
    quantization: str | None,
    model_dir: Path,
    config: dict[str, Any],
    check: dict[str, Any],
    probe_kind: str,
    started: float,
) -> ExportReport:
    """Write export.json (the parity record) into the export and build the report."""
    seconds = time.perf_counter() - started
    lineage = MergeRecord.read(model_dir)
    record = ExportRecord(
        format=fmt,
        quantization=quantization,
        source=str(model_dir.resolve()),
        source_weights=weights_hash(model_dir),
        source_round=lineage.round if lineage is not None else None,
        language=check["language"],
        task=_generation_task(model_dir),
        n_mels=config.get("num_mel_bins"),
        probe=ExportProbe(
            kind=probe_kind,
            utterances=len(check["torch"]),
            max_new_tokens=check["max_new_tokens"],
            compute_type=check["compute_type"],
            identical_transcripts=check["identical_transcripts"],
            identical_tokens=check["identical_tokens"],
            cer_difference=check["cer_difference"],
            torch=check["torch"],
            exported=check["exported"],
        ),
        parity=ExportParity(
            encoder_max_abs_diff=check.get("encoder_max_abs_diff"),
            decoder_max_abs_logit_diff=check.get("decoder_max_abs_logit_diff"),
        ),
        exporter=check.get("exporter", "ctranslate2" if fmt == "ct2" else None),
        files=sorted(p.name for p in tmp.iterdir()) + [EXPORT_FILE],
        packages=package_versions("ctranslate2", "onnx", "onnxruntime", "onnxscript"),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        seconds=round(seconds, 2),
    )
    record.write(tmp)
    return ExportReport(
        out_dir=out_dir,
        format=fmt,
        quantization=quantization,
        probe_utterances=len(check["torch"]),
        identical_transcripts=check["identical_transcripts"],
        cer_difference=check["cer_difference"],
        max_abs_logit_diff=check.get("decoder_max_abs_logit_diff"),
        seconds=seconds,
        max_abs_encoder_diff=check.get("encoder_max_abs_diff"),
    )


def _generation_task(model_dir: Path) -> str | None:
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("task")
