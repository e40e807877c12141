"""Long-form and silence scoring (longform_eval.py) on planted transcripts and real files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.data.manifest import Utterance
from pefty_whisper.evaluate.longform import (
    Recording,
    score_longform,
    silence_characters,
    stitch_recordings,
)
from pefty_whisper.inference import TranscriberOptions, Transcription

SENTENCES = ["안녕하세요 반갑습니다", "오늘 날씨가 좋네요", "세 시에 만나요", "내일 다시 봐요"]


class PlantedTranscriber:
    """Answers the Transcriber's long-form call with planted texts: a stand-in for the model,
    so that what is tested is the scoring of what a model wrote."""

    def __init__(self, texts: list[str], batch_size: int = 8) -> None:
        self.texts = list(texts)
        self.calls: list[int] = []
        self.options = TranscriberOptions(batch_size=batch_size)

    def transcribe_audios(self, audios):
        self.calls.append(len(audios))
        texts, self.texts = self.texts[: len(audios)], self.texts[len(audios) :]
        return [
            Transcription(f"a{i}", text, (), len(a) / SAMPLE_RATE, 0.0, method="chunked (VAD)")
            for i, (a, text) in enumerate(zip(audios, texts, strict=True))
        ]


def _utterances(folder: Path, seconds: float = 2.0) -> list[Utterance]:
    utterances = []
    for i, sentence in enumerate(SENTENCES):
        path = folder / f"u{i}.pcm"
        path.write_bytes(np.full(int(seconds * SAMPLE_RATE), 1000 + i, dtype="<i2").tobytes())
        utterances.append(Utterance(str(path), sentence, seconds, f"u{i}"))
    return utterances


def test_stitched_recordings_keep_order_and_join_references(tmp_path: Path) -> None:
    utterances = _utterances(tmp_path)
    recordings = stitch_recordings(utterances, seed=1, target_s=6.0)
    assert [r.utterances for r in recordings] == [2, 2]
    assert recordings[0].reference == " ".join(SENTENCES[:2])
    audio = recordings[0].audio
    # Both utterances are in, in order, each after a pause of 0.3-1.5 s.
    assert 4.6 <= len(audio) / SAMPLE_RATE <= 7.0
    values = np.unique(np.round(audio[audio != 0] * 32768).astype(int))
    assert values.tolist() == [1000, 1001]
    assert stitch_recordings(utterances, seed=1, target_s=6.0)[1].audio.tobytes() == (
        recordings[1].audio.tobytes()
    )


def test_a_deleted_sentence_raises_the_deletion_share() -> None:
    recording = Recording(np.zeros(SAMPLE_RATE, np.float32), " ".join(SENTENCES), 4)
    perfect = score_longform(PlantedTranscriber([" ".join(SENTENCES)]), [recording])
    assert perfect.cer == 0 and perfect.deleted == 0 and perfect.method == "chunked (VAD)"
    dropped = " ".join(SENTENCES[:1] + SENTENCES[2:])  # the second sentence is lost at a seam
    lost = score_longform(PlantedTranscriber([dropped]), [recording])
    reference_chars = len("".join(" ".join(SENTENCES).split()))
    expected = 100 * len(SENTENCES[1].replace(" ", "")) / reference_chars
    assert lost.deleted == pytest.approx(expected)
    assert lost.cer == pytest.approx(expected) and lost.inserted == 0
    doubled = score_longform(PlantedTranscriber([" ".join(SENTENCES * 2)]), [recording])
    assert doubled.deleted == 0 and doubled.inserted == pytest.approx(100)


def test_silence_characters_count_what_is_written_on_non_speech() -> None:
    quiet = PlantedTranscriber(["", "", ""])
    assert silence_characters(quiet) == {"silence": 0, "noise": 0, "hum": 0}
    assert quiet.calls == [3]
    hallucinating = PlantedTranscriber(["시청해 주셔서 감사합니다", "", "음"])
    assert silence_characters(hallucinating) == {"silence": 11, "noise": 0, "hum": 1}


def test_recordings_are_decoded_decode_batch_size_at_a_time() -> None:
    # A whole set's recordings in one generate call would not fit a GPU (4 h of eval_clean is
    # about 84 recordings of 3 minutes).
    recordings = [Recording(np.zeros(SAMPLE_RATE, np.float32), text, 1) for text in SENTENCES]
    planted = PlantedTranscriber(SENTENCES, batch_size=3)
    assert score_longform(planted, recordings).cer == 0
    assert planted.calls == [3, 1]


def test_recordings_join_the_phonetic_side_and_get_an_interval_over_recordings(
    tmp_path: Path,
) -> None:
    utterances = _utterances(tmp_path)
    spoken = Utterance(utterances[2].path, "3시에 만나요", 2.0, "u2", phonetic="세 시에 만나요")
    utterances[2] = spoken
    recordings = stitch_recordings(utterances, seed=1, target_s=6.0)
    assert recordings[0].phonetic == ""  # no utterance of it has a phonetic side
    assert recordings[1].reference == "3시에 만나요 내일 다시 봐요"
    assert recordings[1].phonetic == "세 시에 만나요 내일 다시 봐요"
    # The model wrote what was said: an error under kspon, none under dual.
    texts = [recordings[0].reference, recordings[1].phonetic]
    score = score_longform(PlantedTranscriber(texts), recordings)
    assert score.cer > 0 and score.dual == 0
    assert score.recording_errors == (0, 1) and len(score.recording_chars) == 2
    assert score.cer_low is not None and score.cer_low <= score.cer <= score.cer_high
    single = score_longform(PlantedTranscriber(texts[:1]), recordings[:1])
    assert single.cer_low is None and single.cer_high is None
    assert set(score.as_dict()) >= {"cer_low", "cer_high", "dual", "recording_errors"}
