"""Bootstrap intervals on simulated test sets whose true error rate is known."""

from __future__ import annotations

import numpy as np
import pytest

from pefty_whisper.intervals import (
    RateInterval,
    bootstrap_rate,
    bootstrap_rates,
    group_counts,
    paired_bootstrap,
)

TRUE_RATE = 0.08


def simulated_set(rng: np.random.Generator, utterances: int, rate: float = TRUE_RATE):
    """KsponSpeech-like reference lengths (3-40 characters) and binomial errors at `rate`."""
    lengths = rng.integers(3, 41, size=utterances)
    return rng.binomial(lengths, rate), lengths


def test_95_percent_interval_covers_the_true_rate_about_95_percent_of_the_time():
    rng = np.random.default_rng(2024)
    covered = 0
    trials = 200
    for trial in range(trials):
        errors, lengths = simulated_set(rng, 300)
        interval = bootstrap_rate(errors, lengths, resamples=1000, seed=trial)
        covered += interval.low <= 100 * TRUE_RATE <= interval.high
    assert 0.90 <= covered / trials <= 0.99


def test_interval_is_seeded_and_brackets_the_value():
    errors, lengths = simulated_set(np.random.default_rng(0), 3000)
    first = bootstrap_rate(errors, lengths, seed=7)
    assert first == bootstrap_rate(errors, lengths, seed=7)
    assert first != bootstrap_rate(errors, lengths, seed=8)
    assert first.value == pytest.approx(100 * errors.sum() / lengths.sum())
    assert first.low < first.value < first.high
    assert (first.resamples, first.seed) == (1000, 7)
    # 3,000 utterances of about 21 characters at 8%: the binomial standard error is near 0.1
    # point, so the 95% half-width is near 0.2 (real sets, less uniform, are wider).
    assert 0.1 < first.half_width < 0.35


def test_format_is_rate_and_half_width():
    interval = RateInterval(value=9.87, low=8.7, high=11.1, resamples=1000, seed=0)
    assert interval.half_width == pytest.approx(1.2)
    assert interval.format() == "9.9% ±1.2" == str(interval)
    assert interval.format(2) == "9.87% ±1.20"


def test_paired_bootstrap_finds_a_planted_three_point_difference():
    rng = np.random.default_rng(3)
    lengths = rng.integers(3, 41, size=3000)
    errors_a = rng.binomial(lengths, 0.10)
    errors_b = rng.binomial(lengths, 0.07)
    comparison = paired_bootstrap(errors_a, errors_b, lengths, seed=0)
    assert comparison.verdict == "better"
    assert comparison.high < 0
    assert comparison.low <= -3.0 <= comparison.high
    assert comparison.difference == pytest.approx(comparison.rate_b - comparison.rate_a)
    assert paired_bootstrap(errors_b, errors_a, lengths, seed=0).verdict == "worse"
    assert str(comparison).endswith(": better")


def test_paired_bootstrap_finds_no_difference_between_identical_systems():
    errors, lengths = simulated_set(np.random.default_rng(4), 3000)
    comparison = paired_bootstrap(errors, errors.copy(), lengths)
    assert comparison.verdict == "no clear difference"
    assert (comparison.difference, comparison.low, comparison.high) == (0.0, 0.0, 0.0)
    # Two decodes as good as each other, differing only by chance: no verdict either.
    rng = np.random.default_rng(5)
    other = rng.binomial(lengths, TRUE_RATE)
    assert paired_bootstrap(errors, other, lengths).verdict == "no clear difference"


def test_paired_bootstrap_takes_per_system_reference_lengths():
    # Under `dual` each system is scored against the side it matched, so the lengths differ.
    comparison = paired_bootstrap([2, 0], [0, 0], [10, 10], reference_lengths_b=[12, 10])
    assert (comparison.rate_a, comparison.rate_b) == (10.0, 0.0)


def test_group_counts_sums_recordings_in_first_seen_order():
    grouped = group_counts([1, 2, 3, 4], [10, 20, 30, 40], ["rec2", "rec1", "rec2", "rec3"])
    assert grouped.groups == ("rec2", "rec1", "rec3")
    assert grouped.errors.tolist() == [4, 2, 4]
    assert grouped.reference_lengths.tolist() == [40, 20, 40]
    # The long-form figure over recordings is the same rate, resampled by recording.
    by_recording = bootstrap_rate(grouped.errors, grouped.reference_lengths)
    assert by_recording.value == bootstrap_rate([1, 2, 3, 4], [10, 20, 30, 40]).value == 10.0


def test_text_against_an_empty_reference_counts_as_100_percent():
    assert bootstrap_rate([3], [0]).value == 100.0
    assert bootstrap_rate([0], [0]).value == 0.0


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="one length"):
        bootstrap_rate([1, 2], [3])
    with pytest.raises(ValueError, match="no utterances"):
        bootstrap_rate([], [])
    with pytest.raises(ValueError, match="negative"):
        bootstrap_rate([-1], [3])
    with pytest.raises(ValueError, match="resamples"):
        bootstrap_rate([1], [3], resamples=0)
    with pytest.raises(ValueError, match="group labels"):
        group_counts([1], [3], ["a", "b"])


def test_several_rates_from_one_draw_equal_one_draw_each():
    rng = np.random.default_rng(7)
    lengths = rng.integers(5, 40, 500)
    pairs = [(rng.binomial(lengths, p), lengths) for p in (0.05, 0.1, 0.3)]
    together = bootstrap_rates(pairs, resamples=400, seed=3)
    assert together == tuple(bootstrap_rate(e, n, resamples=400, seed=3) for e, n in pairs)
