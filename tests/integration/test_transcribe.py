"""Transcriber: one decode path for PyTorch, CTranslate2 and ONNX, on real files, held across calls.

Tiny random Whispers (with the real tokenizer) check that every backend yields the same tokens
and text, long files are cut into 30 s windows, and the object serves many calls. The real
whisper-base (offline packages) checks that the path transcribes actual speech.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fixtures import clip, save_tiny_whisper

from pefty_whisper.data.audio import load_audio
from pefty_whisper.errors import ConfigError, DataError, ModelError
from pefty_whisper.export import export_ct2, export_onnx
from pefty_whisper.inference import Transcriber, TranscriberOptions
from pefty_whisper.whisper.model_dir import ModelDir
from pefty_whisper.workspace import ExportRecord

# Every backend is compared here: CTranslate2 and onnxruntime come with the [export] extra.
pytest.importorskip("ctranslate2", reason="pip install 'pefty-whisper[export]'")
pytest.importorskip("onnxruntime", reason="pip install 'pefty-whisper[export]'")

RATE = 16_000
MAX_NEW_TOKENS = 10
# One thread: these models are tiny, and the test machine is shared (threads only contend).
OPTIONS = TranscriberOptions(
    max_new_tokens=MAX_NEW_TOKENS, batch_size=4, device="cpu", num_threads=1
)
FLOAT32 = replace(OPTIONS, compute_type="float32")  # ct2's auto is int8 on the CPU


pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [clip(1.5, 140, 0), clip(3.0, 260, 1), clip(6.0, 90, 2), clip(0.5, 400, 3)]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same tiny model as a transformers checkpoint, a CTranslate2 and an ONNX export."""
    root = tmp_path_factory.mktemp("models")
    tiny = save_tiny_whisper(root / "merged", seed=5)
    probe = [clip(1.0, 200, 9)]
    ct2 = export_ct2(tiny, root / "ct2", "float32", probe, probe_options=OPTIONS).out_dir
    # The fast (torchscript) exporter: test_export covers the default one.
    onnx = export_onnx(
        tiny, root / "onnx", probe_audio=probe, probe_options=OPTIONS, exporter="torchscript"
    ).out_dir
    return {"torch": tiny, "ct2": ct2, "onnx": onnx}


@pytest.fixture(scope="module")
def ct2(models: dict[str, Path]) -> Transcriber:
    return Transcriber(models["ct2"], FLOAT32)


def test_every_backend_gives_the_same_tokens_and_text(
    models: dict[str, Path], clips: list[np.ndarray]
) -> None:
    tokens, texts = {}, {}
    for backend, directory in models.items():
        transcriber = Transcriber(directory, FLOAT32)
        assert transcriber.backend == backend
        assert transcriber.language == "ko"
        tokens[backend] = transcriber.transcribe_tokens(clips)
        texts[backend] = transcriber.transcribe_batch(clips)
        assert transcriber.timings.encoder_s > 0 and transcriber.timings.decoder_s > 0
    assert tokens["ct2"] == tokens["torch"] and tokens["onnx"] == tokens["torch"]
    assert texts["ct2"] == texts["torch"] and texts["onnx"] == texts["torch"]
    assert all(0 < len(t) <= MAX_NEW_TOKENS for t in tokens["torch"])
    assert all(text == text.strip() and "<|" not in text for text in texts["torch"])


def test_auto_context_pads_a_batch_to_its_longest_clip_on_torch_and_ct2(
    models: dict[str, Path], clips: list[np.ndarray]
) -> None:
    auto = replace(FLOAT32, context="auto", context_step_s=2.0)
    tokens = {}
    for backend in ("torch", "ct2"):
        transcriber = Transcriber(models[backend], auto)
        assert transcriber.context == "auto"
        # 1.5 s and 3.0 s clips: padded to 4 s (two 2 s steps), 400 frames instead of 3000.
        assert transcriber.features(clips[:2]).shape == (2, 80, 400)
        tokens[backend] = transcriber.transcribe_tokens(clips)
    assert tokens["ct2"] == tokens["torch"]
    # The context changes what a random model hears, so the tokens differ from full context.
    assert tokens["torch"] != Transcriber(models["torch"], FLOAT32).transcribe_tokens(clips)
    # The ONNX encoder was exported for 30 s inputs: it decodes at the full context.
    assert Transcriber(models["onnx"], auto).context == "full"


@pytest.fixture(scope="module")
def ct2_windows(models: dict[str, Path]) -> Transcriber:
    """Fixed consecutive 30 s windows, no VAD: the benchmarks' baseline of the old path."""
    return Transcriber(models["ct2"], replace(FLOAT32, longform="chunked", vad="never"))


def test_a_70_s_file_is_decoded_in_three_windows(ct2_windows: Transcriber, tmp_path: Path) -> None:
    # Chunked decoding without VAD (test_longform has the rest).
    ct2 = ct2_windows
    pieces = [clip(30.0, 150, 10), clip(30.0, 300, 11), clip(10.0, 220, 12)]
    path = tmp_path / "long.wav"
    soundfile.write(path, np.concatenate(pieces), RATE, subtype="FLOAT")
    result = ct2.transcribe_files([path])[0]
    assert [(s.start, s.end) for s in result.segments] == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]
    assert result.duration_s == pytest.approx(70.0)
    assert [s.text for s in result.segments] == ct2.transcribe_batch(pieces)
    assert result.text == " ".join(s.text for s in result.segments if s.text)
    assert result.path == str(path) and result.seconds > 0
    assert result.real_time_factor == pytest.approx(result.seconds / 70.0)


