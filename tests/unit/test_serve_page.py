"""What the page at / shows of the served model: the round from its record, the eval_clean CER
under the label `pefty evaluate` would write, and nothing (with a warning) for a damaged record."""

from __future__ import annotations

import logging
from pathlib import Path

from pefty_whisper.serve_page import EvalFigure, ServedModel, describe_model
from pefty_whisper.workspace import (
    ROUND_FILE,
    EvalLabel,
    EvalRecord,
    ExportParity,
    ExportProbe,
    ExportRecord,
    Workspace,
)


def model_files(directory: Path) -> Path:
    """What check_model_dir looks for: a config and weights (no model is loaded here)."""
    directory.mkdir(parents=True)
    (directory / "config.json").write_text("{}", encoding="utf-8")
    (directory / "model.safetensors").write_bytes(b"")
    return directory


def eval_summary(workspace: Workspace, label: str, set_name: str, cer: float) -> None:
    path = workspace.eval_json(EvalLabel(label, set_name))
    path.parent.mkdir(parents=True, exist_ok=True)
    EvalRecord(
        model=label, label=label, set=set_name, manifest=f"data/{set_name}.csv", limit=None,
        backend="ct2", context="full", language="ko", cer=cer, cer_with_spaces=cer, wer=cer,
        num_utterances=40, audio_seconds=100.0, seconds=10.0, real_time_factor=0.1,
        utterances_per_second=4.0, normalization="", evaluated="2026-12-06T00:00:00+00:00",
    ).write(path)  # fmt: skip


def describe(workspace: Workspace, model: str, *overrides: str) -> ServedModel:
    config = workspace.load_config(overrides=overrides)
    model_dir = workspace.root / model
    return describe_model(workspace, config, model, model_dir, model_dir.name, "ct2")


def test_an_export_has_its_source_round_and_its_own_eval_figure(tmp_path):
    workspace = Workspace(tmp_path)
    export = workspace.export_dir_for("round2", "ct2", "int8")
    export.mkdir(parents=True)
    (export / "model.bin").write_bytes(b"")
    probe = ExportProbe("tones", 2, 8, "int8", 2, 2, 0.0, ["a", "b"], ["a", "b"])
    ExportRecord(
        format="ct2",
        quantization="int8",
        source=str(workspace.merged_dir(2)),
        source_weights="sha256:00",
        source_round=2,
        language="ko",
        task="transcribe",
        n_mels=80,
        probe=probe,
        parity=ExportParity(),
        exporter="ctranslate2",
        files=["model.bin"],
        packages={},
        created="2025-01-01T00:00:00+00:00",
        seconds=1.0,
    ).write(export)
    eval_summary(workspace, "round2", "eval_clean", 9.0)  # the merged round's, not the export's
    assert describe(workspace, "exports/round2-ct2-int8") == ServedModel(
        "round2-ct2-int8", "ct2", round=2, label="round2-ct2-int8", eval_clean=None
    )
    eval_summary(workspace, "round2-ct2-int8", "eval_clean", 8.25)
    eval_summary(workspace, "round2-ct2-int8", "eval_other", 11.0)
    assert describe(workspace, "exports/round2-ct2-int8").eval_clean == EvalFigure(
        cer=8.25, num_utterances=40, path="eval/round2-ct2-int8/eval_clean.json"
    )


def test_the_configured_base_is_round_0_and_any_other_model_has_no_round(tmp_path):
    workspace = Workspace(tmp_path)
    model_files(tmp_path / "base" / "whisper-base")
    model_files(tmp_path / "models" / "someone's model")
    eval_summary(workspace, "round0", "eval_clean", 31.5)
    base = describe(workspace, "base/whisper-base", "model.base=base/whisper-base")
    assert (base.round, base.label, base.eval_clean.cer) == (0, "round0", 31.5)
    other = describe(workspace, "models/someone's model", "model.base=base/whisper-base")
    assert other == ServedModel("someone's model", "ct2", None, "someone-s-model", None)
    assert other.to_dict() == {
        "name": "someone's model",
        "backend": "ct2",
        "round": None,
        "label": "someone-s-model",
        "eval_clean": None,
    }


def test_a_damaged_record_is_reported_and_the_model_is_still_described(tmp_path, caplog):
    workspace = Workspace(tmp_path)
    merged = model_files(workspace.merged_dir(4))
    (merged / ROUND_FILE).write_text('{"round": 4,', encoding="utf-8")
    # The CLI's logging setup stops pefty's loggers at their own handler: listen on the module's.
    logger = logging.getLogger("pefty_whisper.serve_page")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            assert describe(workspace, "merged/round4") == ServedModel("round4", "ct2")
    finally:
        logger.removeHandler(caplog.handler)
    assert "round.json: not valid JSON" in caplog.text
