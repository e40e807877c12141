"""Long recordings: VAD chunks, sequential timestamp decoding, silence and the coverage check.

The chunking and coverage rules are checked on planted times; then espeak-ng sentences with a
long silent stretch go through every backend and path of a tiny random Whisper (which writes
nonsense, so the checks are on times, silence and the reported path, not on words).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fixtures import save_tiny_whisper

from pefty_whisper.cli import main
from pefty_whisper.data.audio import load_audio
from pefty_whisper.errors import ConfigError
from pefty_whisper.inference import Segment, Transcriber, TranscriberOptions
from pefty_whisper.inference.longform import (
    chunk_spans,
    monotonic,
    sparse_segments,
    uncovered_speech,
    window_spans,
)

RATE = 16_000
OPTIONS = TranscriberOptions(max_new_tokens=8, batch_size=4, device="cpu", num_threads=1)
SENTENCES = [
    "안녕하세요 오늘은 날씨가 좋습니다",
    "회의는 세 시에 시작합니다",
    "저는 커피를 좋아합니다",
]
SILENCE = (10.0, 24.0)  # the silent stretch planted in the stitched file, in seconds

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


# ---- planted times -----------------------------------------------------------------------------


def test_chunks_are_at_most_30_s_and_cut_in_pauses() -> None:
    regions = [(0.0, 8.0), (8.5, 20.0), (20.4, 29.0), (29.5, 40.0), (45.0, 47.0)]
    spans = chunk_spans(regions, 30.0)
    assert spans == [(0.0, 29.0), (29.5, 40.0), (45.0, 47.0)]  # 5 s pause: never joined
    assert all(end - start <= 30.0 for start, end in spans)
    assert chunk_spans([(0.0, 70.0)], 30.0) == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]
    assert window_spans(70.0, 30.0) == [(0.0, 30.0), (30.0, 60.0), (60.0, 70.0)]
    assert window_spans(3.0, 30.0) == [(0.0, 3.0)]
    # For a model that learnt one utterance per example: every region its own chunk, touching
    # ones too (VAD's padding makes close regions meet).
    touching = [(0.0, 8.0), (8.0, 20.0), (20.4, 29.0)]
    assert chunk_spans(touching, 30.0, max_pause_s=-math.inf) == touching


def test_coverage_names_the_speech_no_segment_covers() -> None:
    regions = [(0.0, 4.0), (10.0, 14.0), (20.0, 23.0)]
    segments = [Segment(0.0, 4.1, "하나"), Segment(20.1, 23.0, "셋")]
    assert uncovered_speech(regions, segments) == [(10.0, 14.0)]  # the dropped sentence
    assert uncovered_speech(regions, [*segments, Segment(10.0, 14.0, "둘")]) == []
    assert uncovered_speech(regions, [*segments, Segment(10.0, 14.0, " ")]) == [(10.0, 14.0)]
    # Half a sentence missing is reported; VAD padding at the edges is not.
    assert uncovered_speech([(0.0, 6.0)], [Segment(0.2, 3.0, "앞")]) == [(3.3, 6.0)]
    assert uncovered_speech([(0.0, 6.0)], [Segment(0.5, 5.6, "다")]) == []


def test_a_segment_far_shorter_than_its_speech_is_found_with_its_regions() -> None:
    regions = [(0.0, 4.0), (5.0, 9.0), (10.0, 13.0), (14.0, 17.0), (18.0, 22.0), (23.0, 26.0)]
    honest = [Segment(0.0, 4.0, "가" * 16), Segment(5.0, 9.0, "나" * 14)]  # 4 and 3.5 per s
    # Timed over three sentences (10 s of speech), written as four characters: 0.4 per s.
    sparse = Segment(10.0, 22.0, "다라 마바")
    tail = Segment(23.0, 26.0, "사" * 12)
    segments = [*honest, sparse, tail]
    assert sparse_segments(regions, segments) == [(2, [(10.0, 13.0), (14.0, 17.0), (18.0, 22.0)])]
    # A region mostly outside the segment is not its to decode again.
    shifted = [*honest, Segment(10.0, 19.0, "다라"), tail]
    assert sparse_segments(regions, shifted) == [(2, [(10.0, 13.0), (14.0, 17.0)])]
    # A slow speaker throughout sets the yardstick: nothing is sparse against itself.
    slow = [Segment(a, b, "가" * round(1.2 * (b - a))) for a, b in regions]
    assert sparse_segments(regions, slow) == []
    # Short segments are not judged, nor a segment with too little other speech to compare.
    assert sparse_segments(regions, [*honest, Segment(10.0, 11.5, "다")]) == []
    assert sparse_segments(regions, [Segment(0.0, 2.5, "가" * 10), sparse]) == []


def test_segments_are_clipped_to_the_file_and_monotonic() -> None:
    raw = [Segment(0.5, 3.0, "a"), Segment(2.0, 9.0, "b"), Segment(12.0, 40.0, "c")]
    clipped = monotonic(raw, 10.0)
    # A segment that starts past the end is a hallucination: dropped, not squashed to 0 s.
    assert [(s.start, s.end) for s in clipped] == [(0.5, 3.0), (2.0, 9.0)]
    assert [(s.start, s.end) for s in monotonic([Segment(4.0, 5.0, "x"), raw[0]], 10.0)] == [
        (4.0, 5.0),
        (4.0, 4.0),
    ]


# ---- real audio through every backend ----------------------------------------------------------


@pytest.fixture(scope="module")
def stitched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[tuple]]:
    """Three espeak-ng sentences around a 14 s silent stretch (over 30 s), 40 s of low noise."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from pefty_whisper.data.espeak import Voice, synthesize

    voice = Voice("ko", 150, 50)
    speech = [synthesize(text, voice) for text in SENTENCES]
    gap = np.zeros(RATE, np.float32)
    first = np.concatenate([gap, speech[0], gap, speech[1]])
    assert len(first) / RATE < SILENCE[0]
    lead = np.concatenate([first, np.zeros(int(SILENCE[1] * RATE) - len(first), np.float32)])
    audio = np.concatenate([lead, speech[2], np.zeros(6 * RATE, np.float32)])  # over 30 s
    root = tmp_path_factory.mktemp("longform")
    path = root / "stitched.wav"
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    rng = np.random.default_rng(0)
    quiet = (0.002 * rng.standard_normal(40 * RATE)).astype(np.float32)  # low noise
    silent = root / "silence.wav"
    soundfile.write(silent, quiet, RATE, subtype="FLOAT")
    starts = [1.0, 2.0 + len(speech[0]) / RATE, SILENCE[1]]
    spans = [(s, s + len(x) / RATE) for s, x in zip(starts, speech, strict=True)]
    return path, silent, spans


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("faster_whisper", reason="pip install 'pefty-whisper[export]'")
    pytest.importorskip("onnxruntime", reason="pip install 'pefty-whisper[export]'")
    from pefty_whisper.export import export_ct2, export_onnx

    root = tmp_path_factory.mktemp("models")
    tiny = save_tiny_whisper(root / "merged", seed=3)
    return {
        "torch": tiny,
        "ct2": export_ct2(tiny, root / "ct2", "float32").out_dir,
        "onnx": export_onnx(tiny, root / "onnx", exporter="torchscript").out_dir,
    }


