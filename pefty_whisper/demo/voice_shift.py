"""The voice-shift set: eval_clean's sentences spoken by espeak-ng voices and at rates the demo's
rounds never train on, the demo's stand-in for users who are not the corpus's speakers.

The sample corpus speaks every split with the same nine Korean voices (data/espeak.py VOICES) at
130-175 words a minute (eval_other only moves the rate and pitch and adds babble), so a round is
scored on the voices it trained on. Here the sentences are read by other variants (more male
and female variants, the Klatt formant synthesizer, a creaky voice) at 100-122 or 182-210 words
a minute: evaluated every round (`pefty evaluate --set sample_voice_shift/eval_voice_shift.csv`),
it shows whether a round holds up beyond its voices, and what augmentation buys there.
Prepared like the English set: wav files and a manifest beside them, seeded, the same bytes for
the same seed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from random import Random

import soundfile as sf

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.data.espeak import Voice, synthesize
from pefty_whisper.data.kspon import normalize_transcript
from pefty_whisper.data.manifest import write_manifest
from pefty_whisper.data.table import Utterance
from pefty_whisper.demo.sentences import ScriptLine

logger = logging.getLogger(__name__)

VOICE_SHIFT_SET = "eval_voice_shift"
# espeak-ng variants outside data/espeak.py VOICES (ko, ko+m1..m4, ko+f1..f4).
SHIFT_VOICES = ("ko+m5", "ko+m6", "ko+m7", "ko+f5", "ko+klatt", "ko+klatt3", "ko+croak")
# Words a minute on either side of the training rates (130-175), slower and faster.
SHIFT_RATES = ((100, 122), (182, 210))
PITCH = (32, 68)  # the training pitches: the shift is in the voice and the rate


def shift_voice(rng: Random) -> Voice:
    """A voice the rounds never heard: a variant outside VOICES, a rate outside theirs."""
    low, high = rng.choice(SHIFT_RATES)
    return Voice(rng.choice(SHIFT_VOICES), rng.randint(low, high), rng.randint(*PITCH))


def write_voice_shift_set(out_dir: Path, lines: Sequence[ScriptLine], seed: int = 0) -> Path:
    """The wav files of `lines` (eval_clean's script lines) and their manifest
    (<out_dir>/eval_voice_shift.csv, paths relative to it), written last so a killed run never
    leaves a set that looks finished. The references are what `pefty prepare kspon` makes of
    the same lines, so this set's CER compares with eval_clean's."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = Random(f"pefty-voice-shift:{seed}")
    utterances = []
    for index, line in enumerate(lines):
        voice = shift_voice(rng)
        audio = synthesize(line.spoken, voice)
        name = f"voice_shift_{index + 1:03d}.wav"
        sf.write(out_dir / name, audio, SAMPLE_RATE, subtype="PCM_16")
        sentence = normalize_transcript(line.raw)
        utterances.append(Utterance(name, sentence, len(audio) / SAMPLE_RATE, Path(name).stem))
    manifest = out_dir / f"{VOICE_SHIFT_SET}.csv"
    write_manifest(manifest, utterances)
    logger.info("voice-shift set: %d utterances in %s", len(utterances), manifest)
    return manifest
