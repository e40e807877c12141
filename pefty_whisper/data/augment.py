"""Waveform augmentation: speed, additive noise, telephone channel and gain on 16 kHz mono
float32, for training (`Augmenter`, the config's `augment:` section) and for named evaluation
conditions (conditions.py, e.g. `telephone+noise-babble-10db`).

Pure numpy and soxr, one utterance at a time, in the loader's workers. Every random choice comes
from a generator derived from (augment.seed, epoch, utterance index, transform), never from a
stream shared across utterances: an utterance is augmented the same way whichever worker loads it
and however many workers there are, and switching one transform on leaves the others' draws as
they were. A training set holds the chain as a `LoaderAugment` (its part's index range, and the
epoch in memory shared with the workers; train/augmentation.py wires it). SpecAugment is not a
waveform transform: transformers masks the log-mel inside the model, switched on through the
model config (`spec_augment_overrides`).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soxr

from pefty_whisper.config import NOISE_KINDS, AugmentSection
from pefty_whisper.data.audio import SAMPLE_RATE, load_audio
from pefty_whisper.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

TELEPHONE_RATE = 8_000
TELEPHONE_BAND_HZ = (300.0, 3400.0)  # the G.712 voice channel
# Cosine ramps inside the band: nothing passes outside 300-3,400 Hz, and the edges are smooth
# enough (a ~20 ms impulse response) not to ring like a brick-wall filter.
TELEPHONE_RAMP_HZ = 50.0
MU = 255  # G.711's mu-law constant: 8-bit codes
# Below this pink and brown noise stop rising: a 1/f spectrum down to DC is mostly rumble under
# the speech band (infinite at DC), which would leave little noise where speech is at the SNR.
COLOURED_FLOOR_HZ = 20.0
HUM_HARMONICS = 5
BABBLE_TALKERS = (3, 6)  # fewer is intelligible crosstalk, more is almost stationary noise
MAX_PEAK = 0.99  # gain never lifts a peak above this: clipping is a distortion nobody asked for
NOISE_FILE_SUFFIXES = (".wav", ".flac")
# Each transform's own generator (the last element of its spawn key). Fixed numbers: a transform
# added later gets a new one and leaves these draws unchanged.
_STREAMS = {"speed": 0, "noise": 1, "telephone": 2, "gain": 3, "noise_signal": 4}
# A mix's parts (and a packed mix's passes) draw from index ranges this far apart: a manifest
# never has 2^32 rows.
PART_STRIDE = 1 << 32


def utterance_rng(seed: int, index: int, epoch: int = 0, stream: int = 0) -> np.random.Generator:
    """The generator of one utterance's draws: a function of its place (and the transform), not
    of the order or the worker in which utterances are loaded."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(epoch, index, stream)))


# --- the transforms ---------------------------------------------------------------------------


