"""The training path a CUDA user meets, on the CPU: what each GPU-only defect looks like here.

A bf16 run under DeepSpeed (what a GPU trains in) with `model.context: auto`: the optimizer
DeepSpeed builds, the frames validation feeds the encoder and the adapter's dtype. A bf16 run
without DeepSpeed, the DeepSpeed launcher's command line, CTranslate2 without its CUDA
libraries, and scripts/gpu_check.py's CPU mode.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from safetensors import safe_open
from workspaces import logged, make_workspace, subprocess_env

import pefty_whisper.train.recipe as train_module
from pefty_whisper.cli import main

REPO = Path(__file__).resolve().parents[2]
# Four 1 s utterances at `model.context: auto` with 2 s steps: 200 mel frames, not 3000.
AUTO_FRAMES = 200


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("base") / "tiny")


def train_recording(work: Path, base: Path, *options: str) -> dict:
    """`pefty train` in this process, recording the encoder's input frames (train and
    validation) and the optimizer DeepSpeed builds."""
    import deepspeed.runtime.engine as engine

    seen: dict = {"train_frames": set(), "eval_frames": set(), "optimizers": []}
    hook_context = train_module.allow_short_context

    def recording_context(model):
        hook_context(model)

        def record(module, args):
            key = "train_frames" if module.training else "eval_frames"
            seen[key].add(int(args[0].shape[-1]))

        model.get_encoder().conv1.register_forward_pre_hook(record)

    build_optimizer = engine.DeepSpeedEngine._configure_basic_optimizer

    def recording_optimizer(self, parameters):
        optimizer = build_optimizer(self, parameters)
        seen["optimizers"].append(type(optimizer))
        return optimizer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "allow_short_context", recording_context)
        patch.setattr(engine.DeepSpeedEngine, "_configure_basic_optimizer", recording_optimizer)
        result = CliRunner().invoke(
            main,
            ["train", "--round", "1", "--base", str(base), "--workdir", str(work), *options],
            catch_exceptions=False,
        )
    assert result.exit_code == 0, result.output
    return seen


@pytest.fixture(scope="module")
def bf16_zero2_round(tiny_base, tmp_path_factory) -> tuple[Path, dict]:
    """The default recipe (8-bit, ZeRO-2) in bf16, as on an Ampere card, at `auto` context."""
    work = make_workspace(tmp_path_factory.mktemp("bf16"))
    seen = train_recording(
        work,
        tiny_base,
        *("-o", "train.precision=bf16", "-o", "model.context=auto", "-o", "data.packing=false"),
        *("-o", "train.max_steps=4", "-o", "train.eval_steps=2"),
    )
    return work / "adapters" / "round1", seen


def test_default_deepspeed_preset_trains_with_torch_adamw(bf16_zero2_round):
    """DeepSpeed's FusedAdam would be JIT-compiled with nvcc at the first step."""
    _, seen = bf16_zero2_round
    assert seen["optimizers"] == [torch.optim.AdamW]


def test_validation_decodes_at_the_context_training_saw(bf16_zero2_round):
    """Whisper's generate pads short features to 3000 frames unless handed encoder outputs."""
    adapter, seen = bf16_zero2_round
    assert seen["train_frames"] == {AUTO_FRAMES}
    assert seen["eval_frames"] == {AUTO_FRAMES}
    assert len(logged(adapter, "eval_cer")) == 2


def test_adapter_is_saved_from_deepspeeds_fp32_masters(bf16_zero2_round):
    """Under bf16 DeepSpeed trains a bf16 copy; the adapter that gets merged is the fp32 one."""
    adapter, _ = bf16_zero2_round
    checkpoint = sorted((adapter / "checkpoints").glob("checkpoint-*"))[-1]
    for path in (adapter / "adapter_model.safetensors", checkpoint / "adapter_model.safetensors"):
        with safe_open(str(path), "pt") as weights:
            tensors = {key: weights.get_tensor(key) for key in weights.keys()}
        assert {t.dtype for t in tensors.values()} == {torch.float32}, path
        # Trained values carry more precision than bf16's 8-bit mantissa can hold.
        lora_b = [t for key, t in tensors.items() if "lora_B" in key]
        assert any((t.to(torch.bfloat16).float() != t).any() for t in lora_b), path


