"""`train.report_to`: a tiny round logged to MLflow (a local file store) and to Weights & Biases
(offline), through the Trainer's integrations, with the round's lineage as the run's parameters;
then `pefty merge` and `pefty evaluate` log the evaluation to the same runs.

Each tracker's test skips only when its package is missing (the [track] extra installs both).
The W&B run is read back from its offline files (the run's record log: config, history).
"""

from __future__ import annotations

import importlib.util
import json
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from workspaces import SENTENCES, logged, make_workspace, write_manifest

from pefty_whisper.cli import main
from pefty_whisper.workspace import EvalRecord, MergeRecord, RoundRecord

TRACKERS = [name for name in ("mlflow", "wandb") if importlib.util.find_spec(name) is not None]
ROUND = ["-o", "train.max_steps=4", "-o", "train.eval_steps=2", "-o", "train.deepspeed=none"]


def invoke(*args: str) -> None:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    """Round 1 reported to TensorBoard and every installed tracker, merged and evaluated."""
    if not TRACKERS:
        pytest.skip("neither mlflow nor wandb is installed: pip install 'pefty-whisper[track]'")
    root = tmp_path_factory.mktemp("tracking")
    # No MLFLOW_TRACKING_URI: pefty points MLflow at the workspace's file store, mlruns/.
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(root), "WANDB_SILENT": "true"}
    touched = ("MLFLOW_TRACKING_URI", "MLFLOW_ALLOW_FILE_STORE", "MLFLOW_EXPERIMENT_NAME")
    touched += ("WANDB_PROJECT", "TENSORBOARD_LOGGING_DIR")
    saved = {key: os.environ.get(key) for key in (*env, *touched)}
    for key in touched:
        os.environ.pop(key, None)
    os.environ.update(env)
    try:
        base = save_tiny_whisper(root / "base")
        work = make_workspace(root / "work")
        audio = sorted((work / "audio").glob("*.pcm"))
        rows = [(str(p), s) for p, s in zip(audio, SENTENCES, strict=True)]
        write_manifest(work / "data" / "eval_clean.csv", rows)
        ws = ["--workdir", str(work)]
        report_to = ",".join(["tensorboard", *TRACKERS])
        invoke(
            "train", "--round", "1", "--base", str(base), *ws, *ROUND,
            "-o", f"train.report_to={report_to}",
        )  # fmt: skip
        invoke("merge", "--round", "1", *ws)
        invoke("evaluate", "--set", "eval_clean", "--no-longform", *ws)
        yield root, work, base
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_round_json_keeps_the_runs_and_the_merge_copies_them(tracked) -> None:
    _, work, _ = tracked
    record = RoundRecord.read(work / "adapters" / "round1")
    assert set(record.tracking) == set(TRACKERS)
    assert MergeRecord.read(work / "merged" / "round1").tracking == record.tracking
    assert list((work / "adapters" / "round1" / "logs").iterdir())  # TensorBoard still logs


def test_the_mlflow_run_holds_the_lineage_the_training_and_the_evaluation(tracked) -> None:
    pytest.importorskip("mlflow", reason="pip install 'pefty-whisper[track]'")
    from mlflow.tracking import MlflowClient

    _, work, base = tracked
    record = RoundRecord.read(work / "adapters" / "round1")
    run_info = record.tracking["mlflow"]
    assert run_info["tracking_uri"] == f"file:{work.resolve() / 'mlruns'}"
    client = MlflowClient(tracking_uri=run_info["tracking_uri"])
    run = client.get_run(run_info["run_id"])
    assert run.info.run_name == "round1"
    assert client.get_experiment(run.info.experiment_id).name == "pefty-whisper"
    params = run.data.params
    assert params["pefty.round"] == "1" and params["pefty.base"] == str(base)
    assert params["pefty.base_hash"] == record.base_hash
    assert params["pefty.train_sets"] == "train_KsponSpeech_01_train:1"
    assert params["pefty.validation_set"] == "train_KsponSpeech_01_test"
    assert params["pefty.quant"] == "8bit" and params["learning_rate"] == "0.01"  # the Trainer's
    adapter = work / "adapters" / "round1"
    losses = [m.value for m in client.get_metric_history(run.info.run_id, "loss")]
    assert losses == pytest.approx(logged(adapter, "loss"))
    cers = [m.value for m in client.get_metric_history(run.info.run_id, "eval_cer")]
    assert cers == pytest.approx(logged(adapter, "eval_cer"))
    evaluation = EvalRecord.read(work / "eval" / "round1" / "eval_clean.json")
    figures = run.data.metrics
    assert figures["eval/round1/eval_clean/cer"] == pytest.approx(evaluation.cer)
    assert figures["eval/round1/eval_clean/wer"] == pytest.approx(evaluation.wer)


def test_the_wandb_offline_run_holds_the_lineage_the_training_and_the_evaluation(
    tracked,
) -> None:
    pytest.importorskip("wandb", reason="pip install 'pefty-whisper[track]'")
    root, work, base = tracked
    record = RoundRecord.read(work / "adapters" / "round1")
    run_info = record.tracking["wandb"]
    assert run_info["mode"] == "offline" and run_info["project"] == "pefty-whisper"
    assert Path(run_info["dir"]) == root
    # Training wrote one offline run; the evaluation resumed it (a second folder, same id).
    folders = sorted((root / "wandb").glob(f"offline-run-*-{run_info['run_id']}"))
    assert len(folders) == 2, folders
    training, evaluation = (read_wandb_run(folder) for folder in folders)
    assert training["name"] == "round1"
    config = training["config"]
    assert config["pefty.round"] == "1" and config["pefty.base"] == str(base)
    assert config["pefty.base_hash"] == record.base_hash
    assert config["pefty.train_sets"] == "train_KsponSpeech_01_train:1"
    adapter = work / "adapters" / "round1"
    losses = [row["train/loss"] for row in training["history"] if "train/loss" in row]
    assert losses == pytest.approx(logged(adapter, "loss"))
    cers = [row["eval/cer"] for row in training["history"] if "eval/cer" in row]
    assert cers == pytest.approx(logged(adapter, "eval_cer"))
    figure = EvalRecord.read(work / "eval" / "round1" / "eval_clean.json")
    rows = [row for row in evaluation["history"] if "eval/round1/eval_clean/cer" in row]
    assert len(rows) == 1 and rows[0]["eval/round1/eval_clean/cer"] == pytest.approx(figure.cer)


def read_wandb_run(folder: Path) -> dict:
    """An offline run's name, config and history rows from its run-<id>.wandb record log
    (LevelDB's log format: 32 KiB blocks of records with a 7-byte header, after a 7-byte file
    header; each record a wandb_internal_pb2.Record)."""
    from wandb.proto import wandb_internal_pb2

    data = next(folder.glob("run-*.wandb")).read_bytes()
    block, position, chunks, records = 32768, 7, [], []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:  # a block's tail too short for a header is padding
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunks.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            records.append(b"".join(chunks))
            chunks = []
    run: dict = {"name": None, "config": {}, "history": []}
    for raw in records:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["name"] = record.run.display_name
            for item in record.run.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in record.config.update:
                run["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            row = {}
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                row[key] = json.loads(item.value_json)
            run["history"].append(row)
    return run
