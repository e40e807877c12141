"""The pseudo-label filters on planted rows: one reason per dropped label, in a fixed order, and
the confidence figures they read (compression ratio, disagreement CER, mean log-probability)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pefty_whisper.config import LabelSection
from pefty_whisper.inference.confidence import compression_ratio, row_confidence
from pefty_whisper.label.filters import REASONS, Decoded, disagreement, drop_reason
from pefty_whisper.whisper.tokens import WhisperTokens

SENTENCE = "회의는 세 시에 시작합니다"
GOOD = Decoded(0, 0, 1.0, 4.0, 3.0, SENTENCE, -0.3, 0.02, SENTENCE)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({}, ""),
        ({"text": "네 " * 50}, "repetition"),
        ({"no_speech_prob": 0.9}, "no_speech"),
        ({"avg_logprob": -1.7}, "low_logprob"),
        ({"second": "완전히 다른 문장"}, "disagreement"),
        ({"text": "  "}, "empty"),
        ({"reason": "no_speech_vad", "text": ""}, "no_speech_vad"),
        ({"text": "네 " * 50, "no_speech_prob": 0.9}, "repetition"),  # the first reason only
    ],
)
def test_each_planted_bad_label_gets_its_reason(change, reason):
    row = dataclasses.replace(GOOD, **change)
    assert drop_reason(row, LabelSection()) == reason
    assert reason == "" or reason in REASONS


def test_a_null_threshold_turns_its_check_off():
    section = LabelSection(max_compression_ratio=None, min_avg_logprob=None)
    loop = dataclasses.replace(GOOD, text="네 " * 50, avg_logprob=-5.0, second=None)
    assert drop_reason(loop, section) == ""
    assert drop_reason(dataclasses.replace(GOOD, second=None), LabelSection()) == ""


def test_compression_ratio_and_disagreement():
    assert compression_ratio("네 " * 50) > 2.4 > compression_ratio("회의는 세 시에 시작합니다")
    assert disagreement("회의는 세시에", "회의는 세 시에") == 0.0  # spaces do not count
    assert disagreement("회의는", "회의는 세 시에") == pytest.approx(3 / 6)
    assert disagreement("", "") == 0.0 and disagreement("네", "") == 1.0


def test_row_confidence_is_whispers_mean_log_probability():
    vocabulary = 8
    special = WhisperTokens(
        sot=0, eot=1, no_timestamps=2, no_speech=5, tasks={"transcribe": 3, "translate": 4},
        languages={}, language=None, task="transcribe",
    )  # fmt: skip
    logits = np.random.default_rng(0).standard_normal((6, vocabulary))
    prompt, tokens = [0, 3, 2], [6, 6]
    scored = row_confidence(logits, len(prompt), tokens, special)
    logprobs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = (logprobs[2, 6] + logprobs[3, 6] + logprobs[4, 1]) / 3  # the tokens and the eot
    assert scored.avg_logprob == pytest.approx(expected)
    assert scored.no_speech_prob == pytest.approx(np.exp(logprobs[0, 5]))
    cut = row_confidence(logits, len(prompt), tokens, special, ended=False)
    assert cut.avg_logprob == pytest.approx((logprobs[2, 6] + logprobs[3, 6]) / 3)
