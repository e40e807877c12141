"""Audio decoding: KsponSpeech .pcm, .wav, .flac (any rate, any channels) -> float32 16 kHz mono.

KsponSpeech ships headerless pcm that no decoder sniffs, so pcm is read with numpy; everything
else goes through soundfile (libsndfile), which avoids the torchcodec/FFmpeg dependency of
`datasets.Audio`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pefty_whisper.errors import DataError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
PCM_SUFFIX = ".pcm"
# What soundfile (libsndfile) decodes; mp3 needs libsndfile >= 1.1, which the soundfile wheel has.
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
AUDIO_SUFFIXES = (PCM_SUFFIX, *SOUNDFILE_SUFFIXES)


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    # KsponSpeech has a few pcm files with an odd byte count; the last byte is dropped.
    odd_byte_count: bool = False


def load_audio(path: str | Path) -> np.ndarray:
    """Decode one file to the float32 16 kHz mono waveform Whisper's feature extractor expects."""
    path = Path(path)
    if path.suffix.lower() == PCM_SUFFIX:
        return _load_pcm(path)
    return _load_with_soundfile(path)


def probe_audio(path: str | Path) -> AudioInfo:
    """Check that a file exists and is readable, and get its duration, without decoding it all.

    Used by `pefty prepare` on hundreds of thousands of files, so it reads headers only.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: audio file not found")
    if path.suffix.lower() == PCM_SUFFIX:
        size = _readable_size(path)
        if size < 2:
            raise DataError(f"{path}: empty pcm file ({size} bytes)")
        return AudioInfo(duration_s=(size // 2) / SAMPLE_RATE, odd_byte_count=size % 2 == 1)
    if path.suffix.lower() not in SOUNDFILE_SUFFIXES:
        raise DataError(
            f"{path}: unsupported audio format '{path.suffix}' (use {', '.join(AUDIO_SUFFIXES)})"
        )
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise DataError(f"{path}: unreadable audio file ({_first_line(exc)})") from exc
    if info.frames <= 0:
        raise DataError(f"{path}: audio file holds no samples")
    return AudioInfo(duration_s=info.frames / info.samplerate)


def _readable_size(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            handle.read(2)
    except OSError as exc:
        raise DataError(f"{path}: cannot read audio file ({exc.strerror})") from exc
    return path.stat().st_size


def _load_pcm(path: Path) -> np.ndarray:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read audio file ({exc.strerror})") from exc
    if len(raw) % 2:
        raw = raw[:-1]
    if not raw:
        raise DataError(f"{path}: empty pcm file")
    samples = np.frombuffer(raw, dtype="<i2")
    return samples.astype(np.float32) / 32768.0


def _load_with_soundfile(path: Path) -> np.ndarray:
    import soundfile

    if not path.is_file():
        raise DataError(f"{path}: audio file not found")
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise DataError(f"{path}: unreadable audio file ({_first_line(exc)})") from exc
    if audio.shape[0] == 0:
        raise DataError(f"{path}: audio file holds no samples")
    mono = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    return resample(mono, rate)


def resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Resample to 16 kHz with soxr (high quality, fast); a no-op at 16 kHz."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(audio, dtype=np.float32)
    import soxr

    return soxr.resample(audio, rate, SAMPLE_RATE).astype(np.float32, copy=False)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
