"""Text to speech with espeak-ng: the synthetic voices the sample corpus, the English set and
the export probe speak with (Korean, English and their voice variants such as `ko+m3`).

espeak-ng runs as a subprocess per utterance and is deterministic for a given text and voice.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

import numpy as np

from pefty_whisper.data.audio import resample
from pefty_whisper.errors import DataError

__all__ = ["ESPEAK_RATE", "VOICES", "Voice", "require_espeak", "synthesize"]

ESPEAK_RATE = 22_050


VOICES = ("ko", "ko+m1", "ko+m2", "ko+m3", "ko+m4", "ko+f1", "ko+f2", "ko+f3", "ko+f4")


@dataclass(frozen=True)
class Voice:
    name: str
    speed: int  # espeak-ng -s, words per minute (its default is 175)
    pitch: int  # espeak-ng -p, 0-99 (default 50)
    gap: int = 0  # espeak-ng -g, extra pause between words in 10 ms units


# espeak-ng's Korean rules miss a few sound changes; respell those for its ears only, so the
# transcript stays standard Hangul: 여덟 reads as 여덥 (not 여덜), 십육 without the inserted ㄴ.
_ESPEAK_RESPELLINGS = (("여덟", "여덜"), ("십육", "심뉵"))


def synthesize(text: str, voice: Voice) -> np.ndarray:
    """espeak-ng speech for `text` as float32 at 16 kHz."""
    for written, said in _ESPEAK_RESPELLINGS:
        text = text.replace(written, said)
    command = ["espeak-ng", "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch)]
    if voice.gap:
        command += ["-g", str(voice.gap)]
    result = subprocess.run([*command, "--stdout", text], capture_output=True, check=False)
    if result.returncode != 0 or len(result.stdout) <= 44:
        stderr = result.stderr.decode(errors="replace").strip()
        raise DataError(f"espeak-ng failed on {text!r} with voice {voice.name}: {stderr}")
    return resample(_wav_samples(result.stdout), ESPEAK_RATE)


def _wav_samples(wav: bytes) -> np.ndarray:
    # espeak-ng streams to stdout with placeholder chunk sizes, so find the data chunk by name.
    start = wav.find(b"data", 12)
    if start < 0:
        raise DataError("espeak-ng produced no wav data chunk")
    data = wav[start + 8 :]
    data = data[: len(data) // 2 * 2]
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def require_espeak() -> None:
    if shutil.which("espeak-ng") is None:
        raise DataError(
            "espeak-ng not found on PATH; the sample corpus is spoken by its Korean voice: "
            "install it with `apt-get install espeak-ng`"
        )
    probe = subprocess.run(["espeak-ng", "-v", "ko", "--stdout", "가"], capture_output=True)
    if probe.returncode != 0 or len(probe.stdout) <= 44:
        raise DataError(
            f"espeak-ng has no usable Korean voice ({probe.stderr.decode(errors='replace')}): "
            "install the full package with `apt-get install espeak-ng`"
        )