def test_pcm_wav_and_flac_give_the_same_transcript(
    ct2_windows: Transcriber, tmp_path: Path
) -> None:
    ct2 = ct2_windows
    samples = (clip(2.0, 180, 13) * 20000).astype("<i2")  # int16, so every format is lossless
    (tmp_path / "a.pcm").write_bytes(samples.tobytes())  # KsponSpeech's headerless pcm
    soundfile.write(tmp_path / "a.wav", samples, RATE, subtype="PCM_16")
    soundfile.write(tmp_path / "a.flac", samples, RATE, subtype="PCM_16")
    paths = [tmp_path / "a.pcm", tmp_path / "a.wav", tmp_path / "a.flac"]
    finished: list[int] = []
    results = ct2.transcribe_files(paths, progress=finished.append)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert len({r.text for r in results}) == 1
    assert results[0].text == ct2.transcribe_batch([samples.astype(np.float32) / 32768])[0]
    assert sum(finished) == 3
    assert all(r.duration_s == pytest.approx(2.0) for r in results)


def test_backend_is_detected_from_the_files(models: dict[str, Path]) -> None:
    for backend, directory in models.items():
        assert ModelDir(directory).kind == backend
    with pytest.raises(ModelError, match=r"is a torch model directory, not ct2"):
        Transcriber(models["torch"], replace(OPTIONS, backend="ct2"))


def test_one_transcriber_serves_many_calls_without_reloading(
    models: dict[str, Path], clips: list[np.ndarray], tmp_path: Path
) -> None:
    transcriber = Transcriber(models["onnx"], OPTIONS)
    loaded = transcriber.model
    first = transcriber.transcribe_batch(clips[:2])
    encoder_time = transcriber.timings.encoder_s
    path = tmp_path / "x.wav"
    soundfile.write(path, clips[2], RATE)
    transcriber.transcribe_file(path)
    assert transcriber.transcribe_batch(clips[:2]) == first
    assert transcriber.model is loaded  # the same sessions, not reloaded ones
    assert all(a is b for a, b in zip(transcriber.model, loaded, strict=True))
    assert transcriber.timings.encoder_s > encoder_time  # timings accumulate across calls


def test_language_comes_from_the_model_unless_overridden(models: dict[str, Path]) -> None:
    korean = Transcriber(models["ct2"], OPTIONS)
    english = Transcriber(models["ct2"], replace(OPTIONS, language="english"))
    vocab = korean.tokenizer.get_vocab()
    sot, transcribe, no_ts = (
        vocab[t] for t in ("<|startoftranscript|>", "<|transcribe|>", "<|notimestamps|>")
    )
    assert korean.prompt_ids() == [sot, vocab["<|ko|>"], transcribe, no_ts]
    assert english.language == "en"
    assert english.prompt_ids() == [sot, vocab["<|en|>"], transcribe, no_ts]


def test_errors_name_the_input_and_the_way_out(models: dict[str, Path], tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match=r"holds a LoRA adapter, not a model: run `pefty merge`"):
        Transcriber(adapter, OPTIONS)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match=r"empty is not a Whisper model directory.*model\.bin"):
        _ = ModelDir(empty).kind
    with pytest.raises(ModelError, match=r"missing: model directory not found"):
        Transcriber(tmp_path / "missing", OPTIONS)
    with pytest.raises(ConfigError, match=r"onnx backend decodes greedily only"):
        Transcriber(models["onnx"], replace(OPTIONS, beam_size=4))
    with pytest.raises(ConfigError, match=r"unknown backend 'tensorrt'"):
        Transcriber(models["onnx"], replace(OPTIONS, backend="tensorrt"))

    transcriber = Transcriber(models["onnx"], OPTIONS)
    with pytest.raises(DataError, match=r"audio 1: 31\.0 s is longer than .* 30 s context"):
        transcriber.transcribe_batch([clip(1.0, 100, 0), clip(31.0, 100, 0)])
    with pytest.raises(DataError, match=r"nothing\.wav: audio file not found"):
        transcriber.transcribe_file(tmp_path / "nothing.wav")


# --------------------------------------------------------------------------------------------
# Real whisper-base, real (synthetic) speech
# --------------------------------------------------------------------------------------------

ENGLISH = "Hello world, this is a test of the speech recognition system."


@pytest.fixture(scope="module")
def english_speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "hello.wav"
    command = ["espeak-ng", "-v", "en-us", "-s", "120", "-g", "5", "-w", str(path), ENGLISH]
    subprocess.run(command, check=True, capture_output=True)
    return path


def test_real_whisper_base_transcribes_speech_with_torch_and_ct2_int8(
    whisper_base: Path, english_speech: Path, tmp_path: Path
) -> None:
    # Our checkpoints decode Korean by default; this speech is English, so say so.
    options = TranscriberOptions(language="en", max_new_tokens=40, device="cpu")
    report = export_ct2(
        whisper_base,
        tmp_path / "base-ct2-int8",
        "int8",
        probe_audio=[load_audio(english_speech)],
        probe_options=options,
    )
    # The export's probe decoded the speech with PyTorch and with the int8 export.
    probe = ExportRecord.read(report.out_dir).to_dict()["probe"]
    assert "hello world" in probe["torch"][0].lower(), probe["torch"]
    assert "hello world" in probe["exported"][0].lower(), probe["exported"]
    # And through the file API, as `pefty transcribe` would.
    result = Transcriber(report.out_dir, options).transcribe_file(english_speech)
    assert "hello world" in result.text.lower()
    assert "speech recognition" in result.text.lower()
