"""import-ct2: CTranslate2 Whisper -> transformers, checked by round trips and on real whisper-base.

A tiny random Whisper is exported with CTranslate2's own converter and imported back: float32
must give identical tensors and logits, float16 the original rounded to float16. The real
whisper-base from the offline packages must transcribe synthetic English speech.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile
import soxr
import torch
from fixtures import save_tiny_whisper, whisper_processor
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from pefty_whisper.demo.weights import (
    assemble_offline_whisper_base,
    offline_base_ct2_files_available,
    offline_base_tokenizer_dir,
)
from pefty_whisper.errors import ModelError
from pefty_whisper.export.import_ct2 import import_ct2, read_ct2_config
from pefty_whisper.whisper.ct2_file import Ct2ModelFile
from pefty_whisper.whisper.tokens import tokenizer_language_ids, whisper_suppress_tokens

KOREAN = "안녕하세요 오늘 날씨가 정말 좋네요"


def convert_to_ct2(model_dir: Path, out_dir: Path, quantization: str) -> Path:
    """The real CTranslate2 converter, as a user would run it (skips without the extra)."""
    ctranslate2 = pytest.importorskip("ctranslate2", reason="pip install 'pefty-whisper[export]'")

    converter = ctranslate2.converters.TransformersConverter(
        str(model_dir), copy_files=["tokenizer.json", "preprocessor_config.json"]
    )
    converter.convert(str(out_dir), quantization=quantization)
    return out_dir


def load(model_dir: Path) -> WhisperForConditionalGeneration:
    return WhisperForConditionalGeneration.from_pretrained(model_dir).eval()


def random_mel(n_mels: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, n_mels, 3000, generator=torch.Generator().manual_seed(seed))


def logits(model: WhisperForConditionalGeneration, mel: torch.Tensor) -> torch.Tensor:
    prompt = torch.tensor([[50258, 50264, 50359, 50363, 1000, 2000]])
    with torch.inference_mode():
        return model(input_features=mel, decoder_input_ids=prompt).logits


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("tiny") / "model", seed=1)


@pytest.fixture(scope="module")
def tiny_ct2(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_to_ct2(tiny, tmp_path_factory.mktemp("ct2") / "fp32", "float32")


@pytest.fixture(scope="module")
def imported_fp32(tiny_ct2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    report = import_ct2(tiny_ct2, tmp_path_factory.mktemp("fp32") / "hf")
    assert report.source_dtype == "float32"
    assert (report.n_mels, report.vocab_size, report.d_model) == (80, 51865, 64)
    assert report.encoder_attention_heads == report.decoder_attention_heads == 4
    assert report.tied_embeddings
    return report.out_dir


def assert_same_weights(original: torch.nn.Module, imported: torch.nn.Module, fp16=False) -> None:
    expected, got = original.state_dict(), imported.state_dict()
    assert set(expected) == set(got)
    for name, tensor in expected.items():
        if fp16:
            tensor = tensor.half().float()  # CT2's float16 export rounds to nearest, as .half()
        assert got[name].dtype == torch.float32, name
        assert torch.equal(got[name], tensor), name


def test_float32_round_trip_is_exact(tiny: Path, imported_fp32: Path) -> None:
    original, imported = load(tiny), load(imported_fp32)
    assert_same_weights(original, imported)
    for key in ("num_mel_bins", "max_source_positions", "max_target_positions", "encoder_ffn_dim"):
        assert getattr(imported.config, key) == getattr(original.config, key)
    # Tied output projection survives (CT2 stores it as an alias of the embeddings).
    assert (
        imported.proj_out.weight.data_ptr() == imported.model.decoder.embed_tokens.weight.data_ptr()
    )
    mel = random_mel(80)
    assert torch.equal(logits(imported, mel), logits(original, mel))


def test_imported_model_decodes_korean_without_being_told(imported_fp32: Path) -> None:
    model = load(imported_fp32)
    processor = WhisperProcessor.from_pretrained(imported_fp32)
    seen: list[list[int]] = []
    # The first decoder call shows the prompt generate built from the generation config.
    hook = model.model.decoder.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["input_ids"][0].tolist()), with_kwargs=True
    )
    with torch.inference_mode():
        model.generate(random_mel(80), max_new_tokens=2)
    hook.remove()
    tokens = processor.tokenizer.convert_ids_to_tokens(seen[0])
    assert tokens == ["<|startoftranscript|>", "<|ko|>", "<|transcribe|>", "<|notimestamps|>"]
    assert (imported_fp32 / "preprocessor_config.json").is_file()
    ids = processor.tokenizer(KOREAN).input_ids
    assert ids == whisper_processor().tokenizer(KOREAN).input_ids


def test_float16_export_matches_within_rounding(tiny: Path, tmp_path: Path) -> None:
    ct2_dir = convert_to_ct2(tiny, tmp_path / "ct2", "float16")
    report = import_ct2(ct2_dir, tmp_path / "hf")
    assert report.source_dtype == "float16"
    original, imported = load(tiny), load(report.out_dir)
    assert_same_weights(original, imported, fp16=True)
    mel = random_mel(80)
    torch.testing.assert_close(logits(imported, mel), logits(original, mel), atol=2e-2, rtol=0)


def test_128_mel_round_trip(tmp_path: Path) -> None:
    tiny = save_tiny_whisper(tmp_path / "tiny128", seed=2, n_mels=128)
    ct2_dir = convert_to_ct2(tiny, tmp_path / "ct2", "float32")
    report = import_ct2(ct2_dir, tmp_path / "hf")
    assert report.n_mels == 128
    original, imported = load(tiny), load(report.out_dir)
    assert_same_weights(original, imported)
    mel = random_mel(128)
    assert torch.equal(logits(imported, mel), logits(original, mel))
    assert WhisperProcessor.from_pretrained(report.out_dir).feature_extractor.feature_size == 128


def test_existing_output_needs_force(tiny_ct2: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ModelError, match="already exists"):
        import_ct2(tiny_ct2, out)
    assert import_ct2(tiny_ct2, out, force=True).out_dir == out
    assert (out / "model.safetensors").is_file()


def test_truncated_model_bin_is_refused(tiny_ct2: Path, tmp_path: Path) -> None:
    # What a user gets after copying only the first part of a split model.bin.
    ct2_dir = tmp_path / "ct2"
    shutil.copytree(tiny_ct2, ct2_dir)
    data = (ct2_dir / "model.bin").read_bytes()
    (ct2_dir / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated"):
        import_ct2(ct2_dir, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_int8_export_is_refused(tiny: Path, tmp_path: Path) -> None:
    ct2_dir = convert_to_ct2(tiny, tmp_path / "ct2", "int8")
    with pytest.raises(ModelError, match="int8.*float16 or float32"):
        import_ct2(ct2_dir, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_directory_without_model_bin_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelError, match=re.escape(f"{tmp_path} has no model.bin")):
        import_ct2(tmp_path, tmp_path / "out")


def write_model_bin(path: Path, version: int, spec: str) -> None:
    """A minimal model.bin header with no variables, for the refusal tests."""

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    path.write_bytes(struct.pack("<I", version) + string(spec) + struct.pack("<III", 1, 0, 0))


@pytest.mark.parametrize(
    ("version", "spec", "message"),
    [(5, "WhisperSpec", "format version 5"), (6, "TransformerSpec", "TransformerSpec model, not")],
)
def test_wrong_version_or_model_kind_is_refused(
    tmp_path: Path, version: int, spec: str, message: str
) -> None:
    (tmp_path / "config.json").write_text("{}")
    write_model_bin(tmp_path / "model.bin", version, spec)
    with pytest.raises(ModelError, match=message):
        import_ct2(tmp_path, tmp_path / "out")


def test_real_tokenizer_ids_and_derived_generation_lists() -> None:
    tokenizer = whisper_processor().tokenizer
    assert len(tokenizer) == 51865
    ids = tokenizer(KOREAN).input_ids
    assert tokenizer.convert_ids_to_tokens(ids[:4]) == [
        "<|startoftranscript|>",
        "<|ko|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert tokenizer.decode(ids, skip_special_tokens=True) == KOREAN
    assert tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50364, 51864]
    # The suppress and language lists derived from the tokenizer are openai's own.
    ct2_config = read_ct2_config(offline_base_tokenizer_dir())
    assert whisper_suppress_tokens(tokenizer) == ct2_config["suppress_ids"]
    assert list(tokenizer_language_ids(tokenizer).values()) == ct2_config["lang_ids"]


def espeak_16k(text: str, voice: str, path: Path) -> np.ndarray:
    # Slower speech with word gaps: at espeak-ng's default rate whisper-base hears "The low
    # world" for "Hello world".
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "120", "-g", "5", "-w", str(path), text], check=True
    )
    audio, rate = soundfile.read(path, dtype="float32")
    return soxr.resample(audio, rate, 16_000).astype(np.float32)


def transcribe(model_dir: Path, audio: np.ndarray, language: str) -> str:
    model, processor = load(model_dir), WhisperProcessor.from_pretrained(model_dir)
    features = processor(audio, sampling_rate=16_000, return_tensors="pt").input_features
    with torch.inference_mode():
        ids = model.generate(features, language=language)
    return processor.batch_decode(ids, skip_special_tokens=True)[0]


@pytest.mark.skipif(
    not offline_base_ct2_files_available(),
    reason="offline whisper-base packages not installed: pip install 'pefty-whisper[demo]'",
)
@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_whisper_base_transcribes_english(tmp_path: Path) -> None:
    ct2_dir = assemble_offline_whisper_base(tmp_path / "ct2")
    report = import_ct2(ct2_dir, tmp_path / "hf")
    assert report.source_dtype == "float16"
    assert (report.d_model, report.encoder_layers, report.decoder_layers) == (512, 6, 6)
    assert report.encoder_attention_heads == 8
    assert report.num_parameters == 72_593_920
    # Lossless: exporting the import to float16 again gives the packaged weights bit for bit.
    original = Ct2ModelFile(ct2_dir / "model.bin")
    again = Ct2ModelFile(
        convert_to_ct2(report.out_dir, tmp_path / "again", "float16") / "model.bin"
    )
    for name in original.variables:
        assert torch.equal(again.read(name), original.read(name)), name
    assert read_ct2_config(tmp_path / "again") == read_ct2_config(ct2_dir)

    audio = espeak_16k(
        "Hello world, this is a test of the speech recognition system.", "en-us", tmp_path / "a.wav"
    )
    text = transcribe(report.out_dir, audio, language="english")
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    normalized = " ".join(words)
    assert "hello world" in normalized, text
    assert "speech recognition" in normalized, text
