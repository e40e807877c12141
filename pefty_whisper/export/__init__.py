"""Deployment exports of a merged Whisper: CTranslate2 (faster-whisper) and ONNX (Optimum's layout).

Every export is checked before it is published: a probe set is decoded by the export and by the
PyTorch model it came from, through the same `Transcriber`, and the agreement is written into
`export.json` (workspace.ExportRecord) beside the model. Outputs are written to a temporary
directory and renamed into place, so a killed export never leaves a directory that looks
finished. `export_model` is what `pefty export` calls; `export_ct2` / `export_onnx` take paths.

The reverse conversion (`pefty_whisper.export.import_ct2`) and the model.bin reader
(`pefty_whisper.export.ct2_file`) live here too, but are not imported by this package.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from pefty_whisper.errors import ConfigError, ModelError
from pefty_whisper.export.common import EXPORT_EXTRA_HINT, require_export_extra
from pefty_whisper.export.ct2 import CT2_QUANTIZATIONS, export_ct2
from pefty_whisper.export.onnx import OnnxExporter, export_onnx
from pefty_whisper.export.parity import ExportReport, synthesize_probe
from pefty_whisper.workspace import EXPORT_FILE, ExportRecord, export_name

if TYPE_CHECKING:
    from pefty_whisper.config import Config
    from pefty_whisper.workspace import Workspace

__all__ = [
    "CT2_QUANTIZATIONS",
    "EXPORT_EXTRA_HINT",
    "EXPORT_FORMATS",
    "EXPORT_RECORD",
    "ExportRecord",
    "ExportReport",
    "OnnxExporter",
    "default_export_name",
    "export_ct2",
    "export_model",
    "export_onnx",
    "synthesize_probe",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("ct2", "onnx")
EXPORT_RECORD = EXPORT_FILE  # export.json
# What `pefty export` writes when --quantization is not given.
DEFAULT_QUANTIZATION = {"ct2": "int8", "onnx": "float32"}
ONNX_QUANTIZATIONS = ("int8", "float32")


def export_model(
    workspace: Workspace,
    config: Config,
    model: str | None = None,
    fmt: str = "ct2",
    quantization: str | None = None,
    out: Path | None = None,
    force: bool = False,
) -> ExportReport:
    """Export a workspace's model (default: the latest merged round) and check it against
    PyTorch, probing with the config's decoding settings (config.decode, model.context)."""
    from pefty_whisper.inference import TranscriberOptions

    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}: use ct2 or onnx")
    target = workspace.model_target(config, model)
    if target.adapter_dir is not None:
        raise ModelError(
            f"{target.model_dir} holds a LoRA adapter, not a model: run `pefty merge` first"
        )
    if fmt == "onnx" and quantization not in (None, *ONNX_QUANTIZATIONS):
        raise ConfigError(f"--format onnx takes --quantization int8 or float32, not {quantization}")
    # Before minutes of work: without the extra, one line that says how to get it.
    if fmt == "ct2":
        require_export_extra("ctranslate2", purpose="a CTranslate2 export")
    else:
        require_export_extra("onnx", "onnxruntime", "onnxscript", purpose="an ONNX export")
    quantization = quantization or DEFAULT_QUANTIZATION[fmt]
    out = out or workspace.export_dir_for(target.model_dir.resolve().name, fmt, quantization)
    options = TranscriberOptions.from_config(config)
    logger.info("exporting %s to %s (%s) in %s", target.model_dir, fmt, quantization, out)
    if fmt == "ct2":
        report = export_ct2(
            target.model_dir, out, quantization=quantization, force=force, probe_options=options
        )
    else:
        report = export_onnx(
            target.model_dir,
            out,
            quantize_int8=quantization == "int8",
            force=force,
            probe_options=options,
        )
    from pefty_whisper.card import update_model_card

    update_model_card(workspace, config, report.out_dir)  # README.md: the Hub's model card
    return report


def default_export_name(model_dir: Path, fmt: str, quantization: str | None) -> str:
    """`merged/round5` + ct2 + int8 -> `round5-ct2-int8` (Workspace.export_dir_for's naming)."""
    return export_name(Path(model_dir).resolve().name, fmt, quantization)
