"""Manifest rows that point into a long file (start/end seconds): written only where some row has
them, read back exactly, and every loader (training, packing, evaluation) reads just that span."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import soundfile
from fixtures import whisper_processor

from pefty_whisper.config import Config
from pefty_whisper.data.audio import SAMPLE_RATE, load_audio
from pefty_whisper.data.conditions import ConditionedAudio
from pefty_whisper.data.features import SpeechDataset
from pefty_whisper.data.manifest import read_manifest, split_utterances, write_manifest
from pefty_whisper.data.packing import PackedDataset, PackingOptions, packing_tokens, plan_windows
from pefty_whisper.data.table import Utterance, UtteranceTable


def _ramp(seconds: float) -> np.ndarray:
    """A waveform whose every sample says where it lies: any wrong offset shows."""
    n = int(seconds * SAMPLE_RATE)
    return ((np.arange(n) % 20_000) / 40_000).astype(np.float32)


@pytest.fixture
def long_files(tmp_path):
    audio = _ramp(12.0)
    wav = tmp_path / "long.wav"
    soundfile.write(wav, audio, SAMPLE_RATE, subtype="FLOAT")
    pcm = tmp_path / "long.pcm"
    pcm.write_bytes((audio * 32768).astype("<i2").tobytes())
    return audio, wav, pcm


def _header(path):
    with path.open(encoding="utf-8") as handle:
        return next(csv.reader(handle))


def test_span_columns_are_written_only_when_a_row_has_them(tmp_path, long_files):
    _, wav, _ = long_files
    plain = [Utterance(str(wav), "하나", 12.0, "a")]
    path = tmp_path / "plain.csv"
    write_manifest(path, plain)
    assert _header(path) == ["path", "sentence", "duration", "id", "raw"]
    assert read_manifest(path).utterances[0].span == (None, None)

    rows = [Utterance(str(wav), "하나", None, "a-0", start=1.25, end=3.5), *plain]
    path = tmp_path / "spans.csv"
    write_manifest(path, rows)
    assert _header(path) == ["path", "sentence", "duration", "id", "raw", "start", "end"]
    table = read_manifest(path).utterances
    assert table.has_spans and table.span(0) == (1.25, 3.5) and table.span(1) == (None, None)
    assert table.duration(0) == pytest.approx(2.25)  # the span's length, not the file's
    assert table.take([1, 0])[1] == Utterance(str(wav), "하나", 2.25, "a-0", start=1.25, end=3.5)
    assert UtteranceTable.concat([table, table]).span(2) == (1.25, 3.5)


def test_bad_spans_are_rejects_with_their_line(tmp_path, long_files):
    _, wav, _ = long_files
    path = tmp_path / "bad.csv"
    path.write_text(
        "path,sentence,start,end\n"
        f"{wav},좋아,2.0,1.0\n"
        f"{wav},좋아,1.0,\n"
        f"{wav},좋아,x,2\n"
        f"{wav},좋아,1.0,2.0\n",
        encoding="utf-8",
    )
    manifest = read_manifest(path)
    assert len(manifest.utterances) == 1
    assert [r.line for r in manifest.rejects] == [2, 3, 4]
    assert "start < end" in manifest.rejects[0].reason
    assert "together" in manifest.rejects[1].reason


@pytest.mark.parametrize("kind", ["wav", "pcm"])
def test_load_audio_reads_exactly_the_span(long_files, kind):
    audio, wav, pcm = long_files
    path = wav if kind == "wav" else pcm
    got = load_audio(path, 2.5, 4.0)
    expected = audio[int(2.5 * SAMPLE_RATE) : int(4.0 * SAMPLE_RATE)]
    assert len(got) == len(expected)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert len(load_audio(path, 11.0, None)) == SAMPLE_RATE


def test_training_items_and_packed_windows_hold_the_span(long_files):
    audio, wav, _ = long_files
    processor = whisper_processor()
    rows = [
        Utterance(str(wav), "하나 둘", 1.5, "s0", start=1.0, end=2.5),
        Utterance(str(wav), "셋 넷", 2.0, "s1", start=5.0, end=7.0),
    ]
    item = SpeechDataset(rows, processor)[1]
    np.testing.assert_allclose(item["audio"], audio[5 * SAMPLE_RATE : 7 * SAMPLE_RATE], atol=1e-6)

    options = PackingOptions(untimed_share=0.0, no_speech_share=0.0, gap_s=(0.2, 0.2))
    plan = plan_windows([1.5, 2.0], [3, 3], options)
    assert plan.windows[0].members == (0, 1)  # segments of one file in order: one window
    special = packing_tokens(processor.tokenizer, "korean", "transcribe")
    window = PackedDataset(rows, plan, processor.tokenizer, special)[0]
    gap = round(0.2 * SAMPLE_RATE)
    expected = np.concatenate(
        [
            np.zeros(gap, np.float32),
            audio[SAMPLE_RATE : int(2.5 * SAMPLE_RATE)],
            np.zeros(gap, np.float32),
            audio[5 * SAMPLE_RATE : 7 * SAMPLE_RATE],
        ]
    )
    np.testing.assert_allclose(window["audio"], expected, atol=1e-6)


def test_conditions_and_splits_keep_segments_of_a_file_together(long_files):
    audio, wav, pcm = long_files
    rows = [Utterance(str(wav), "a", 1.0, "w0", start=0.0, end=1.0)]
    rows += [Utterance(str(pcm), "b", 1.0, f"p{i}", start=i, end=i + 1.0) for i in range(4)]
    conditioned = ConditionedAudio(rows, "speed-1.0", Config().augment)
    assert len(conditioned(3)) == SAMPLE_RATE
    train, test = split_utterances(rows, 0.5, seed=0)
    assert {u.path for u in train}.isdisjoint({u.path for u in test})


def test_prepare_csv_writes_span_rows_and_rejects_a_span_past_the_end(tmp_path, long_files):
    from pefty_whisper.data.prepare import prepare_csv

    _, wav, _ = long_files
    src = tmp_path / "spans.csv"
    src.write_text(
        "path,text,start,end\n"
        f"{wav},하나 둘,0.5,2.0\n"
        f"{wav},셋 넷,3.0,5.5\n"
        f"{wav},다섯,11.0,14.0\n"
        f"{wav},하나 둘,0.5,2.0\n",
        encoding="utf-8",
    )
    report = prepare_csv(src, tmp_path / "data", "spans", Config().data, "raw")
    table = read_manifest(tmp_path / "data" / "spans.csv").utterances
    assert [table.span(i) for i in range(len(table))] == [(0.5, 2.0), (3.0, 5.5)]
    assert [table.duration(i) for i in range(len(table))] == [1.5, 2.5]
    reasons = [(r.line, r.reason) for r in report.rejects]
    assert reasons[0][0] == 4 and "past the file" in reasons[0][1]
    assert reasons[1] == (5, "audio file listed again (the first listing is kept)")