PATHS = [
    ("torch", "sequential", "sequential (transformers + VAD)"),
    ("torch", "chunked", "chunked (VAD)"),
    ("ct2", "sequential", "sequential (faster-whisper + VAD)"),
    ("ct2", "chunked", "chunked (VAD)"),
    ("onnx", "auto", "chunked (VAD)"),
]


@pytest.mark.parametrize(("backend", "longform", "method"), PATHS)
def test_every_backend_gives_monotonic_segments_and_no_text_on_silence(
    models: dict[str, Path], stitched: tuple, backend: str, longform: str, method: str
) -> None:
    path, silent, _ = stitched
    transcriber = Transcriber(models[backend], replace(OPTIONS, longform=longform))
    result = transcriber.transcribe_file(path)
    assert result.method == method and result.backend == backend
    assert result.segments, "a random model still writes something for speech"
    times = [(s.start, s.end) for s in result.segments]
    assert all(0 <= a <= b <= result.duration_s + 1e-6 for a, b in times)
    assert all(b[0] >= a[0] for a, b in zip(times, times[1:], strict=False))
    if longform != "sequential":  # chunks never reach into the silent stretch
        assert all(e <= SILENCE[0] or s >= SILENCE[1] - 0.5 for s, e in times), times
    # VAD hears no speech in 40 s of low noise: nothing is decoded, nothing is written.
    quiet = transcriber.transcribe_file(silent)
    assert quiet.text == "" and quiet.segments == ()


