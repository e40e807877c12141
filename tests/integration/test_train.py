"""`pefty train` on a tiny random Whisper with the real tokenizer: 8-bit base, DeepSpeed ZeRO-2 on
the CPU (gloo), one and two processes, kill -9 and --resume, and the refusals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from transformers import WhisperFeatureExtractor, WhisperProcessor
from workspaces import (
    cli_command,
    logged,
    make_workspace,
    subprocess_env,
    write_audio,
    write_manifest,
)

from pefty_whisper.cli import main
from pefty_whisper.workspace import RoundRecord

# Two-process runs per test: the exit-time crash showed in about one run in four.
TWO_PROCESS_RUNS = 3


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("base") / "tiny")


def test_8bit_zero2_round_trains_and_writes_lineage(tiny_base, tmp_path):
    bad_rows = (("missing.pcm", "없는 파일"), (str(tmp_path / "audio" / "u0.pcm"), ""))
    work = make_workspace(tmp_path, extra_rows=bad_rows)
    result = CliRunner().invoke(
        main,
        ["train", "--round", "1", "--base", str(tiny_base), "--workdir", str(work)],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    adapter = work / "adapters" / "round1"
    assert (adapter / "adapter_model.safetensors").is_file()
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8
    assert set(adapter_config["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "out_proj",
        "fc1",
        "fc2",
    }

    # Every step sees the same batch of four, so the loss must fall. A tiny random Whisper's
    # tied 64-dim embeddings cap how far it can fall (about 1.3 nats below ln(51865) = 10.9).
    losses = logged(adapter, "loss")
    assert len(losses) == 8
    assert losses[-1] < losses[0] - 0.5, losses
    assert sum(b < a for a, b in zip(losses, losses[1:], strict=False)) >= 5, losses

    record = json.loads((adapter / "round.json").read_text())
    assert record["round"] == 1 and record["quant"] == "8bit" and record["deepspeed"] == "zero2"
    assert record["base_hash"].startswith("sha256:") and record["steps"] == 8
    assert record["data"]["train"]["rows"] == 6
    assert record["data"]["train"]["rejected_rows"] == 2  # missing audio, empty sentence
    assert record["data"]["train"]["kept"] == 4
    assert record["best_validation"]["cer"] == min(logged(adapter, "eval_cer"))
    assert record["versions"]["deepspeed"]
    typed = RoundRecord.read(adapter)
    assert typed is not None and typed.data.train.kept == 4 and typed.steps == 8
    assert typed.best_validation.cer == record["best_validation"]["cer"]
    assert (adapter / "config.yaml").is_file()
    assert list((adapter / "logs").iterdir()), "TensorBoard logs missing"

    # Checkpoints hold the adapter and optimizer state, not a copy of the base model.
    base_bytes = sum(f.stat().st_size for f in tiny_base.glob("*.safetensors"))
    for checkpoint in (adapter / "checkpoints").glob("checkpoint-*"):
        largest = max(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
        assert largest < base_bytes / 2, checkpoint

    # A finished round is never overwritten silently.
    again = CliRunner().invoke(
        main, ["train", "--round", "1", "--base", str(tiny_base), "--workdir", str(work)]
    )
    assert again.exit_code == 1 and "finished round: pass --force" in again.output


def test_a_128_mel_base_trains_at_the_context_each_batch_needs(tmp_path):
    """large-v3's 128 mel bins, and `model.context: auto` on utterances of 1 to 5 s.

    The checkpoint carries an 80-bin processor (saved from another size): training must
    rebuild it at the model's 128 bins instead of feeding the encoder the wrong shape.
    """
    base = save_tiny_whisper(tmp_path / "tiny128", n_mels=128)
    processor = WhisperProcessor.from_pretrained(base)
    processor.feature_extractor = WhisperFeatureExtractor(feature_size=80)
    processor.save_pretrained(base)
    work = make_workspace(tmp_path / "work", repeats=2)
    long_audio = work / "audio" / "long.pcm"
    write_audio(long_audio, 7, seconds=5.0)
    write_manifest(
        work / "data" / "train_KsponSpeech_01_test.csv", [(str(long_audio), "길게 말해요")]
    )
    result = CliRunner().invoke(
        main,
        ["train", "--round", "1", "--base", str(base), "--workdir", str(work)]
        + ["-o", "model.context=auto", "-o", "model.context_step_s=1"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    adapter = work / "adapters" / "round1"
    losses = logged(adapter, "loss")
    assert len(losses) == 8 and losses[-1] < losses[0] - 0.5, losses
    assert logged(adapter, "eval_cer"), "validation at the short context did not run"
    record = json.loads((adapter / "round.json").read_text())
    assert record["config"]["model"]["context"] == "auto"


def test_zero3_with_8bit_base_is_refused(tiny_base, tmp_path):
    work = make_workspace(tmp_path)
    result = CliRunner().invoke(
        main,
        [
            "train",
            "--round",
            "1",
            "--base",
            str(tiny_base),
            "--deepspeed",
            "zero3",
            "--workdir",
            str(work),
        ],
    )
    assert result.exit_code == 1
    assert "ZeRO-3 cannot shard an 8-bit base" in result.output
    assert "Traceback" not in result.output
    assert not (work / "adapters").exists()


def test_missing_manifest_and_adapter_as_base_are_clear_errors(tiny_base, tmp_path):
    result = CliRunner().invoke(
        main, ["train", "--round", "3", "--base", str(tiny_base), "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "train_KsponSpeech_03_train.csv: manifest not found" in result.output
    adapter_like = tmp_path / "adapter_like"
    adapter_like.mkdir()
    (adapter_like / "adapter_config.json").write_text("{}")
    result = CliRunner().invoke(
        main, ["train", "--round", "2", "--base", str(adapter_like), "--workdir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "holds a LoRA adapter, not a model: run `pefty merge` first" in result.output


def test_two_process_zero2_logs_the_same_loss_as_one_process(tiny_base, tmp_path):
    """One step over the same four utterances: batch 4 in one process, 2 + 2 in two processes.

    The mean token loss of that step must not depend on the process count (upstream, Whisper's
    loss under the Trainer came out exactly 2x with two processes). The two-process run is
    repeated: a rank that died at exit (SIGABRT, "terminate called without an active
    exception") after its round was written made the launcher fail about one run in four.
    """
    settings = [
        "-o",
        "train.max_steps=1",
        "-o",
        "train.eval_steps=1",
        "-o",
        "train.learning_rate=0",
    ]
    single = make_workspace(tmp_path / "single", repeats=1)
    subprocess.run(
        cli_command(
            "train", "--round", "1", "--base", str(tiny_base), "--workdir", str(single), *settings
        ),
        check=True,
        env=subprocess_env(),
        timeout=600,
    )
    one = logged(single / "adapters" / "round1", "loss")
    for attempt in range(TWO_PROCESS_RUNS):
        double = make_workspace(tmp_path / f"double{attempt}", repeats=1)
        two = train_two_processes(tiny_base, double, settings)
        assert len(one) == len(two) == 1
        assert two[0] == pytest.approx(one[0], rel=1e-3)


def train_two_processes(tiny_base: Path, double: Path, settings: list[str]) -> list[float]:
    """torchrun, two ranks: their exit codes must say the round finished, and cleanly."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            str(port),
            "-m",
            "pefty_whisper.cli",
            "train",
            "--round",
            "1",
            "--base",
            str(tiny_base),
            "--workdir",
            str(double),
            *settings,
            "-o",
            "train.batch_size=2",
            "-o",
            "decode.batch_size=2",
        ],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stderr[-4000:]
    assert "terminate called" not in process.stderr
    record = json.loads((double / "adapters" / "round1" / "round.json").read_text())
    assert record["world_size"] == 2
    return logged(double / "adapters" / "round1", "loss")


