"""What the benchmarks and checks share: random Whisper checkpoints, Markdown tables, the machine.

The random-Whisper builder is the tests' too (tests/fixtures.py imports it), so a benchmark's
model and a test's model are built, randomised and saved the same way: through the package's
own `whisper_config` and `build_generation_config`, with the real tokenizer where one is given.
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    from pefty_whisper.whisper.processor import WhisperDims


def random_whisper(
    config: WhisperConfig, seed: int = 0, randomize: bool = False, device: Any = None
) -> WhisperForConditionalGeneration:
    """A Whisper of `config`'s shapes with random weights (device "meta": no memory at all).

    Memory and speed depend on shapes, not on weight values, so random weights measure the real
    model; `randomize` gives every tensor distinct values (layer norms too, which init to 1 and
    0), so a tiny model moves its tokens and a test comparing weights notices any swap.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(seed)
    with torch.device(device or "cpu"):
        model = WhisperForConditionalGeneration(config)
    if randomize:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                noise = torch.randn(param.shape, generator=generator) * 0.05
                noise = noise.to(param.device)
                param.copy_(noise + 1.0 if name.endswith("layer_norm.weight") else noise)
    return model


def save_random_whisper(
    out_dir: Path,
    dims: WhisperDims,
    processor: WhisperProcessor,
    seed: int = 0,
    randomize: bool = True,
    dtype: torch.dtype | None = None,
    device: Any = None,
) -> Path:
    """A random multilingual Whisper checkpoint that loads like a real one: weights, processor,
    a generation config for Korean transcription, and the preprocessor_config.json CTranslate2
    needs. Built in a sibling directory and renamed, so a killed build never looks finished."""
    from pefty_whisper.whisper.processor import (
        build_generation_config,
        whisper_config,
        write_preprocessor_config,
    )

    out_dir = Path(out_dir)
    config = whisper_config(dims, processor.tokenizer, tied=True)
    model = random_whisper(config, seed, randomize, device)
    model.generation_config = build_generation_config(
        processor.tokenizer,
        max_length=dims.max_target_positions,
        num_decoder_layers=dims.decoder_layers,
        num_decoder_heads=dims.decoder_attention_heads,
        language="korean",
        task="transcribe",
    )
    if dtype is not None:
        model = model.to(dtype)
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    processor.save_pretrained(partial)
    write_preprocessor_config(partial, processor.feature_extractor)
    if not out_dir.exists():
        partial.rename(out_dir)
        return out_dir
    for path in partial.iterdir():  # into a folder the caller made: its other files stay
        os.replace(path, out_dir / path.name)
    partial.rmdir()
    return out_dir


def whisper_dims(
    n_mels: int, d_model: int, layers: int, heads: int, vocab_size: int = 51865
) -> WhisperDims:
    """Whisper's shapes as the released sizes have them: ffn 4 x d_model, 1500 audio and
    448 text positions."""
    from pefty_whisper.whisper.processor import WhisperDims
    from pefty_whisper.whisper.tokens import MAX_TARGET_POSITIONS

    return WhisperDims(
        n_mels=n_mels,
        d_model=d_model,
        vocab_size=vocab_size,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=4 * d_model,
        decoder_ffn_dim=4 * d_model,
        max_source_positions=1500,
        max_target_positions=MAX_TARGET_POSITIONS,
    )


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table; numbers are formatted by the caller (see fmt and ratio)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ratio(value: float | None, reference: float | None) -> str:
    """`value` against the baseline's figure, as `1.23x`."""
    if value is None or not reference:
        return "n/a"
    return f"{value / reference:.2f}x"


def machine_info(*packages: str) -> dict[str, Any]:
    """What a figure was measured on: the CPUs and their load, the device, the versions of
    torch and of `packages`."""
    import torch

    from pefty_whisper.files import package_versions

    cuda = torch.cuda.is_available()
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "versions": package_versions(*packages),
    }
