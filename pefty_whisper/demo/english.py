"""An English set spoken by espeak-ng's English voices: the demo's "other language" figure.

Rounds of Korean fine-tuning can make Whisper forget other languages. Evaluating every round on
a small English set (`pefty evaluate --set ... --language en`) makes that visible in the rounds
table as a WER column. Any prepared set works the same way; this one needs nothing but
espeak-ng. Seeded: the same seed writes the same bytes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from random import Random

import soundfile as sf

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.data.espeak import Voice, synthesize
from pefty_whisper.data.manifest import write_manifest
from pefty_whisper.data.table import Utterance

logger = logging.getLogger(__name__)

ENGLISH_SET = "eval_english"
ENGLISH_VOICES = ("en-us", "en", "en-us+m3", "en+f2", "en-us+f3")
# Plain everyday sentences in Whisper's normalized form (lower case, no punctuation, no numbers:
# Whisper writes "twenty" as "20"), so WER counts words the model got wrong, not spelling.
ENGLISH_SENTENCES = (
    "the weather is very nice today",
    "i will meet my friend at the station",
    "please turn off the lights before you leave",
    "we had dinner at a small restaurant",
    "the train leaves early in the morning",
    "can you help me carry these boxes",
    "my brother works at a hospital in the city",
    "she reads a book every night before bed",
    "the meeting was moved to next tuesday",
    "i forgot my umbrella on the bus",
    "they are building a new school near the park",
    "he drinks a cup of coffee every morning",
    "the store closes early on sundays",
    "we watched a movie together last weekend",
    "please send me the report by friday",
    "the children are playing in the garden",
    "it takes a few minutes to walk to work",
    "i would like to book a table for dinner",
    "the price of vegetables went up this month",
    "our flight was delayed by an hour",
)


def write_english_set(out_dir: Path, seed: int = 0) -> Path:
    """The wav files and their manifest (<out_dir>/eval_english.csv, paths relative to it).

    The manifest is written last, so a killed run never leaves a set that looks finished.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = Random(f"pefty-english:{seed}")
    utterances = []
    for index, sentence in enumerate(ENGLISH_SENTENCES):
        voice = Voice(rng.choice(ENGLISH_VOICES), rng.randint(140, 170), rng.randint(35, 65))
        audio = synthesize(sentence, voice)
        name = f"english_{index + 1:03d}.wav"
        sf.write(out_dir / name, audio, SAMPLE_RATE, subtype="PCM_16")
        utterances.append(Utterance(name, sentence, len(audio) / SAMPLE_RATE, Path(name).stem))
    manifest = out_dir / f"{ENGLISH_SET}.csv"
    write_manifest(manifest, utterances)
    logger.info("English set: %d utterances in %s", len(utterances), manifest)
    return manifest
