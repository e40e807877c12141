"""Benchmark the activation memory of one LoRA training step: 8-bit base against `none`, on the CPU.

What gradient checkpointing is for: the memory a forward pass keeps alive for backward. On the
CPU there is no allocator counter to read, so every tensor an operator creates is tracked (a
TorchDispatchMode holding weak references to storages) and the bytes still alive are summed:
after the forward (what backward will need) and at the peak of forward plus backward. Weights
and inputs made before the step are not counted.

Configurations, each with gradient checkpointing on (the toolkit's default) and LoRA attached
with the default config:
  8bit                 `--quant 8bit` as the toolkit loads it (bitsandbytes' unused saved
                       inputs freed, see model.free_unused_int8_inputs)
  8bit-keeping-inputs  `--quant 8bit` with bitsandbytes' upstream behaviour: every int8
                       linear's input stays on its autograd context until backward
  none                 `--quant none`

Example:
    python scripts/bench_memory.py --size base --batch-size 2 --seconds 30
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Whisper's sizes, written out (no hub here); tiny is the tests' model.
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=64, layers=2, heads=4, n_mels=80),
    "base": dict(d_model=512, layers=6, heads=8, n_mels=80),
    "small": dict(d_model=768, layers=12, heads=12, n_mels=80),
    "large-v3": dict(d_model=1280, layers=32, heads=20, n_mels=128),
}
CONFIGS = ("8bit", "8bit-keeping-inputs", "none")
LABEL_TOKENS = 32


class LiveTensorMeter(TorchDispatchMode):
    """Bytes of the tensors operators created that are still alive, and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.storages: dict[int, tuple[StorageWeakRef, int]] = {}
        self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        # Views and in-place results share an input's storage: nothing new was allocated (a
        # weight's transpose is the weight).
        inputs = {
            t.untyped_storage()._cdata
            for t in tree_leaves((args, kwargs))
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and tensor.device.type != "meta":
                storage = tensor.untyped_storage()
                key = storage._cdata
                if key in inputs:
                    continue
                known = self.storages.get(key)
                if known is None or known[0].expired():
                    self.storages[key] = (StorageWeakRef(storage), storage.nbytes())
        self.peak = max(self.peak, self.live_bytes())
        return out

    def live_bytes(self) -> int:
        dead = [key for key, (ref, _) in self.storages.items() if ref.expired()]
        for key in dead:
            del self.storages[key]
        return sum(size for _, size in self.storages.values())


@contextlib.contextmanager
def int8_inputs_kept() -> Iterator[None]:
    """bitsandbytes' upstream int8 matmuls for the duration (the behaviour before the fix)."""
    from bitsandbytes.autograd import _functions as functions

    saved = functions.MatMul8bitLt, functions.MatMul8bitFp
    for name in ("MatMul8bitLt", "MatMul8bitFp"):
        cls = getattr(functions, name)
        if cls.__name__.endswith("FreeingInput"):
            setattr(functions, name, cls.__bases__[0])
    try:
        yield
    finally:
        functions.MatMul8bitLt, functions.MatMul8bitFp = saved


def save_random_whisper(out_dir: Path, size: str) -> Path:
    """A random-weight Whisper of `size` with a tiny vocabulary (no tokenizer needed)."""
    from _common import random_whisper
    from transformers import WhisperConfig

    dims = SIZES[size]
    config = WhisperConfig(
        vocab_size=1000,
        num_mel_bins=dims["n_mels"],
        d_model=dims["d_model"],
        encoder_layers=dims["layers"],
        decoder_layers=dims["layers"],
        encoder_attention_heads=dims["heads"],
        decoder_attention_heads=dims["heads"],
        encoder_ffn_dim=4 * dims["d_model"],
        decoder_ffn_dim=4 * dims["d_model"],
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    random_whisper(config).save_pretrained(out_dir)
    return out_dir


def build_lora_model(base: Path, quant: str) -> Any:
    from pefty_whisper.config import LoraSection
    from pefty_whisper.train.model import attach_lora, load_base_model
    from pefty_whisper.whisper.context import allow_short_context

    model = load_base_model(base, "8bit" if quant.startswith("8bit") else quant, "fp32")
    allow_short_context(model)
    return attach_lora(model, LoraSection(), gradient_checkpointing=True).train()


def measure_cpu_step(model: Any, batch: int, frames: int, keep_inputs: bool) -> dict[str, float]:
    """Activation and peak bytes of one forward and backward, tracked per tensor."""
    from pefty_whisper.train.trainer import token_mean_loss

    config = model.base_model.model.config
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(batch, config.num_mel_bins, frames, generator=generator)
    ids = torch.randint(3, config.vocab_size, (batch, LABEL_TOKENS), generator=generator)
    kept = int8_inputs_kept() if keep_inputs else contextlib.nullcontext()
    with kept:
        step(model, features, ids, token_mean_loss)  # warm-up: LoRA gradients exist after it
        model.zero_grad(set_to_none=False)
        gc.collect()
        with LiveTensorMeter() as meter:
            outputs = model(input_features=features, decoder_input_ids=ids)
            after_forward = meter.live_bytes()
            token_mean_loss(outputs, ids).backward()
            del outputs
    return {"activation_bytes": after_forward, "peak_bytes": meter.peak}


def step(model: Any, features: torch.Tensor, ids: torch.Tensor, loss_fn: Any) -> None:
    loss_fn(model(input_features=features, decoder_input_ids=ids), ids).backward()


@click.command()
@click.option("--size", type=click.Choice(list(SIZES)), default="base", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--seconds", type=click.FloatRange(0.04, 30), default=30.0, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def main(size: str, batch_size: int, seconds: float, json_out: Path | None) -> None:
    """Print activation and peak memory of one step per configuration, and their ratios."""
    frames = 2 * round(seconds * 50)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = save_random_whisper(Path(tmp) / size, size)
        for name in CONFIGS:
            model = build_lora_model(base, "8bit" if name.startswith("8bit") else name)
            results[name] = measure_cpu_step(model, batch_size, frames, name.endswith("inputs"))
            del model
            gc.collect()
    reference = results["none"]
    click.echo(
        f"whisper-{size} shapes, batch {batch_size}, {seconds:g} s ({frames} frames), "
        "gradient checkpointing on, CPU, fp32\n"
        "| config | activations MB | vs none | peak MB | vs none |\n|---|---:|---:|---:|---:|"
    )
    for name, figures in results.items():
        click.echo(
            f"| {name} | {figures['activation_bytes'] / 2**20:,.1f} | "
            f"{figures['activation_bytes'] / reference['activation_bytes']:.2f}x | "
            f"{figures['peak_bytes'] / 2**20:,.1f} | "
            f"{figures['peak_bytes'] / reference['peak_bytes']:.2f}x |"
        )
    if json_out is not None:
        json_out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
