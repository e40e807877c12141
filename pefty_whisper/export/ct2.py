"""CTranslate2 export: a directory that faster-whisper and `ctranslate2.models.Whisper` load."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from pefty_whisper.errors import ConfigError
from pefty_whisper.export.common import check_source, require_export_extra, write_processor_files
from pefty_whisper.export.parity import (
    ExportReport,
    compare_with_torch,
    probe_or_default,
    write_export_record,
)
from pefty_whisper.files import atomic_directory
from pefty_whisper.inference import TranscriberOptions

__all__ = ["CT2_QUANTIZATIONS", "export_ct2"]

logger = logging.getLogger(__name__)

CT2_QUANTIZATIONS = (
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)


def export_ct2(
    model_dir: Path,
    out_dir: Path,
    quantization: str = "int8",
    probe_audio: Sequence[np.ndarray] | None = None,
    force: bool = False,
    probe_options: TranscriberOptions | None = None,
) -> ExportReport:
    """A CTranslate2 model directory that faster-whisper and `ctranslate2.models.Whisper` load.

    Beside model.bin it holds the tokenizer, preprocessor_config.json (which CTranslate2 and
    faster-whisper read; transformers 5 no longer writes it) and the generation config, whose
    language and task the Transcriber uses for the prompt.
    """
    require_export_extra("ctranslate2", purpose="a CTranslate2 export")
    import ctranslate2

    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if quantization not in CT2_QUANTIZATIONS:
        raise ConfigError(
            f"unknown CTranslate2 quantization {quantization!r}: use one of "
            f"{', '.join(CT2_QUANTIZATIONS)}"
        )
    config = check_source(model_dir, out_dir, force)
    probe, probe_kind = probe_or_default(probe_audio)
    options = probe_options or TranscriberOptions()
    with atomic_directory(out_dir, force=force) as tmp:
        logger.info("converting %s to CTranslate2 (%s)", model_dir, quantization)
        converter = ctranslate2.converters.TransformersConverter(str(model_dir))
        converter.convert(str(tmp), quantization=quantization, force=True)
        write_processor_files(model_dir, tmp)
        exported = replace(
            options,
            backend="ct2",
            compute_type=_probe_compute_type(quantization, options.device),
        )
        lossless = exported.compute_type == "float32"
        check = compare_with_torch(model_dir, tmp, probe, options, exported, lossless)
        report = write_export_record(
            tmp, out_dir, "ct2", quantization, model_dir, config, check, probe_kind, started
        )
    logger.info("CTranslate2 export written to %s", out_dir)
    return report


def _probe_compute_type(quantization: str, device: str) -> str:
    """The compute type the probe decodes an export with: its own, where the device has it.

    On the CPU, CTranslate2 has no float16/bfloat16 kernels: those exports are probed in float32,
    int8 mixtures in plain int8.
    """
    on_cpu = device == "cpu" or (device == "auto" and not _ct2_has_cuda())
    if not on_cpu:
        return quantization
    if quantization.startswith("int8"):
        return "int8"
    if quantization in ("float16", "bfloat16"):
        return "float32"
    return quantization


def _ct2_has_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0