def test_bf16_round_without_deepspeed_validates(tiny_base, tmp_path):
    """`generate` runs without autocast: fp32 features met a bf16 model's conv1 and crashed."""
    work = make_workspace(tmp_path)
    seen = train_recording(
        work,
        tiny_base,
        *("--quant", "none", "--deepspeed", "none"),
        *("-o", "train.precision=bf16", "-o", "model.context=auto", "-o", "data.packing=false"),
        *("-o", "train.max_steps=2", "-o", "train.eval_steps=2"),
    )
    assert logged(work / "adapters" / "round1", "eval_cer")
    assert seen["eval_frames"] == {AUTO_FRAMES}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_readmes_deepspeed_launcher_command_runs(tiny_base, tmp_path):
    """`deepspeed --num_gpus N --module pefty_whisper.cli train ...`, with one process.

    The launcher passes `--local_rank=0` before the command's arguments.
    """
    work = make_workspace(tmp_path)
    launcher = Path(sys.executable).with_name("deepspeed")
    command = (
        [str(launcher)]
        if launcher.is_file()
        else [
            sys.executable,
            "-c",
            "import sys; from deepspeed.launcher.runner import main; main()",
        ]
    )
    command += ["--num_gpus", "1", "--master_port", str(free_port()), "--module"]
    command += ["pefty_whisper.cli", "train", "--round", "1", "--base", str(tiny_base)]
    command += ["--workdir", str(work), "-o", "train.max_steps=1", "-o", "train.eval_steps=1"]
    env = dict(subprocess_env(), DS_ACCELERATOR="cpu")
    process = subprocess.run(
        command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert "--local_rank" not in process.stderr.split("Traceback")[-1]
    record = json.loads((work / "adapters" / "round1" / "round.json").read_text())
    assert record["steps"] == 1 and record["world_size"] == 1


class NoCudaLibraries:
    """ctranslate2.models.Whisper where the driver sees a GPU but cuBLAS is missing."""

    error = "Library libcublas.so.12 is not found or cannot be loaded"

    def __init__(self, real: type, fails_at: str) -> None:
        self.real, self.fails_at, self.devices = real, fails_at, []

    def __call__(self, path: str, device: str = "cpu", **kwargs):
        self.devices.append(device)
        if device == "cuda" and self.fails_at == "load":
            raise RuntimeError(self.error)
        if device != "cuda":
            return self.real(path, device="cpu", **kwargs)
        model = self.real(path, device="cpu", **dict(kwargs, compute_type="int8"))
        error = self.error

        class OnCuda:
            def __getattr__(self, name):
                return getattr(model, name)

            def encode(self, *args, **kwargs):
                raise RuntimeError(error)

        return OnCuda()


@pytest.mark.parametrize("fails_at", ["load", "encode"])
def test_ct2_without_its_cuda_libraries_falls_back_to_cpu_int8(
    tiny_base, tmp_path, monkeypatch, fails_at
):
    ctranslate2 = pytest.importorskip("ctranslate2")
    from pefty_whisper.export.common import write_processor_files
    from pefty_whisper.inference import Transcriber, TranscriberOptions

    export = tmp_path / "ct2"
    ctranslate2.converters.TransformersConverter(str(tiny_base)).convert(
        str(export), quantization="float16"
    )
    write_processor_files(tiny_base, export)
    fake = NoCudaLibraries(ctranslate2.models.Whisper, fails_at)
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(ctranslate2.models, "Whisper", fake)
    # The engine's own logger, listened on directly: what propagates to pytest's capture
    # depends on what ran before (an in-process CLI run stops propagation, pytest versions
    # attach their handler in different places), so counting there is order-dependent.
    records: list[logging.LogRecord] = []
    listener = logging.Handler(logging.WARNING)
    listener.emit = records.append  # type: ignore[method-assign]
    engine_logger = logging.getLogger("pefty_whisper.inference.ct2_backend")
    engine_logger.addHandler(listener)
    try:
        transcriber = Transcriber(export, TranscriberOptions(backend="ct2", max_new_tokens=4))
    finally:
        engine_logger.removeHandler(listener)
    assert fake.devices == ["cuda", "cpu"]
    assert (transcriber.engine.device, transcriber.engine.compute_type) == ("cpu", "int8")
    warnings = [r.getMessage() for r in records]
    assert len(warnings) == 1 and "libcublas" in warnings[0] and "\n" not in warnings[0]
    rng = np.random.default_rng(0)
    assert len(transcriber.transcribe_batch([0.1 * rng.standard_normal(16000)])) == 1


def test_gpu_check_cpu_mode_writes_its_json(tmp_path):
    """scripts/gpu_check.py settles the GPU questions on a CUDA machine; --cpu keeps it alive."""
    out = tmp_path / "out"
    process = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_check.py"), "--cpu", "--out", str(out)],
        env=dict(subprocess_env(), DS_ACCELERATOR="cpu"),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    results = json.loads((out / "gpu_check.json").read_text())
    assert results["mode"] == "cpu" and not results["errors"], results["errors"]
    assert results["env"]["compute_dtype_if_sm75"] == "float16"
    assert results["env"]["compute_dtype_if_sm80"] == "bfloat16"
    memory = results["memory"]
    for quant in ("8bit", "8bit_keeping_inputs", "4bit", "none"):
        assert memory[quant]["activation_bytes"] > 0, quant
    assert memory["8bit"]["activation_bytes"] < memory["8bit_keeping_inputs"]["activation_bytes"]
    assert all(results["speed"][q]["samples_per_s"] > 0 for q in ("8bit", "4bit", "none"))
    train = results["train"]
    assert train["exit_code"] == 0 and train["adapter_dtypes"] == ["float32"]
    assert train["eval_frames"] and train["optimizer"] == "AdamW"
    for form in ("deepspeed --module", "torchrun -m"):
        assert results["launch"][form]["exit_code"] == 0, results["launch"][form]
    assert os.path.getsize(out / "gpu_check.json") < 1_000_000
