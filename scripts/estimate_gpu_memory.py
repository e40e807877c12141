"""Estimate the GPU memory of one LoRA training round per Whisper size, from parameter counts.

An estimate, not a measurement: it is what the README's GPU table prints where no GPU was at
hand to measure (`scripts/gpu_check.py` measures large-v3 and the rest on a CUDA machine).
Parameter counts are exact: each architecture is built on PyTorch's meta device (no weights, no
hub) and counted, and LoRA is attached with the toolkit's own default config. The formula:

    memory = frozen weights + 16 B x LoRA parameters + activations + 1 GB (CUDA context, allocator)

    frozen weights  every nn.Linear weight at 1 B (8bit) / 0.5 B (4bit, nf4 + double-quant
                    scales) / 2 B (none, fp16); everything else (embeddings, conv, norms,
                    biases) at 2 B
    LoRA            fp32 weight + fp32 gradient + Adam's two fp32 moments = 16 B per parameter
    activations     with gradient checkpointing: every layer's fp16 input kept
                    (2 B x batch x tokens x d_model), plus one layer recomputed in backward
                    (about 24 values per token per d_model, LoRA's inputs included, and its
                    attention matrix, 2 B x batch x heads x 1500^2, in case PyTorch picks its
                    math kernel over a fused one), plus the fp32 logits and their gradient
                    (8 B x batch x label tokens x vocabulary)
    int8 inputs     only with --int8-keeps-inputs (bitsandbytes' own behaviour, before
                    model.free_unused_int8_inputs): every 8-bit linear keeps its 16-bit input
                    on the autograd context, out of reach of checkpointing: 14 B x batch x
                    tokens x d_model per encoder layer (q/k/v, out_proj, fc1, and fc2's 4x-wide
                    input), 18 B x batch x label tokens x d_model per decoder layer

Example:
    python scripts/estimate_gpu_memory.py --batch-size 8 --label-tokens 112
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import torch

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pefty_whisper.config import LoraSection  # noqa: E402

GB = 1024**3
CUDA_OVERHEAD_GB = 1.0
LINEAR_BYTES = {"8bit": 1.0, "4bit": 0.5, "none": 2.0}
# Per token and d_model, the values one recomputed layer keeps for backward (attention and MLP
# inputs and outputs, fc1's 4x-wide output twice, LoRA's dropout inputs), in fp16.
RECOMPUTED_LAYER_VALUES = 24
# Whisper's sizes (the hub configs, written out: no hub here).
SIZES: dict[str, dict[str, int]] = {
    "small": dict(d_model=768, encoder_layers=12, decoder_layers=12, heads=12, n_mels=80),
    "medium": dict(d_model=1024, encoder_layers=24, decoder_layers=24, heads=16, n_mels=80),
    "large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=32, heads=20, n_mels=128),
    "large-v3-turbo": dict(d_model=1280, encoder_layers=32, decoder_layers=4, heads=20, n_mels=128),
}
ENCODER_TOKENS = 1500  # 30 s of audio; model.context: auto shrinks this to the batch's length


def build_on_meta(dims: dict[str, int]) -> torch.nn.Module:
    from _common import random_whisper
    from transformers import WhisperConfig

    config = WhisperConfig(
        vocab_size=51866 if dims["n_mels"] == 128 else 51865,
        num_mel_bins=dims["n_mels"],
        d_model=dims["d_model"],
        encoder_layers=dims["encoder_layers"],
        decoder_layers=dims["decoder_layers"],
        encoder_attention_heads=dims["heads"],
        decoder_attention_heads=dims["heads"],
        encoder_ffn_dim=4 * dims["d_model"],
        decoder_ffn_dim=4 * dims["d_model"],
    )
    return random_whisper(config, device="meta")


def lora_parameters(model: torch.nn.Module, lora: LoraSection) -> int:
    """r x (in + out) for every targeted nn.Linear, as peft's LoraConfig attaches them."""
    total = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".")[-1] in lora.target_modules:
            total += lora.r * (module.in_features + module.out_features)
    return total