def test_onnx_has_no_sequential_path(models: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match=r"onnx backend has no timestamp decoding"):
        Transcriber(models["onnx"], replace(OPTIONS, longform="sequential"))


def test_a_dropped_sentence_is_reported_with_its_time_range(
    models: dict[str, Path], stitched: tuple, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path, _, spans = stitched
    transcribe_batch = Transcriber.transcribe_batch

    def drop_the_last_sentence(self, audios, language=None):  # the model "deletes" a chunk
        return [*transcribe_batch(self, audios, language=language)[:-1], ""]

    monkeypatch.setattr(Transcriber, "transcribe_batch", drop_the_last_sentence)
    workdir = ["--workdir", str(tmp_path)]
    result = CliRunner().invoke(
        main,
        ["transcribe", str(path), "--model", str(models["onnx"]), "--format", "json", *workdir],
    )
    assert result.exit_code == 0, result.output
    (item,) = json.loads(result.stdout)
    assert item["method"] == "chunked (VAD)" and item["backend"] == "onnx"
    ((start, end),) = item["uncovered_speech"]
    assert start == pytest.approx(spans[2][0], abs=0.6) and end >= spans[2][1] - 0.6
    assert "that no segment covers" in result.stderr and "0:2" in result.stderr
    assert "chunked (VAD)" in result.stderr  # the summary line says which path was taken


def test_cli_writes_vtt_and_srt_with_segment_times(models: dict[str, Path], stitched: tuple):
    path = stitched[0]
    args = ["transcribe", str(path), "--model", str(models["ct2"]), "--longform", "chunked"]
    args += ["-o", "decode.max_new_tokens=8"]
    vtt = CliRunner().invoke(main, [*args, "--format", "vtt"])
    assert vtt.exit_code == 0, vtt.output
    assert vtt.stdout.startswith("WEBVTT\n\n00:00:0") and " --> 00:00:" in vtt.stdout
    srt = CliRunner().invoke(main, [*args, "--format", "srt"])
    # Two chunks: the first two sentences (a 1 s pause), the last one after the silence.
    assert srt.stdout.startswith("1\n00:00:00,") and "\n2\n00:00:2" in srt.stdout
    assert "\n3\n" not in srt.stdout


def test_torch_sequential_decoding_needs_no_faster_whisper(
    models: dict[str, Path], stitched: tuple, monkeypatch: pytest.MonkeyPatch
):
    # faster-whisper comes with the [export] extra only; a base install decodes a checkpoint
    # with transformers' long-form generate (without VAD) all the same.
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    monkeypatch.setitem(sys.modules, "faster_whisper.vad", None)
    options = TranscriberOptions(backend="torch", longform="sequential", vad="never")
    transcriber = Transcriber(models["torch"], replace(options, max_new_tokens=8))
    audio = load_audio(stitched[0])
    [result] = transcriber.transcribe_audios([audio])
    assert result.method.startswith("sequential")
    assert all(s.start <= s.end <= result.duration_s + 1e-6 for s in result.segments)