def test_kill_9_mid_round_then_resume(tiny_base, tmp_path):
    work = make_workspace(tmp_path, repeats=8)
    settings = ["-o", "train.max_steps=8", "-o", "train.eval_steps=2"]
    command = cli_command(
        "train", "--round", "1", "--base", str(tiny_base), "--workdir", str(work), *settings
    )
    process = subprocess.Popen(command, env=subprocess_env(), start_new_session=True)
    checkpoints = work / "adapters" / "round1" / "checkpoints"
    deadline = time.time() + 480
    try:
        # Kill once the step-4 checkpoint is complete (trainer_state.json is written last).
        while not (checkpoints / "checkpoint-4" / "trainer_state.json").exists():
            assert process.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline, "no checkpoint within the time limit"
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    adapter = work / "adapters" / "round1"
    assert not (adapter / "round.json").exists()

    refused = CliRunner().invoke(
        main, ["train", "--round", "1", "--base", str(tiny_base), "--workdir", str(work), *settings]
    )
    assert refused.exit_code == 1 and "pass --resume" in refused.output

    subprocess.run(command + ["--resume"], check=True, env=subprocess_env(), timeout=600)
    record = json.loads((adapter / "round.json").read_text())
    assert record["steps"] == 8
    # The resumed run continued from the last complete checkpoint instead of starting over,
    # and its history holds every step exactly once.
    assert record["resumed_from"] in {"checkpoint-4", "checkpoint-6"}
    history = json.loads((adapter / "log_history.json").read_text())
    assert [e["step"] for e in history if "loss" in e] == list(range(1, 9))


def test_a_round_at_the_default_loader_settings_trains(tiny_base, tmp_path):
    # Every other test pins data.num_workers; the default is null (from the CPU count), and a
    # check that compared it before resolving it once broke `pefty train` at the defaults.
    work = make_workspace(tmp_path)
    result = CliRunner().invoke(
        main,
        ["train", "--round", "1", "--base", str(tiny_base), "--workdir", str(work),
         "-o", "data.num_workers=null", "-o", "train.max_steps=2", "-o", "train.eval_steps=2"],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "loader workers: " in result.output
    assert RoundRecord.read(work / "adapters" / "round1").steps == 2