# 16-bit values per token and d_model that bitsandbytes' int8 matmuls kept per layer: the shared
# q/k/v input, out_proj's, fc1's and fc2's (4 x d_model); the decoder adds cross-attention's
# q_proj and out_proj inputs (its k/v input is the encoder output, alive anyway).
INT8_KEPT_VALUES = {"encoder": 7, "decoder": 9}


def estimate(
    size: str, quant: str, batch: int, label_tokens: int, int8_keeps_inputs: bool = False
) -> dict[str, float]:
    dims = SIZES[size]
    model = build_on_meta(dims)
    linear = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not name.endswith("proj_out")  # tied embedding
    )
    total = sum(p.numel() for p in model.parameters())
    weights = linear * LINEAR_BYTES[quant] + (total - linear) * 2
    lora = lora_parameters(model, LoraSection())
    d = dims["d_model"]
    layers = dims["encoder_layers"] + dims["decoder_layers"]
    kept_inputs = (
        2
        * batch
        * d
        * (dims["encoder_layers"] * ENCODER_TOKENS + dims["decoder_layers"] * label_tokens)
    )
    recomputed = 2 * RECOMPUTED_LAYER_VALUES * batch * ENCODER_TOKENS * d
    recomputed += 2 * batch * dims["heads"] * ENCODER_TOKENS**2
    logits = 8 * batch * label_tokens * model.config.vocab_size
    int8_inputs = 0
    if quant == "8bit" and int8_keeps_inputs:
        int8_inputs = (
            2
            * batch
            * d
            * (
                INT8_KEPT_VALUES["encoder"] * dims["encoder_layers"] * ENCODER_TOKENS
                + INT8_KEPT_VALUES["decoder"] * dims["decoder_layers"] * label_tokens
            )
        )
    activations = kept_inputs + recomputed + logits + int8_inputs
    return {
        "parameters": total,
        "layers": layers,
        "weights_gb": weights / GB,
        "lora_parameters": lora,
        "lora_gb": 16 * lora / GB,
        "activations_gb": activations / GB,
        "int8_inputs_gb": int8_inputs / GB,
        "total_gb": (weights + 16 * lora + activations) / GB + CUDA_OVERHEAD_GB,
    }


@click.command()
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option(
    "--label-tokens",
    type=click.IntRange(min=1),
    default=112,
    show_default=True,
    help="Longest label in a batch. Packed windows (data.packing, the default) of the sample "
    "corpus run 89 tokens on average and up to 109; one utterance up to about 30 (KsponSpeech's "
    "longest sentences reach 60); a window's label is capped at 448.",
)
def main(batch_size: int, label_tokens: int) -> None:
    """Print the README's table: estimated GPU memory per Whisper size and quantization."""
    click.echo(
        "| model | parameters | LoRA params (r=32) | 8bit | 4bit | none (bf16) "
        "| 8bit, inputs kept (before the fix) |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for size in SIZES:
        rows = {q: estimate(size, q, batch_size, label_tokens) for q in LINEAR_BYTES}
        kept = estimate(size, "8bit", batch_size, label_tokens, int8_keeps_inputs=True)
        first = rows["8bit"]
        cells = [
            size,
            f"{first['parameters'] / 1e6:,.0f} M",
            f"{first['lora_parameters'] / 1e6:,.1f} M",
            *(f"{rows[q]['total_gb']:.1f} GB" for q in ("8bit", "4bit", "none")),
            f"{kept['total_gb']:.1f} GB",
        ]
        click.echo("| " + " | ".join(cells) + " |")
    click.echo(
        f"\nEstimates at batch {batch_size}, 30 s inputs, labels of {label_tokens} tokens, "
        "gradient checkpointing on; see this script's docstring for the formula."
    )


if __name__ == "__main__":
    main()
