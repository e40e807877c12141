"""The sample corpus's audio: espeak-ng's Korean voices, with pauses, noise tags and babble.

espeak-ng runs as a subprocess per utterance; every random choice is seeded from the utterance's
key, so the same corpus spec gives the same bytes.
"""

from __future__ import annotations

from random import Random

import numpy as np

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.data.espeak import VOICES, Voice, synthesize
from pefty_whisper.demo.sentences import TEMPLATES, ScriptLine, realize, spoken_text


def _pick_voice(rng: Random, harder: bool) -> Voice:
    if harder:
        # Outside the train ranges on purpose: eval_other should be harder than eval_clean.
        speed = rng.choice((rng.randint(110, 125), rng.randint(185, 205)))
        pitch = rng.choice((rng.randint(10, 28), rng.randint(72, 90)))
    else:
        speed, pitch = rng.randint(130, 175), rng.randint(32, 68)
    return Voice(rng.choice(VOICES), speed, pitch)


def _trim_silence(audio: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > threshold)
    return audio[loud[0] : loud[-1] + 1] if loud.size else audio


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def _burst(noise: np.random.Generator, seconds: float, level: float, smooth: int) -> np.ndarray:
    """A short noise burst with a smooth envelope; `smooth` taps low-pass it (breath vs bang)."""
    n = int(seconds * SAMPLE_RATE)
    burst = noise.standard_normal(n)
    if smooth > 1:
        burst = np.convolve(burst, np.ones(smooth) / np.sqrt(smooth), mode="same")
    return (burst * np.hanning(n) * level).astype(np.float32)


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def _edge_sound(tag: str, noise: np.random.Generator, rng: Random, speech_rms: float) -> np.ndarray:
    """Audio for a noise tag in the padding: a broadband bang for n/, a soft breath for b/."""
    if tag == "n/":
        return _burst(noise, rng.uniform(0.12, 0.3), speech_rms * rng.uniform(0.3, 0.6), smooth=1)
    if tag == "b/":
        return _burst(noise, rng.uniform(0.25, 0.4), speech_rms * 0.15, smooth=8)
    return _silence(0.0)


def _babble(rng: Random, length: int) -> np.ndarray:
    """Another voice saying another sentence backwards: speech-like but unintelligible."""
    text = spoken_text(realize(rng.choice(TEMPLATES), rng))
    babble = _trim_silence(synthesize(text, _pick_voice(rng, harder=False)))[::-1]
    return np.resize(babble, length)  # np.resize repeats a short babble to fill the utterance


def render_audio(line: ScriptLine, key: str, harder: bool) -> np.ndarray:
    """One utterance's float32 16 kHz audio; `key` seeds its voice, padding and noise."""
    rng = Random(f"pefty-sample:{key}:audio")
    noise = np.random.default_rng(rng.getrandbits(64))
    speech = _trim_silence(synthesize(line.spoken, _pick_voice(rng, harder)))
    speech = speech * (rng.uniform(0.3, 0.8) / max(float(np.max(np.abs(speech))), 1e-6))
    level = _rms(speech)
    tokens = line.raw.split()
    pieces = [
        _silence(rng.uniform(0.15, 0.4)),
        _edge_sound(tokens[0], noise, rng, level),
        _silence(rng.uniform(0.05, 0.15)),
        speech,
        _silence(rng.uniform(0.1, 0.25)),
        _edge_sound(tokens[-1], noise, rng, level),
        _silence(rng.uniform(0.15, 0.4)),
    ]
    audio = np.concatenate(pieces)
    if harder:
        babble = _babble(rng, audio.size)
        # Harder, not hopeless: the real eval_other is only about 1 CER point harder.
        babble_snr_db, white_snr_db = rng.uniform(12.0, 18.0), rng.uniform(20.0, 28.0)
        audio = audio + babble * (level / max(_rms(babble), 1e-6) * 10 ** (-babble_snr_db / 20))
        audio = audio + noise.standard_normal(audio.size) * level * 10 ** (-white_snr_db / 20)
    # A faint noise floor: real recordings are never digital zero between words.
    return audio + noise.standard_normal(audio.size).astype(np.float32) * 2e-4


def to_pcm_bytes(audio: np.ndarray) -> bytes:
    """Float audio to KsponSpeech's headerless 16-bit signed little-endian pcm, clipping peaks."""
    return np.clip(np.round(audio * 32767.0), -32768, 32767).astype("<i2").tobytes()
