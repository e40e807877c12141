"""Audio decoding: KsponSpeech .pcm, .wav, .flac (any rate, any channels) -> float32 16 kHz mono.

KsponSpeech ships headerless pcm that no decoder sniffs, so pcm is read with numpy; everything
else goes through soundfile (libsndfile), which avoids the torchcodec/FFmpeg dependency of
`datasets.Audio`.
"""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pefty_whisper.errors import DataError
from pefty_whisper.whisper.context import SAMPLE_RATE

logger = logging.getLogger(__name__)

PCM_SUFFIX = ".pcm"
# What soundfile (libsndfile) decodes; mp3 needs libsndfile >= 1.1, which the soundfile wheel has.
SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
AUDIO_SUFFIXES = (PCM_SUFFIX, *SOUNDFILE_SUFFIXES)
# pcm files up to this size (0.5 s) are checked for being text; larger ones only stat-ed
TEXT_CHECK_MAX_BYTES = 16_384


@dataclass(frozen=True)
class AudioInfo:
    duration_s: float
    # KsponSpeech has a few pcm files with an odd byte count; the last byte is dropped.
    odd_byte_count: bool = False


def load_audio(
    path: str | Path, start: float | None = None, end: float | None = None
) -> np.ndarray:
    """Decode one file to the float32 16 kHz mono waveform Whisper's feature extractor expects.

    `start`/`end` (seconds) read only that span of the file, seeking to it: a manifest row that
    points into an hour-long recording must not decode the hour (data/manifest.py's start/end).
    """
    path = Path(path)
    if start is not None or end is not None:
        return _load_span(path, start or 0.0, end)
    if path.suffix.lower() == PCM_SUFFIX:
        return _load_pcm(path)
    return _load_with_soundfile(path)


def _load_span(path: Path, start: float, end: float | None) -> np.ndarray:
    if end is not None and end <= start:
        raise DataError(f"{path}: empty span {start:g}-{end:g} s (end must follow start)")
    if path.suffix.lower() == PCM_SUFFIX:
        first = round(start * SAMPLE_RATE)
        count = -1 if end is None else round(end * SAMPLE_RATE) - first
        try:
            samples = np.fromfile(path, dtype="<i2", count=count, offset=2 * first)
        except OSError as exc:
            raise DataError(f"{path}: cannot read audio file ({exc.strerror})") from exc
        audio = samples.astype(np.float32) / 32768.0
    else:
        import soundfile

        _check_is_file(path)
        try:
            with soundfile.SoundFile(str(path)) as handle:
                rate = handle.samplerate
                handle.seek(min(round(start * rate), handle.frames))
                frames = -1 if end is None else round(end * rate) - round(start * rate)
                data = handle.read(frames, dtype="float32", always_2d=True)
        except (RuntimeError, soundfile.LibsndfileError) as exc:
            raise DataError(f"{path}: unreadable audio file ({_what_it_is(path, exc)})") from exc
        mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        audio = resample(mono, rate)
    if len(audio) == 0:
        raise DataError(f"{path}: the span {start:g}-{end or 0:g} s lies past the file's end")
    return audio


def probe_audio(path: str | Path) -> AudioInfo:
    """Check that a file exists and is readable, and get its duration, without decoding it all.

    Used by `pefty prepare` on hundreds of thousands of files, so it reads headers only.
    """
    path = Path(path)
    if path.suffix.lower() == PCM_SUFFIX:
        size = _readable_size(path)
        if size < 2:
            raise DataError(f"{path}: empty pcm file ({size} bytes)")
        return AudioInfo(duration_s=(size // 2) / SAMPLE_RATE, odd_byte_count=size % 2 == 1)
    _check_is_file(path)
    if path.suffix.lower() not in SOUNDFILE_SUFFIXES:
        raise DataError(
            f"{path}: unsupported audio format '{path.suffix}' (use {', '.join(AUDIO_SUFFIXES)})"
        )
    import soundfile

    try:
        info = soundfile.info(str(path))
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise DataError(f"{path}: unreadable audio file ({_what_it_is(path, exc)})") from exc
    if info.frames <= 0:
        raise DataError(f"{path}: audio file holds no samples")
    return AudioInfo(duration_s=info.frames / info.samplerate)


def _check_is_file(path: Path) -> None:
    if path.is_dir():
        raise DataError(f"{path}: a directory, not an audio file (list the files inside it)")
    if not path.is_file():
        raise DataError(f"{path}: audio file not found")


# What a file that libsndfile refuses most often is instead, told by its first bytes.
_MAGIC = {b"PK\x03\x04": "a zip archive", b"%PDF": "a PDF document", b"\x1f\x8b": "gzip data"}


def _what_it_is(path: Path, exc: Exception | None) -> str:
    """Why libsndfile refused a file, in the user's terms: a text file named .mp3 says so."""
    try:
        with path.open("rb") as handle:
            head = handle.read(512)
    except OSError:
        return _first_line(exc)
    return _kind_of(head) or _first_line(exc)


def _kind_of(head: bytes) -> str:
    """What a file's first bytes say it is when that is not audio ("it is a zip archive"), or ""."""
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return f"it is {kind}, not audio"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    if text and all(c.isprintable() or c.isspace() for c in text):
        start = " ".join(text.split())[:40]
        return f"it holds text, not audio: {start!r}"
    return ""


def _readable_size(path: Path) -> int:
    """A pcm file's size, checked with one open and fstat: `prepare` probes 600,000 of them,
    often on a cold cache, where each lookup of the path and each data block read is a wait.

    Opening checks that it is readable; only small files have their first bytes read, to catch
    text saved as .pcm (a Git LFS pointer, an error page), which is small. Reading every file's
    first block made a cold-cache `prepare kspon` wait on 628,545 random reads.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise DataError(f"{path}: audio file not found") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read audio file ({exc.strerror})") from exc
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise DataError(f"{path}: a directory, not an audio file (list the files inside it)")
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"{path}: audio file not found")
        head = os.read(fd, 512) if info.st_size <= TEXT_CHECK_MAX_BYTES else b""
    except OSError as exc:
        raise DataError(f"{path}: cannot read audio file ({exc.strerror})") from exc
    finally:
        os.close(fd)
    kind = _kind_of(head) if len(head) >= 16 else ""
    if kind:  # headerless pcm has no magic, but is never all text
        raise DataError(f"{path}: not pcm audio ({kind})")
    return info.st_size


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

    _check_is_file(path)
    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as exc:
        raise DataError(f"{path}: unreadable audio file ({_what_it_is(path, exc)})") from exc
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


def _first_line(exc: Exception | None) -> str:
    if exc is None:
        return ""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
