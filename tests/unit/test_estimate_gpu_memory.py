"""The README's GPU table comes from scripts/estimate_gpu_memory.py: its LoRA count must be
what peft really attaches, and the table must print."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fixtures import tiny_whisper_config
from transformers import WhisperForConditionalGeneration

from pefty_whisper.config import LoraSection
from pefty_whisper.train.model import attach_lora, count_parameters

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "estimate_gpu_memory.py"


def load_script():
    spec = importlib.util.spec_from_file_location("estimate_gpu_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lora_count_is_what_peft_attaches() -> None:
    script = load_script()
    config = tiny_whisper_config(
        d_model=64, decoder_layers=3, encoder_ffn_dim=256, decoder_ffn_dim=256, vocab_size=120
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    expected = script.lora_parameters(model, LoraSection())
    trainable, _ = count_parameters(attach_lora(model, LoraSection(), gradient_checkpointing=False))
    assert trainable == expected


def test_table_has_every_size_and_8bit_saves_memory() -> None:
    script = load_script()
    result = CliRunner().invoke(script.main, ["--batch-size", "8"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == list(script.SIZES)
    for size in script.SIZES:
        int8 = script.estimate(size, "8bit", 8, 64)
        fp16 = script.estimate(size, "none", 8, 64)
        assert int8["weights_gb"] < 0.6 * fp16["weights_gb"]
        assert int8["total_gb"] < fp16["total_gb"]
    large = script.estimate("large-v3", "8bit", 8, 64)
    assert 1.5e9 < large["parameters"] < 1.6e9  # whisper-large-v3 has 1,550 M parameters


def test_int8_inputs_term_is_what_bitsandbytes_kept() -> None:
    """Before model.free_unused_int8_inputs, each 8-bit linear's 16-bit input stayed alive:
    14 bytes per frame and d_model per encoder layer, 18 per label token per decoder layer."""
    script = load_script()
    freed = script.estimate("large-v3", "8bit", 8, 64)
    kept = script.estimate("large-v3", "8bit", 8, 64, int8_keeps_inputs=True)
    expected = (14 * 8 * 1500 * 1280 * 32 + 18 * 8 * 64 * 1280 * 32) / 2**30
    assert kept["int8_inputs_gb"] == freed["int8_inputs_gb"] + expected
    assert kept["total_gb"] - freed["total_gb"] == pytest.approx(expected)
    assert freed["total_gb"] < 12 < kept["total_gb"]  # a 12 GB card: fits only with the fix
    assert script.estimate("large-v3", "none", 8, 64, int8_keeps_inputs=True)["int8_inputs_gb"] == 0
