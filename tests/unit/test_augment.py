"""Waveform augmentation (data/augment.py), the `augment:` config section and SpecAugment's
model-config switch, on real waveforms measured with FFTs and power ratios."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile
import torch
from fixtures import TINY_DIMS
from transformers import WhisperConfig, WhisperForConditionalGeneration

from pefty_whisper.config import AugmentSection, dump_config, load_config
from pefty_whisper.config.reference import config_reference
from pefty_whisper.data.augment import (
    MAX_PEAK,
    Augmenter,
    AugmentTally,
    apply_gain,
    list_noise_files,
    mu_law_decode,
    mu_law_encode,
    perturbed_samples,
    spec_augment_overrides,
    speed_perturb,
    telephone,
)
from pefty_whisper.data.conditions import apply_condition, parse_condition
from pefty_whisper.errors import ConfigError

SR = 16_000


def speech_like(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A 150 Hz harmonic voice, syllable-rate amplitude modulation, a pause, a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    voice = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    envelope[len(t) // 2 : len(t) // 2 + SR // 5] = 0  # a 0.2 s pause
    noise = 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.2 * voice * envelope + noise).astype(np.float32)


def tone(hz: float, seconds: float = 1.0, level: float = 0.5) -> np.ndarray:
    return (level * np.sin(2 * np.pi * hz * np.arange(int(seconds * SR)) / SR)).astype(np.float32)


def power_db(audio: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(audio, dtype=np.float64)))


def only(**fields) -> Augmenter:
    """An Augmenter with just the given keys set (everything else at its default: off)."""
    return Augmenter(AugmentSection(**fields))


TRANSFORMS = {
    "speed": {"speed_prob": 1.0, "speed": (0.9, 1.1)},
    "noise-white": {"noise_prob": 1.0, "noise_kinds": ("white",)},
    "noise-pink": {"noise_prob": 1.0, "noise_kinds": ("pink",)},
    "noise-brown": {"noise_prob": 1.0, "noise_kinds": ("brown",)},
    "noise-hum": {"noise_prob": 1.0, "noise_kinds": ("hum",)},
    "noise-babble": {"noise_prob": 1.0, "noise_kinds": ("babble",)},
    "gain": {"gain_prob": 1.0},
}


# --- determinism ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", TRANSFORMS)
def test_each_transform_is_the_same_under_its_seed_and_differs_under_another(name):
    audio, others = speech_like(), [speech_like(1.5, seed=s) for s in (1, 2)]
    first = only(**TRANSFORMS[name], seed=7)
    again = only(**TRANSFORMS[name], seed=7)
    other = only(**TRANSFORMS[name], seed=8)
    outputs = {}
    for index in range(4):
        a = first(audio, index, others=others)
        assert a.ops and a.ops[0].startswith(name.split("-")[0])
        np.testing.assert_array_equal(a.audio, again(audio, index, others=others).audio)
        outputs[index] = a.audio

    # Another seed, or another epoch, draws something else (for some of the utterances: a
    # speed factor or a gain can come out the same by chance).
    def differs(x: np.ndarray, y: np.ndarray) -> bool:
        return x.shape != y.shape or not np.array_equal(x, y)

    assert any(differs(outputs[i], other(audio, i, others=others).audio) for i in range(4))
    assert any(differs(outputs[i], first(audio, i, 1, others).audio) for i in range(4))


def test_telephone_draw_follows_the_seed():
    # The channel itself has no randomness: which utterances go through it is the seeded part.
    audio = speech_like(0.5)
    applied = {}
    for seed in (1, 1, 2):
        augmenter = only(telephone_prob=0.5, seed=seed)
        applied.setdefault(seed, []).append(
            [i for i in range(40) if augmenter(audio, i).ops == ("telephone",)]
        )
    assert applied[1][0] == applied[1][1]
    assert applied[1][0] != applied[2][0]
    assert 8 < len(applied[2][0]) < 32  # about half


def test_an_utterance_is_augmented_the_same_in_any_worker_or_order():
    everything = only(speed_prob=0.7, noise_prob=0.7, telephone_prob=0.3, gain_prob=0.5, seed=3)
    audios = [speech_like(1.0, seed=i) for i in range(6)]
    forward = [everything(a, i).audio for i, a in enumerate(audios)]
    # A fresh Augmenter (another worker) visiting the utterances in reverse order.
    worker = only(speed_prob=0.7, noise_prob=0.7, telephone_prob=0.3, gain_prob=0.5, seed=3)
    backward = {i: worker(audios[i], i).audio for i in reversed(range(6))}
    for i in range(6):
        np.testing.assert_array_equal(forward[i], backward[i])


def test_switching_one_transform_on_leaves_the_others_draws_unchanged():
    audio = speech_like(1.0)
    speed_only = only(speed_prob=0.5, seed=5)
    with_gain = only(speed_prob=0.5, gain_prob=0.5, seed=5)
    for index in range(12):
        assert speed_only.speed_factor(index) == with_gain.speed_factor(index)
        ops = [op for op in with_gain(audio, index).ops if op != "gain"]
        assert tuple(ops) == speed_only(audio, index).ops


def test_everything_off_returns_the_very_same_array():
    audio = speech_like()
    augmenter = Augmenter(AugmentSection())
    assert not augmenter.active
    result = augmenter(audio, 17, epoch=3)
    assert result.audio is audio and result.ops == ()
    # Probabilities at 0 leave it unchanged whatever the other keys say.
    result = only(speed=(1.1,), noise_snr_db=(0.0, 0.0), gain_db=(6.0, 6.0))(audio, 0)
    assert result.audio is audio
    assert apply_condition(audio, "clean", seed=1) is audio


# --- speed --------------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.9, 1.1, 0.95, 1.05])
def test_speed_changes_length_by_the_factor_and_pitch_with_it(factor):
    audio = tone(440.0, seconds=2.0)
    out = speed_perturb(audio, factor)
    assert out.dtype == np.float32
    assert abs(len(out) - len(audio) / factor) <= 1
    assert len(out) == perturbed_samples(len(audio), factor)
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.fft.rfftfreq(len(out), 1 / SR)[np.argmax(spectrum)]
    assert peak_hz == pytest.approx(440.0 * factor, abs=1.0)  # Kaldi's speed: pitch moves too


def test_perturbed_samples_predicts_every_length():
    for samples in [1, 2, 3, 10, 15, 99, 1001, 16_001, 48_007]:
        audio = np.ones(samples, dtype=np.float32)
        for factor in (0.8, 0.9, 1.1, 1.2):
            assert len(speed_perturb(audio, factor)) == perturbed_samples(samples, factor)


def test_speed_factors_are_drawn_from_the_list_and_known_before_the_audio():
    augmenter = only(speed_prob=1.0, speed=(0.9, 1.0, 1.1), seed=2)
    factors = [augmenter.speed_factor(i) for i in range(60)]
    assert set(factors) == {0.9, 1.0, 1.1}
    audio = speech_like(1.0)
    for index, factor in enumerate(factors[:6]):
        result = augmenter(audio, index)
        assert len(result.audio) == perturbed_samples(len(audio), factor)
        assert result.ops == (() if factor == 1.0 else (f"speed-{factor:g}",))


# --- noise --------------------------------------------------------------------------------


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    return power_db(clean) - power_db(noisy.astype(np.float64) - clean)


@pytest.mark.parametrize("kind", ["white", "pink", "brown", "hum", "babble"])
@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
def test_noise_is_added_at_the_drawn_snr(kind, snr_db):
    audio = speech_like()
    augmenter = only(noise_prob=1.0, noise_kinds=(kind,), noise_snr_db=(snr_db, snr_db))
    others = [speech_like(0.7, seed=9), speech_like(3.0, seed=10)]
    result = augmenter(audio, 4, others=others)
    assert result.ops == (f"noise-{kind}",)
    assert result.audio.dtype == np.float32 and len(result.audio) == len(audio)
    assert measured_snr(audio, result.audio) == pytest.approx(snr_db, abs=0.5)


def test_noise_colours_have_their_spectral_slopes():
    # Power in an octave: rising 3 dB per octave for white, flat for pink, falling 3 dB
    # for brown; compared between two octaves three apart.
    audio = speech_like(4.0)

    def octave_ratio_db(kind: str) -> float:
        augmenter = only(noise_prob=1.0, noise_kinds=(kind,), noise_snr_db=(0.0, 0.0))
        noise = augmenter(audio, 0).audio.astype(np.float64) - audio
        power = np.abs(np.fft.rfft(noise)) ** 2
        freqs = np.fft.rfftfreq(len(noise), 1 / SR)
        low = power[(freqs >= 250) & (freqs < 500)].sum()
        high = power[(freqs >= 2000) & (freqs < 4000)].sum()
        return 10 * np.log10(low / high)  # three octaves apart

    assert octave_ratio_db("white") == pytest.approx(-9.0, abs=1.0)
    assert octave_ratio_db("pink") == pytest.approx(0.0, abs=1.0)
    assert octave_ratio_db("brown") == pytest.approx(9.0, abs=1.0)


def test_hum_sits_on_the_mains_harmonics():
    audio = speech_like(2.0)
    augmenter = only(noise_prob=1.0, noise_kinds=("hum",), noise_snr_db=(-10.0, -10.0))
    noise = augmenter(audio, 0).audio.astype(np.float64) - audio
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / SR)
    top = freqs[np.argsort(power)[-3:]]
    mains = 50.0 if np.isclose(top, 50.0).any() else 60.0
    assert set(np.round(top / mains)) <= {1.0, 2.0, 3.0}


def test_babble_is_made_of_the_other_utterances():
    audio = tone(1000.0, seconds=1.0, level=0.3)
    other = tone(2500.0, seconds=0.3, level=0.1)  # short: looped to cover the utterance
    augmenter = only(noise_prob=1.0, noise_kinds=("babble",), noise_snr_db=(0.0, 0.0))
    noise = augmenter(audio, 0, others=[other]).audio.astype(np.float64) - audio
    power = np.abs(np.fft.rfft(noise)) ** 2
    freqs = np.fft.rfftfreq(len(noise), 1 / SR)
    assert power[np.abs(freqs - 2500) < 20].sum() > 0.9 * power.sum()
    # Without others, babble is the utterance itself reversed: its own spectrum.
    noise = augmenter(audio, 0).audio.astype(np.float64) - audio
    power = np.abs(np.fft.rfft(noise)) ** 2
    assert power[np.abs(freqs - 1000) < 20].sum() > 0.9 * power.sum()


def test_noise_recordings_are_found_at_any_depth_cropped_looped_and_resampled(tmp_path):
    (tmp_path / "noise" / "free-sound").mkdir(parents=True)
    (tmp_path / "noise" / "sound-bible" / "deep").mkdir(parents=True)
    long = tone(700.0, seconds=5.0, level=0.2)
    soundfile.write(tmp_path / "noise" / "free-sound" / "noise-0001.wav", long, SR)
    # Short, stereo and at 8 kHz: looped, mixed to mono and resampled.
    short = np.stack([tone(300.0, 0.5, 0.2)[::2], tone(300.0, 0.5, 0.2)[::2]], axis=1)
    soundfile.write(tmp_path / "noise" / "sound-bible" / "deep" / "n2.flac", short, 8000)
    (tmp_path / "noise" / "README").write_text("not audio")
    files = list_noise_files(tmp_path)
    assert [f.rsplit("/", 1)[-1] for f in files] == ["noise-0001.wav", "n2.flac"]

    audio = speech_like(2.0)
    augmenter = only(
        noise_prob=1.0, noise_kinds=("file",), noise_dir=str(tmp_path), noise_snr_db=(5.0, 5.0)
    )
    seen = set()
    for index in range(8):
        result = augmenter(audio, index)
        assert result.ops == ("noise-file",)
        assert measured_snr(audio, result.audio) == pytest.approx(5.0, abs=0.5)
        noise = result.audio.astype(np.float64) - audio
        power = np.abs(np.fft.rfft(noise)) ** 2
        seen.add(float(np.fft.rfftfreq(len(noise), 1 / SR)[np.argmax(power)]))
    assert seen == {300.0, 700.0}

    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no .wav or .flac files under"):
        list_noise_files(tmp_path / "empty")


# --- telephone ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("hz", "passes"),
    [
        (100, False),
        (200, False),
        (280, False),
        (500, True),
        (1000, True),
        (3000, True),
        (3420, False),
        (3700, False),
        (5000, False),
        (7000, False),
    ],
)
def test_telephone_keeps_300_to_3400_hz_only(hz, passes):
    audio = tone(float(hz), seconds=1.0)
    out = telephone(audio)
    assert len(out) == len(audio) and out.dtype == np.float32
    middle = slice(SR // 10, -SR // 10)  # away from the edges' ramps
    change = power_db(out[middle]) - power_db(audio[middle])
    if passes:
        assert change == pytest.approx(0.0, abs=0.5)
    else:
        assert change < -40


def test_telephone_removes_the_energy_of_a_chirp_outside_the_band():
    t = np.arange(2 * SR) / SR
    chirp = (0.5 * np.sin(2 * np.pi * (20 * t + (7900 - 20) / 4 * t**2))).astype(np.float32)
    out = telephone(chirp).astype(np.float64)
    power = np.abs(np.fft.rfft(out * np.hanning(len(out)))) ** 2
    freqs = np.fft.rfftfreq(len(out), 1 / SR)
    outside = power[(freqs < 300) | (freqs > 3400)].sum()
    assert outside / power.sum() < 1e-4  # under -40 dB
    inside = power[(freqs > 400) & (freqs < 3300)].sum()
    reference = np.abs(np.fft.rfft(chirp * np.hanning(len(chirp)))) ** 2
    assert inside / reference[(freqs > 400) & (freqs < 3300)].sum() == pytest.approx(1, abs=0.1)


def test_mu_law_round_trip_is_8_bit_and_close():
    x = np.linspace(-1, 1, 200_001, dtype=np.float32)
    codes = mu_law_encode(x)
    assert codes.dtype == np.uint8 and len(np.unique(codes)) == 256
    y = mu_law_decode(codes)
    assert np.max(np.abs(y - x)) < 0.022  # half the largest step, at full scale
    small = x[np.abs(x) < 0.01]
    assert np.max(np.abs(mu_law_decode(mu_law_encode(small)) - small)) < 1e-3  # finer near 0
    assert mu_law_decode(mu_law_encode(np.array([3.0], dtype=np.float32)))[0] == 1.0  # clipped


# --- gain -----------------------------------------------------------------------------------


@pytest.mark.parametrize("gain_db", [-20.0, -6.0, 0.0, 3.0, 12.0])
def test_gain_changes_rms_by_the_requested_db(gain_db):
    audio = tone(440.0, level=0.1)
    out = apply_gain(audio, gain_db)
    assert power_db(out) - power_db(audio) == pytest.approx(gain_db, abs=0.01)
    augmenter = only(gain_prob=1.0, gain_db=(gain_db, gain_db))
    assert power_db(augmenter(audio, 0).audio) - power_db(audio) == pytest.approx(gain_db, abs=0.01)


def test_gain_never_clips():
    audio = tone(440.0, level=0.8)
    out = apply_gain(audio, 12.0)
    assert np.max(np.abs(out)) == pytest.approx(MAX_PEAK, rel=1e-6)
    loud = tone(440.0, level=1.0)
    np.testing.assert_array_equal(apply_gain(loud, 6.0), loud)  # no headroom: unchanged
    assert power_db(apply_gain(loud, -6.0)) - power_db(loud) == pytest.approx(-6.0, abs=0.01)


# --- what was done ----------------------------------------------------------------------------


def test_the_plan_is_drawn_without_audio_and_is_what_runs():
    augmenter = only(
        speed_prob=0.5, speed=(0.9, 1.1), noise_prob=0.5, telephone_prob=0.25, gain_prob=0.5
    )
    audio = speech_like(0.3)
    for index in range(20):
        plan = augmenter.plan(index, epoch=2)
        result = augmenter(audio, index, epoch=2)
        assert result.ops == plan.ops
        assert len(result.audio) == perturbed_samples(len(audio), plan.speed)


def test_the_tally_counts_each_op():
    # Counted in the training process from the plans alone: no audio is read there.
    augmenter = only(speed_prob=0.5, speed=(1.1,), telephone_prob=0.25, seed=4)
    tally = AugmentTally()
    for index in range(40):
        tally.add(augmenter.plan(index).ops)
    counts = tally.as_dict()
    assert counts["utterances"] == 40
    assert set(counts) == {"utterances", "speed-1.1", "telephone"}
    assert 10 < counts["speed-1.1"] < 30 and 3 < counts["telephone"] < 18
    assert counts["speed-1.1"] == sum(augmenter.speed_factor(i) == 1.1 for i in range(40))
    audio = speech_like(0.2)
    assert counts["telephone"] == sum("telephone" in augmenter(audio, i).ops for i in range(40))


# --- named evaluation conditions --------------------------------------------------------------


def test_condition_names_parse_into_steps():
    steps = parse_condition("telephone+noise-babble-10db").steps
    assert [(s.transform, s.value, s.noise) for s in steps] == [
        ("telephone", 0.0, ""),
        ("noise", 10.0, "babble"),
    ]
    assert parse_condition("noise-10db").steps[0].noise == "white"  # the short form
    assert parse_condition("speed-0.9").steps[0].value == 0.9
    assert parse_condition("quiet-20db").steps[0].value == -20.0
    assert parse_condition("loud-6db").steps[0].value == 6.0
    assert parse_condition("noise-pink--5db").steps[0].value == -5.0


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("telefone", r"Unknown evaluation condition 'telefone'\. Did you mean 'telephone'\?"),
        ("noise-10", r"Unknown evaluation condition 'noise-10'\. Use clean, telephone"),
        ("noise-pinkk-5db", r"Did you mean 'pink'\?"),
        ("telephone+nois-5db", r"'telephone\+nois-5db' \(at 'nois-5db'\)\. Did you mean 'noise'"),
        ("speed-3", r"'speed-3': the value of 'speed-3' must be in \[0\.5, 2\]"),
        ("noise-white-90db", r"must be in \[-20, 60\]"),
    ],
)
def test_a_bad_condition_is_one_line_naming_it_and_the_valid_forms(name, message):
    with pytest.raises(ConfigError, match=message) as error:
        parse_condition(name)
    assert "\n" not in str(error.value)


def test_conditions_are_deterministic_under_their_seed():
    audio = speech_like()
    a = apply_condition(audio, "noise-pink-10db+telephone", seed=11)
    np.testing.assert_array_equal(a, apply_condition(audio, "noise-pink-10db+telephone", seed=11))
    assert not np.array_equal(a, apply_condition(audio, "noise-pink-10db+telephone", seed=12))
    assert measured_snr(audio, apply_condition(audio, "noise-10db", seed=3)) == pytest.approx(
        10.0, abs=0.5
    )
    assert len(apply_condition(audio, "speed-1.1", seed=0)) == perturbed_samples(len(audio), 1.1)
    np.testing.assert_array_equal(apply_condition(audio, "telephone", seed=0), telephone(audio))
    assert power_db(apply_condition(audio, "quiet-20db", seed=0)) == pytest.approx(
        power_db(audio) - 20, abs=0.01
    )
    with pytest.raises(ConfigError, match="augment.noise_dir"):
        apply_condition(audio, "noise-file-10db", seed=0)


# --- the config section -----------------------------------------------------------------------


def test_the_augment_section_is_off_by_default():
    section = load_config().augment
    assert section == AugmentSection()
    assert not section.spec_augment
    assert (section.speed_prob, section.noise_prob, section.telephone_prob) == (0, 0, 0)
    assert section.gain_prob == 0 and not Augmenter(section).active
    reference = config_reference()
    assert "  augment.speed: list of numbers = [0.9, 1.0, 1.1]" in reference
    assert "  augment.noise_snr_db: list of numbers = [5.0, 20.0]" in reference


def test_the_augment_section_reads_lists_and_ranges(tmp_path):
    path = tmp_path / "pefty.yaml"
    path.write_text(
        "augment:\n  speed: [0.9, 1.1]\n  speed_prob: 0.5\n  noise_snr_db: [0, 15]\n"
        "  noise_kinds: [pink, babble]\n  spec_augment: true\n"
    )
    section = load_config(path, ["augment.gain_db=-3,3", "augment.seed=9"]).augment
    assert section.speed == (0.9, 1.1) and section.noise_snr_db == (0.0, 15.0)
    assert section.noise_kinds == ("pink", "babble") and section.gain_db == (-3.0, 3.0)
    assert section.spec_augment and section.seed == 9
    assert load_config(None, ["augment.speed=1.1"]).augment.speed == (1.1,)
    # The resolved config written beside an adapter reads back the same.
    dump_config(load_config(path), tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.sped=0.9", r"Unknown config key 'augment\.sped'\. Did you mean 'augment\.speed'"),
        ("augment.noise_prop=0.5", r"Did you mean 'augment\.noise_prob'"),
        ("augment.speed=0.9,3", r"'augment\.speed' must be in \[0\.5, 2\]; got 3\.0"),
        ("augment.speed=fast", r"'augment\.speed' must be a list of numbers"),
        ("augment.noise_prob=1.5", r"'augment\.noise_prob' must be in \[0, 1\]"),
        ("augment.noise_snr_db=10", r"'augment\.noise_snr_db' must be a list of 2 numbers"),
        ("augment.noise_snr_db=[20, 5]", r"'augment\.noise_snr_db' must be \[low, high\]"),
        ("augment.noise_snr_db=[0, 90]", r"must be in \[-20, 60\]; got 90\.0"),
        ("augment.gain_db=[-50, 0]", r"'augment\.gain_db' must be in \[-40, 40\]"),
        ("augment.noise_kinds=white,pinck", r"got 'pinck'\. Did you mean 'pink'\?"),
        ("augment.noise_kinds=white,file", r"'augment\.noise_dir' go together"),
        ("augment.noise_dir=/data/musan", r"'augment\.noise_dir' go together"),
        ("augment.mask_time_length=0", r"'augment\.mask_time_length' must be in \[1, 100\]"),
        ("augment.mask_feature_prob=-0.1", r"'augment\.mask_feature_prob' must be in \[0, 1\]"),
        ("augment.spec_augment=yes please", "true or false"),
        ("augment.seed=-1", r"'augment\.seed' must be >= 0"),
    ],
)
def test_the_augment_section_is_validated(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_a_noise_dir_that_is_missing_is_named():
    section = AugmentSection(noise_prob=1.0, noise_kinds=("file",), noise_dir="/nonexistent/n")
    with pytest.raises(ConfigError, match="'augment.noise_dir': /nonexistent/n is not a folder"):
        Augmenter(section)


# --- SpecAugment ------------------------------------------------------------------------------


def test_spec_augment_overrides_are_whisper_config_attributes():
    off = spec_augment_overrides(AugmentSection())
    assert off == {"apply_spec_augment": False}  # always set: a merged base may carry True
    on = spec_augment_overrides(
        AugmentSection(spec_augment=True, mask_time_prob=0.1, mask_feature_prob=0.2)
    )
    assert on == {
        "apply_spec_augment": True,
        "mask_time_prob": 0.1,
        "mask_time_length": 10,
        "mask_feature_prob": 0.2,
        "mask_feature_length": 10,
    }
    config = WhisperConfig()
    for key in on:
        assert hasattr(config, key), key


def tiny_whisper(section: AugmentSection) -> WhisperForConditionalGeneration:
    """A tiny random Whisper whose encoder takes 100 frames, without dropout, so train() and
    eval() differ only where SpecAugment masks."""
    dims = {**TINY_DIMS, "max_source_positions": 50}
    config = WhisperConfig(**dims, num_mel_bins=80, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    for key, value in spec_augment_overrides(section).items():
        setattr(model.config, key, value)
    return model


def encoder_output(model: WhisperForConditionalGeneration, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(input_features=features.clone(), decoder_input_ids=torch.tensor([[50258]] * 2))
    return out.encoder_last_hidden_state


def test_spec_augment_masks_in_training_only():
    features = torch.randn(2, 80, 100, generator=torch.Generator().manual_seed(1))
    on = AugmentSection(spec_augment=True, mask_time_prob=0.1, mask_feature_prob=0.1)
    masked, plain = tiny_whisper(on), tiny_whisper(AugmentSection())
    # Same weights; only the config differs.
    assert all(
        torch.equal(a, b) for a, b in zip(masked.parameters(), plain.parameters(), strict=True)
    )
    masked.eval(), plain.eval()
    reference = encoder_output(plain, features)
    assert torch.equal(encoder_output(masked, features), reference)  # eval: identical
    plain.train()
    assert torch.equal(encoder_output(plain, features), reference)  # off: train = eval
    masked.train()
    assert not torch.equal(encoder_output(masked, features), reference)  # on: masked
    # Turning it off again through the overrides (as a later round would) stops the masks.
    for key, value in spec_augment_overrides(dataclasses.replace(on, spec_augment=False)).items():
        setattr(masked.config, key, value)
    assert torch.equal(encoder_output(masked, features), reference)
