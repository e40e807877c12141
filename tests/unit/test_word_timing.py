"""Word timing on planted numbers: the DTW path, words from the real tokenizer's tokens (a Hangul
syllable may span two), OpenAI's pause corrections, and words in json, srt and vtt."""

from __future__ import annotations

import json

import numpy as np
from fixtures import whisper_processor

from pefty_whisper.inference.alignment import (
    TimedToken,
    dtw,
    merge_punctuation,
    split_words,
    timed_words,
)
from pefty_whisper.inference.formats import to_json, to_srt, to_vtt
from pefty_whisper.inference.results import Segment, Transcription, Word


def test_dtw_follows_the_cheap_cells_monotonically() -> None:
    # Three tokens over ten frames: token 0 on frames 0-2, token 1 on 3-6, token 2 on 7-9.
    cost = np.ones((3, 10))
    for token, frames in enumerate((range(0, 3), range(3, 7), range(7, 10))):
        cost[token, list(frames)] = 0.0
    tokens, frames = dtw(cost)
    assert frames.tolist() == list(range(10))
    assert tokens.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    jumps = np.pad(np.diff(tokens), (1, 0), constant_values=1).astype(bool)
    assert frames[jumps].tolist() == [0, 3, 7]  # where each token starts


def test_words_keep_korean_syllables_whole_and_punctuation_with_its_word() -> None:
    tokenizer = whisper_processor().tokenizer
    text = " 안녕하세요, 오늘 날씨가 좋네요."
    tokens = tokenizer.encode(text, add_special_tokens=False)
    assert len(tokens) > 5  # byte-level BPE: syllables span tokens
    words = split_words(tokenizer, tokens, "ko")
    assert [w for w, _ in words] == [" 안녕하세요", ",", " 오늘", " 날씨가", " 좋네요", "."]
    assert [i for _, positions in words for i in positions] == list(range(len(tokens)))
    timed = [Word(float(i), float(i) + 0.5, w) for i, (w, _) in enumerate(words)]
    merged = merge_punctuation(timed)
    assert [w.text for w in merged] == [" 안녕하세요,", " 오늘", " 날씨가", " 좋네요."]
    assert (merged[0].start, merged[0].end) == (0.0, 0.5)  # the word keeps its own times
    assert "".join(w.text for w in merged) == text


def test_a_word_after_a_pause_is_cut_back_to_twice_the_median() -> None:
    tokenizer = whisper_processor().tokenizer
    # As Whisper generates them: a word's leading space inside its token (Ġ).
    first = tokenizer.convert_tokens_to_ids(["Ġone", "Ġtwo", "Ġthree", "."])
    second = tokenizer.convert_tokens_to_ids(["Ġfour", "Ġfive", "Ġsix"])

    def timed(tokens: list[int], times: list[float]) -> list[TimedToken]:
        return [TimedToken(t, times[i], times[i + 1], 0.9) for i, t in enumerate(tokens)]

    # The DTW gives " four" the whole pause before it (2.0 to 6.0 s); the period, too.
    window = [
        timed(first, [0.5, 0.8, 1.1, 1.4, 2.0]),
        timed(second, [2.0, 6.0, 6.3, 6.6]),
    ]
    segments = [Segment(0.0, 3.0, "one two three."), Segment(3.0, 8.0, "four five six")]
    out = timed_words(tokenizer, segments, window, "en", offset=10.0)
    assert [w.text for w in out[0].words] == [" one", " two", " three."]
    four = out[1].words[0]
    assert four.text == " four" and four.end == 16.0
    assert four.start == 16.0 - 0.6  # twice the median word (0.3 s), not from 12.0
    assert out[1].words[-1].end == 16.6
    assert [(s.start, s.end) for s in out] == [(0.0, 3.0), (3.0, 8.0)]  # as decoded


def _transcription() -> Transcription:
    words = (Word(1.0, 1.4, " 안녕하세요", 0.9), Word(1.5, 2.25, " 반갑습니다", 0.8))
    segments = (Segment(1.0, 2.25, "안녕하세요 반갑습니다", words=words),)
    return Transcription("a.wav", segments[0].text, segments, 3.0, 0.1)


def test_words_in_json_srt_and_vtt() -> None:
    result = _transcription()
    body = json.loads(json.dumps(to_json([result])))
    assert body[0]["segments"][0]["words"] == [
        {"word": " 안녕하세요", "start": 1.0, "end": 1.4, "probability": 0.9},
        {"word": " 반갑습니다", "start": 1.5, "end": 2.25, "probability": 0.8},
    ]
    assert to_srt([result]) == (
        "1\n00:00:01,000 --> 00:00:01,400\n안녕하세요\n\n"
        "2\n00:00:01,500 --> 00:00:02,250\n반갑습니다\n"
    )
    assert to_vtt([result]) == (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.250\n안녕하세요 <00:00:01.500>반갑습니다\n"
    )
    plain = Transcription("b.wav", "x", (Segment(0.0, 1.0, "x"),), 1.0, 0.1)
    assert "words" not in to_json([plain])[0]["segments"][0]
    assert to_srt([plain]) == "1\n00:00:00,000 --> 00:00:01,000\nx\n"