def speed_perturb(audio: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi/ESPnet speed perturbation: the waveform resampled as if played `factor` times
    faster, so tempo and pitch both change; 1.1 gives `perturbed_samples(len, 1.1)` samples."""
    if factor == 1.0:
        return audio
    audio = np.ascontiguousarray(audio, dtype=np.float32)
    return soxr.resample(audio, SAMPLE_RATE * factor, SAMPLE_RATE)


def perturbed_samples(samples: int, factor: float) -> int:
    """The length `speed_perturb` returns (soxr rounds samples / factor half up), so windows can
    be planned on perturbed durations before any audio is read."""
    return math.floor(samples * SAMPLE_RATE / (SAMPLE_RATE * factor) + 0.5)


def coloured_noise(kind: str, samples: int, rng: np.random.Generator) -> np.ndarray:
    """White, pink (power 1/f: equal energy per octave, like most room noise) or brown (1/f^2:
    traffic, wind) noise, shaped in the frequency domain with one inverse FFT."""
    if kind == "white":
        return rng.standard_normal(samples, dtype=np.float32)
    if kind not in ("pink", "brown"):
        raise ValueError(f"not a coloured noise: {kind!r}")
    size = _fast_length(samples)
    freqs = np.maximum(np.fft.rfftfreq(size, 1 / SAMPLE_RATE).astype(np.float32), COLOURED_FLOOR_HZ)
    shape = 1 / np.sqrt(freqs) if kind == "pink" else 1 / freqs  # the amplitude: half the power's
    shape[0] = 0.0  # no DC offset
    # Complex Gaussian bins in float32 (half the work of float64; the noise is float32 anyway).
    spectrum = rng.standard_normal((len(freqs), 2), dtype=np.float32).view(np.complex64)[:, 0]
    return np.fft.irfft(spectrum * shape, size)[:samples].astype(np.float32, copy=False)


def hum(samples: int, rng: np.random.Generator) -> np.ndarray:
    """Mains hum: 50 or 60 Hz and its harmonics at falling levels with random phases, as a
    ground loop puts it under a recording. Computed over one period (20 ms at 50 Hz, three
    periods in 50 ms at 60 Hz: whole samples at 16 kHz) and repeated."""
    mains = int(rng.choice((50, 60)))
    phases = rng.uniform(0, 2 * np.pi, HUM_HARMONICS)
    period = SAMPLE_RATE // math.gcd(SAMPLE_RATE, mains)
    t = np.arange(period, dtype=np.float64) * (2 * np.pi * mains / SAMPLE_RATE)
    one = sum(np.sin(k * t + phase) / k for k, phase in enumerate(phases, start=1))
    return np.resize(one.astype(np.float32), samples)


def babble(samples: int, sources: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Several talkers at once: 3-6 stretches of `sources` (other utterances) at random offsets,
    looped where short, each at the same level."""
    usable = [s for s in sources if len(s) and np.any(s)]
    out = np.zeros(samples, dtype=np.float32)
    if not usable:
        return out
    for _ in range(int(rng.integers(BABBLE_TALKERS[0], BABBLE_TALKERS[1] + 1))):
        source = usable[int(rng.integers(len(usable)))]
        out += _loop_crop(source, samples, rng) / _rms(source)
    return out


def list_noise_files(folder: str | Path) -> tuple[str, ...]:
    """Every .wav/.flac under `folder` at any depth (MUSAN's noise/free-sound/*.wav and the
    like), sorted, so a drawn index names the same file on every machine and worker."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"Config key 'augment.noise_dir': {root} is not a folder")
    files = sorted(
        str(p) for p in root.rglob("*") if p.suffix.lower() in NOISE_FILE_SUFFIXES and p.is_file()
    )
    if not files:
        raise ConfigError(
            f"Config key 'augment.noise_dir': no .wav or .flac files under {root} "
            "(point it at a folder of noise recordings, e.g. MUSAN's noise/)"
        )
    return tuple(files)


def file_noise(path: str, samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random stretch of a noise recording, looped where the recording is shorter. Only the
    stretch is read, so a minutes-long recording costs what the utterance needs."""
    import soundfile

    try:
        info = soundfile.info(path)
        need = math.ceil(samples * info.samplerate / SAMPLE_RATE) + 1
        if info.frames <= need:
            return _loop_crop(load_audio(path), samples, rng)
        start = int(rng.integers(info.frames - need + 1))
        data, rate = soundfile.read(path, start=start, frames=need, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise DataError(f"{path}: unreadable noise file ({exc})") from exc
    mono = np.ascontiguousarray(data.mean(axis=1), dtype=np.float32)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.resize(mono, samples)  # np.resize repeats: covers a sample lost to resampling


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`audio` plus `noise` scaled so that their power ratio is `snr_db`. Powers are mean squares
    over the whole utterance, pauses included (the usual "global" SNR); a silent utterance or
    noise is returned unchanged, since no level would give that SNR."""
    speech_power = float(np.mean(np.square(audio, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if speech_power == 0 or noise_power == 0:
        return audio
    scale = math.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (audio + np.float32(scale) * noise).astype(np.float32, copy=False)


def telephone(audio: np.ndarray) -> np.ndarray:
    """A narrowband phone call: down to 8 kHz, band-passed to 300-3,400 Hz (G.712), mu-law 8-bit
    encoded and decoded (G.711's companding, in its continuous form), band-passed again as the
    receiving end does (which keeps the codec's noise in the band too), back to 16 kHz at the
    same length."""
    narrow = soxr.resample(
        np.ascontiguousarray(audio, dtype=np.float32), SAMPLE_RATE, TELEPHONE_RATE
    )
    narrow = _band_pass(narrow, TELEPHONE_RATE, *TELEPHONE_BAND_HZ)
    narrow = _band_pass(mu_law_decode(mu_law_encode(narrow)), TELEPHONE_RATE, *TELEPHONE_BAND_HZ)
    wide = soxr.resample(narrow.astype(np.float32), TELEPHONE_RATE, SAMPLE_RATE)
    return _fit(wide, len(audio))


def mu_law_encode(audio: np.ndarray) -> np.ndarray:
    """8-bit mu-law codes (0-255) of a waveform, clipped to [-1, 1] as a codec clips."""
    x = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    companded = np.copysign(np.log1p(MU * np.abs(x)) / np.float32(math.log1p(MU)), x)
    return np.rint((companded + 1) * np.float32(MU / 2)).astype(np.uint8)


def mu_law_decode(codes: np.ndarray) -> np.ndarray:
    """The waveform of 8-bit mu-law codes."""
    y = codes.astype(np.float32) * np.float32(2 / MU) - 1
    return np.copysign(np.expm1(np.abs(y) * np.float32(math.log1p(MU))) / np.float32(MU), y)


def apply_gain(audio: np.ndarray, gain_db: float) -> np.ndarray:
    """`audio` louder or quieter by `gain_db`, lowered where the peak would pass MAX_PEAK (clip
    safe: a recording level, not a distortion)."""
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak == 0:
        return audio
    gain = 10 ** (gain_db / 20)
    if gain > 1:
        gain = max(1.0, min(gain, MAX_PEAK / peak))
    return (audio * np.float32(gain)).astype(np.float32, copy=False)


def make_noise(
    kind: str,
    audio: np.ndarray,
    rng: np.random.Generator,
    others: Sequence[np.ndarray] = (),
    noise_files: Sequence[str] = (),
) -> np.ndarray:
    """Noise of `kind` as long as `audio` (unscaled: add_noise sets its level)."""
    samples = len(audio)
    if kind in ("white", "pink", "brown"):
        return coloured_noise(kind, samples, rng)
    if kind == "hum":
        return hum(samples, rng)
    if kind == "babble":
        return babble(samples, others if others else (audio[::-1],), rng)
    if kind == "file":
        if not noise_files:
            raise ConfigError("noise kind 'file' needs recordings: set 'augment.noise_dir'")
        return file_noise(noise_files[int(rng.integers(len(noise_files)))], samples, rng)
    raise ConfigError(f"Unknown noise kind {kind!r}: use {', '.join(NOISE_KINDS)}")


# --- the training chain -----------------------------------------------------------------------


@dataclass(frozen=True)
class AugmentPlan:
    """What the chain does to one utterance in one epoch, drawn without its audio: a loader
    worker applies it, and the training process can count it (round.json) or plan packed
    windows on the perturbed durations, without reading a file."""

    speed: float = 1.0
    noise: str | None = None  # the noise kind, None: no noise
    snr_db: float = 0.0
    telephone: bool = False
    gain_db: float | None = None

    @property
    def ops(self) -> tuple[str, ...]:
        """Names of what runs, e.g. ("speed-1.1", "noise-pink", "telephone", "gain")."""
        ops = [f"speed-{self.speed:g}"] if self.speed != 1.0 else []
        ops += [f"noise-{self.noise}"] if self.noise is not None else []
        ops += ["telephone"] if self.telephone else []
        return (*ops, *(["gain"] if self.gain_db is not None else []))


@dataclass(frozen=True)
class Augmented:
    """One utterance after the chain, and what was done to it."""

    audio: np.ndarray
    ops: tuple[str, ...] = ()


@dataclass
class AugmentTally:
    """What augmentation did over a round, for round.json: utterances seen, and how often each
    op ran."""

    utterances: int = 0
    ops: Counter[str] = field(default_factory=Counter)

    def add(self, ops: Sequence[str]) -> None:
        self.utterances += 1
        self.ops.update(ops)

    def as_dict(self) -> dict[str, int]:
        return {"utterances": self.utterances, **dict(sorted(self.ops.items()))}


class Augmenter:
    """The config's waveform chain for one utterance at a time, in the order a recording meets
    them: a talker at some tempo (speed), in a noisy room (noise), over a phone line
    (telephone), recorded at some level (gain). Each is drawn with its own probability."""

    def __init__(self, section: AugmentSection) -> None:
        self.section = section
        # Listed once, before the loader forks its workers, which then share the list.
        uses_files = section.noise_prob > 0 and "file" in section.noise_kinds
        self.noise_files = list_noise_files(section.noise_dir) if uses_files else ()

    @property
    def active(self) -> bool:
        """Whether any waveform transform can run (SpecAugment is the model's, not counted)."""
        s = self.section
        return max(s.speed_prob, s.noise_prob, s.telephone_prob, s.gain_prob) > 0

    def plan(self, index: int, epoch: int = 0) -> AugmentPlan:
        """The draws of utterance `index` (its row in the manifest) in `epoch`."""
        s = self.section
        speed = self._drawn("speed", s.speed_prob, index, epoch)
        noise = self._drawn("noise", s.noise_prob, index, epoch)
        gain = self._drawn("gain", s.gain_prob, index, epoch)
        return AugmentPlan(
            speed=1.0 if speed is None else float(speed.choice(s.speed)),
            noise=None if noise is None else s.noise_kinds[int(noise.integers(len(s.noise_kinds)))],
            snr_db=0.0 if noise is None else float(noise.uniform(*s.noise_snr_db)),
            telephone=self._drawn("telephone", s.telephone_prob, index, epoch) is not None,
            gain_db=None if gain is None else float(gain.uniform(*s.gain_db)),
        )

    def speed_factor(self, index: int, epoch: int = 0) -> float:
        """The factor utterance `index` gets in `epoch` (1.0: none), for planning packed windows
        on perturbed durations (`perturbed_samples`)."""
        return self.plan(index, epoch).speed

    def __call__(
        self,
        audio: np.ndarray,
        index: int,
        epoch: int = 0,
        others: Sequence[np.ndarray] = (),
    ) -> Augmented:
        """Utterance `index` augmented for `epoch`, as `plan` drew it. `others` are other
        utterances' waveforms for babble; without them babble is the utterance itself reversed
        (unintelligible, the same voice). With everything off the input array comes back."""
        if len(audio) == 0:  # nothing to resample, and no power to set an SNR against
            return Augmented(audio)
        plan = self.plan(index, epoch)
        audio = speed_perturb(audio, plan.speed)
        if plan.noise is not None:
            rng = utterance_rng(self.section.seed, index, epoch, _STREAMS["noise_signal"])
            noise = make_noise(plan.noise, audio, rng, others, self.noise_files)
            audio = add_noise(audio, noise, plan.snr_db)
        if plan.telephone:
            audio = telephone(audio)
        if plan.gain_db is not None:
            audio = apply_gain(audio, plan.gain_db)
        return Augmented(audio, plan.ops)

    def _drawn(self, name: str, prob: float, index: int, epoch: int) -> np.random.Generator | None:
        """The transform's generator if it applies to this utterance, else None."""
        if prob <= 0:
            return None
        rng = utterance_rng(self.section.seed, index, epoch, _STREAMS[name])
        return rng if rng.random() < prob else None


class LoaderAugment:
    """The Augmenter as a training set holds it, in the loader's workers.

    The epoch is one word of shared memory, made before the workers fork: the trainer writes it
    at each epoch's start (train/augmentation.py), and persistent workers, which keep their own
    copy of the dataset and never see `set_epoch`, read it there. `part` gives each part of a
    mix (and each packed pass) its own index range, so two sets' row 0 draw apart.
    """

    def __init__(
        self, augmenter: Augmenter, offset: int = 0, epoch: Any = None, max_samples: int = 0
    ) -> None:
        self.augmenter = augmenter
        self.offset = offset
        self.max_samples = max_samples  # 0: no limit; else Whisper's 30 s window
        self._epoch = epoch if epoch is not None else multiprocessing.RawValue("q", 0)

    def part(self, part: int) -> LoaderAugment:
        """The same chain and epoch for part `part` of a mix: indices from part * PART_STRIDE."""
        return LoaderAugment(self.augmenter, part * PART_STRIDE, self._epoch, self.max_samples)

    @property
    def epoch(self) -> int:
        return int(self._epoch.value)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.value = epoch

    def plan(self, index: int, epoch: int | None = None) -> AugmentPlan:
        """Row `index`'s draws in `epoch` (default: the current one)."""
        return self.augmenter.plan(self.offset + index, self.epoch if epoch is None else epoch)

    def __call__(
        self, audio: np.ndarray, index: int, others: Sequence[np.ndarray] = ()
    ) -> Augmented:
        """Row `index` augmented for the current epoch. An utterance slowed past `max_samples`
        keeps its own audio: Whisper would cut it, and its label with it."""
        augmented = self.augmenter(audio, self.offset + index, self.epoch, others)
        if self.max_samples and len(augmented.audio) > self.max_samples >= len(audio):
            return Augmented(audio)
        return augmented


# --- SpecAugment --------------------------------------------------------------------------------


def spec_augment_overrides(section: AugmentSection) -> dict[str, Any]:
    """The WhisperConfig attributes to set on a round's model for SpecAugment. It always holds
    apply_spec_augment, so a base merged from a round that trained with masks does not pass
    them on to a round that did not ask for them.

    transformers 5.24 (modeling_whisper.py, WhisperModel._mask_input_features) returns the
    features untouched unless `config.apply_spec_augment`, and masks time and mel bins only
    `if config.mask_..._prob > 0 and self.training`: validation, evaluate and generate run the
    model in eval mode and never see masks. It masks in WhisperModel.forward when that is given
    input_features (not encoder_outputs), in place, drawing from numpy's global generator (seeded
    by the Trainer's seed, not augment.seed).
    """
    if not section.spec_augment:
        return {"apply_spec_augment": False}
    return {
        "apply_spec_augment": True,
        "mask_time_prob": section.mask_time_prob,
        "mask_time_length": section.mask_time_length,
        "mask_feature_prob": section.mask_feature_prob,
        "mask_feature_length": section.mask_feature_length,
    }


# --- helpers ------------------------------------------------------------------------------------


def _rms(audio: np.ndarray) -> float:
    return math.sqrt(float(np.mean(np.square(audio, dtype=np.float64))))


def _loop_crop(source: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """`samples` of `source` from a random offset, wrapping around to its start where needed."""
    offset = int(rng.integers(len(source)))
    repeats = -(-(offset + samples) // len(source))
    return np.tile(source, repeats)[offset : offset + samples]


def _fit(audio: np.ndarray, samples: int) -> np.ndarray:
    """Exactly `samples` long: resampling there and back can gain or lose one."""
    if len(audio) >= samples:
        return audio[:samples]
    return np.concatenate([audio, np.zeros(samples - len(audio), dtype=audio.dtype)])


def _band_pass(audio: np.ndarray, rate: int, low: float, high: float) -> np.ndarray:
    """Zero-phase band-pass in one FFT: nothing outside [low, high], cosine ramps inside it. The
    padding keeps the filter's short response from wrapping around the ends."""
    size = _fast_length(len(audio) + rate // 10)
    spectrum = np.fft.rfft(np.asarray(audio, dtype=np.float32), size)
    step = rate / size  # Hz per bin
    gain = np.zeros(len(spectrum), dtype=np.float32)
    first, last = math.ceil(low / step), math.floor(high / step)
    gain[first : last + 1] = 1.0
    # Only the ramps' bins need a cosine: a few hundred of a 30 s window's 120,000.
    for edge_lo, edge_hi, rising in (
        (low, low + TELEPHONE_RAMP_HZ, True),
        (high - TELEPHONE_RAMP_HZ, high, False),
    ):
        bins = np.arange(math.ceil(edge_lo / step), math.floor(edge_hi / step) + 1)
        position = (bins * step - edge_lo) / TELEPHONE_RAMP_HZ
        gain[bins] = 0.5 - 0.5 * np.cos(np.pi * (position if rising else 1 - position))
    return np.fft.irfft(spectrum * gain, size)[: len(audio)]


def _fast_length(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n: numpy's FFT is several times slower on a length with a
    large prime factor."""
    best = 1 << max(n - 1, 0).bit_length()
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            twos = 1 << max(-(-n // threes) - 1, 0).bit_length()
            best = min(best, threes * twos)
            threes *= 3
        fives *= 5
    return best
