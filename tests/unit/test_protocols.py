"""One decode scored under every KsponSpeech protocol, references from the real normalizer."""

from __future__ import annotations

import numpy as np
import pytest

from pefty_whisper.data.kspon import normalize_sides
from pefty_whisper.metrics import PROTOCOLS, score_corpus, score_protocols

# KsponSpeech-style script lines: two with dual parts, one without.
LINES = (
    "(3시)/(세 시)에 만나",
    "b/ 어/ (KBS)/(케이 비 에스) 뉴스 봤어? n/",
    "학교 끝나고 도서관 가서 공부했어",
)
SIDES = [normalize_sides(line) for line in LINES]
SPELLING = [s.spelling for s in SIDES]
PHONETIC = [s.phonetic for s in SIDES]
WROTE_PHONETIC = ["세 시에 만나", "어 케이 비 에스 뉴스 봤어", "학교 끝나고 도서관 가서 공부했어"]


def test_references_come_from_the_kspon_normalizer():
    assert SPELLING == ["3시에 만나", "어 KBS 뉴스 봤어?", "학교 끝나고 도서관 가서 공부했어"]
    assert PHONETIC == ["세 시에 만나", "어 케이 비 에스 뉴스 봤어?", ""]


def test_hypothesis_writing_the_phonetic_side_is_right_under_dual_only():
    scores = score_protocols(SPELLING, WROTE_PHONETIC, PHONETIC)
    # 3시에만나 / 세시에만나: 1 substitution of 5; 어kbs뉴스봤어 / 어케이비에스뉴스봤어: k b s
    # substituted and two characters inserted, 5 errors over 8; the third line is right.
    assert scores["kspon"].errors.tolist() == [1, 5, 0]
    assert scores["kspon"].reference_lengths.tolist() == [5, 8, 14]
    assert scores["kspon"].rate == pytest.approx(100 * 6 / 27)
    assert scores["kspon-phonetic"].errors.tolist() == [0, 0, 0]
    assert scores["kspon-phonetic"].reference_lengths.tolist() == [5, 10, 14]
    assert scores["dual"].rate == 0.0
    assert scores["dual"].reference_lengths.tolist() == [5, 10, 14]  # the side it was scored on
    assert scores.dual_took_phonetic.tolist() == [True, True, False]


def test_hypothesis_writing_the_spelling_side_is_right_under_kspon_and_dual():
    scores = score_protocols(SPELLING, ["3시에 만나", "어 KBS 뉴스 봤어", SPELLING[2]], PHONETIC)
    assert scores.rates()["kspon"] == 0.0 and scores.rates()["dual"] == 0.0
    assert scores["kspon-phonetic"].errors.tolist() == [1, 5, 0]
    assert not scores.dual_took_phonetic.any()


def test_dual_chooses_per_utterance_and_ties_keep_the_spelling_side():
    hypotheses = ["세 시에 만나", "어 KBS 뉴스 봤어", "학교 끝나고 도서관 가서 공부했다"]
    scores = score_protocols(SPELLING, hypotheses, PHONETIC)
    assert scores["dual"].errors.tolist() == [0, 0, 1]
    assert scores.dual_took_phonetic.tolist() == [True, False, False]
    # A hypothesis as far from both sides: equal errors, so the spelling side's length counts.
    tie = score_protocols(["3시"], ["아"], ["세 시"])
    assert tie["kspon"].errors.tolist() == tie["kspon-phonetic"].errors.tolist() == [2]
    assert tie["dual"].reference_lengths.tolist() == [2] and not tie.dual_took_phonetic[0]


def test_protocols_agree_with_the_existing_scores():
    hypotheses = ["세시에 만나", "어 KBS 뉴스를 봤어", "학교 끝나고 도서관가서 공부 했어"]
    scores = score_protocols(SPELLING, hypotheses, PHONETIC)
    legacy = score_corpus(SPELLING, hypotheses)
    assert scores["kspon"].rate == pytest.approx(legacy.cer)
    assert scores["spaces"].rate == pytest.approx(legacy.cer_with_spaces)
    assert scores["wer"].rate == pytest.approx(legacy.wer)
    assert scores.spelling.cer == legacy.cer and scores.num_utterances == 3
    assert list(scores.rates()) == list(PROTOCOLS)
    for counts in scores.counts:
        assert counts.errors.dtype == np.int64 and counts.errors.shape == (3,)


def test_without_phonetic_forms_the_phonetic_protocols_fall_back_to_spelling():
    hypotheses = ["세 시에 만나", "어 KBS 뉴스 봤어", "학교"]
    for phonetic in (None, ["", None, ""], ["?", "", ""]):  # "?" is nothing once normalized
        scores = score_protocols(SPELLING, hypotheses, phonetic)
        for name in ("kspon-phonetic", "dual"):
            assert scores[name].errors.tolist() == scores["kspon"].errors.tolist()
            assert scores[name].rate == scores["kspon"].rate


def test_digits_are_scored_as_written():
    spelling = normalize_sides("(2019년)/(이천십구 년)에 왔어")
    scores = score_protocols([spelling.spelling], ["이천십구 년에 왔어"], [spelling.phonetic])
    # 2019년에왔어 / 이천십구년에왔어: the four digits are four substitutions.
    assert scores["kspon"].errors.tolist() == [4]
    assert scores["dual"].errors.tolist() == [0]


def test_bad_arguments_name_the_problem():
    with pytest.raises(ValueError, match="2 references but 1 phonetic forms"):
        score_protocols(["가", "나"], ["가", "나"], ["가"])
    with pytest.raises(KeyError, match="unknown protocol 'cer'"):
        score_protocols(["가"], ["가"])["cer"]  # type: ignore[index]
