"""Hand-computed Korean examples for the scorer."""

import pytest

from pefty_whisper.metrics import normalize_for_scoring, score_corpus, score_utterance


def test_spacing_difference_is_no_error_in_the_primary_cer():
    scores = score_corpus(["안녕하세요"], ["안녕 하세요"])
    assert scores.cer == 0.0
    assert scores.cer_with_spaces == pytest.approx(100 * 1 / 5)  # one inserted space, 5 chars
    assert scores.wer == pytest.approx(200.0)  # 1 substitution + 1 insertion over 1 word


def test_one_substituted_syllable():
    scores = score_corpus(["나는 학교에 간다"], ["나는 학교에 갔다"])
    assert scores.cer == pytest.approx(100 * 1 / 7)  # 나는학교에간다: 7 chars
    assert scores.cer_with_spaces == pytest.approx(100 * 1 / 9)
    assert scores.wer == pytest.approx(100 * 1 / 3)


def test_punctuation_and_latin_case_are_normalized_on_both_sides():
    assert score_corpus(["오늘 날씨 좋네요."], ["오늘 날씨, 좋네요!"]).cer == 0.0
    assert score_corpus(["KBS 뉴스를 봤어?"], ["kbs 뉴스를 봤어"]).wer == 0.0
    assert normalize_for_scoring("  A/S  센터에   가요? ") == "a s 센터에 가요"


def test_empty_hypothesis_is_all_deletions():
    utterance = score_utterance("가나다 라마", "")
    assert utterance.chars.deletions == 5 and utterance.chars.errors == 5
    assert utterance.words.deletions == 2
    assert score_corpus(["가나다 라마"], [""]).cer == 100.0


def test_hallucination_counts_insertions_beyond_100_percent():
    scores = score_corpus(["네"], ["네 맞아요 그렇습니다"])
    # 네 vs 네맞아요그렇습니다: 1 hit, 8 insertions over 1 reference character.
    assert scores.cer == pytest.approx(800.0)


def test_corpus_rate_is_total_edits_over_total_length():
    scores = score_corpus(["가나다라", "마바"], ["가나다라", "사바"])
    assert scores.cer == pytest.approx(100 * 1 / 6)  # not the mean of 0% and 50%
    assert scores.num_utterances == 2
    assert [u.chars.errors for u in scores.utterances] == [0, 1]


def test_nfd_jamo_hypothesis_equals_composed_reference():
    import unicodedata

    decomposed = unicodedata.normalize("NFD", "한국어")
    assert score_corpus(["한국어"], [decomposed]).cer == 0.0


def test_empty_reference_and_hypothesis():
    assert score_corpus([""], [""]).cer == 0.0
    assert score_corpus(["."], ["네"]).cer == 100.0


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        score_corpus(["a", "b"], ["a"])
