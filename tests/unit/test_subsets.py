"""Subset figures (digits, Latin letters, duration buckets) on real-style KsponSpeech lines."""

from __future__ import annotations

import numpy as np
import pytest

from pefty_whisper.data.kspon import normalize_sides
from pefty_whisper.metrics import score_protocols
from pefty_whisper.subsets import duration_masks, subset_figures, subset_masks

LINES = (
    "(3시)/(세 시)에 만나",
    "b/ 어/ (KBS)/(케이 비 에스) 뉴스 봤어?",
    "학교 끝나고 도서관 가서 공부했어",
    "(2019년)/(이천십구 년)에 (SNS)/(에스 엔 에스) 시작했어",
    "지금 배고파서 뭐 좀 먹어야겠다",
    "o/ iPhone이랑 Bluetooth 다 돼",
)
HYPOTHESES = (
    "세 시에 만나",
    "어 KBS 뉴스 봤어",
    "학교 끝나고 도서관에 가서 공부했어",
    "2019년에 SNS 시작했다",
    "지금 배고파서 뭐 좀 먹어야 겠다",
    "아이폰이랑 블루투스 다 돼",
)
DURATIONS = (1.2, 2.0, 4.99, 5.0, 12.5, None)


@pytest.fixture(scope="module")
def counts():
    sides = [normalize_sides(line) for line in LINES]
    scores = score_protocols([s.spelling for s in sides], HYPOTHESES, [s.phonetic for s in sides])
    return [s.spelling for s in sides], scores["kspon"]


def test_digit_and_no_digit_subsets_add_up_to_the_whole(counts):
    references, kspon = counts
    masks = subset_masks(references, DURATIONS)
    figures = {f.name: f for f in subset_figures(kspon.errors, kspon.reference_lengths, masks)}
    whole = figures["all"]
    assert whole.rate == pytest.approx(kspon.rate)
    for pair in (("digits", "no digits"), ("latin", "no latin")):
        parts = [figures[name] for name in pair]
        assert sum(p.errors for p in parts) == whole.errors
        assert sum(p.reference_length for p in parts) == whole.reference_length
        assert sum(p.utterances for p in parts) == whole.utterances == 6
    buckets = ("<2 s", "2-5 s", "5-10 s", ">=10 s", "duration unknown")
    assert sum(figures[name].errors for name in buckets) == whole.errors
    assert sum(figures[name].reference_length for name in buckets) == whole.reference_length


def test_subset_membership_and_figures(counts):
    references, kspon = counts
    masks = subset_masks(references, DURATIONS)
    assert masks["digits"].tolist() == [True, False, False, True, False, False]
    assert masks["latin"].tolist() == [False, True, False, True, False, True]
    figures = {f.name: f for f in subset_figures(kspon.errors, kspon.reference_lengths, masks)}
    # 3시에만나 / 세시에만나: 1 of 5; 2019년에sns시작했어 / 2019년에sns시작했다: 1 of 13.
    assert (figures["digits"].errors, figures["digits"].reference_length) == (2, 18)
    assert figures["digits"].rate == pytest.approx(100 * 2 / 18)
    digits = figures["digits"].interval
    assert digits.low <= digits.value <= digits.high


def test_duration_buckets_have_closed_lower_edges():
    masks = duration_masks([1.99, 2.0, 4.99, 5.0, 9.99, 10.0, float("nan"), None])
    assert {name: np.flatnonzero(mask).tolist() for name, mask in masks.items()} == {
        "<2 s": [0],
        "2-5 s": [1, 2],
        "5-10 s": [3, 4],
        ">=10 s": [5],
        "duration unknown": [6, 7],
    }
    assert list(duration_masks([3.0], edges_s=(2.5,))) == ["<2.5 s", ">=2.5 s"]
    with pytest.raises(ValueError, match="increasing"):
        duration_masks([1.0], edges_s=(5.0, 2.0))


def test_empty_subsets_are_left_out_and_unknown_durations_only_when_present():
    masks = subset_masks(["안녕하세요", "반갑습니다"], [1.0, 3.0])
    assert "duration unknown" not in masks
    names = [f.name for f in subset_figures([0, 1], [5, 5], masks)]
    assert names == ["all", "no digits", "no latin", "<2 s", "2-5 s"]


def test_masks_must_match_the_counts():
    with pytest.raises(ValueError, match="subset 'x'"):
        subset_figures([0, 1], [5, 5], {"x": np.array([True])})
