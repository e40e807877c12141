"""Throughput of each waveform augmentation (data/augment.py) in one process: seconds of audio
transformed per wall-clock second, as one loader worker would do it (one thread), beside the
log-mel the worker computes anyway without a GPU, for scale.

Each transform runs alone (probability 1) through an Augmenter on seeded speech-like audio of
`--seconds` (KsponSpeech utterances average about 4 s; a packed window is up to 30 s), over
`--utterances` utterance indices, so each call draws its own parameters as in training (the
best of three passes). The full chain runs speed, noise (any kind), telephone and gain on every
utterance. A measurement, not a test: run it on a quiet machine.

    python scripts/bench_augment_transforms.py
    python scripts/bench_augment_transforms.py --seconds 30 --utterances 20
"""

from __future__ import annotations

import os

# One thread, as a DataLoader worker runs (set before numpy loads its BLAS).
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402

try:
    import pefty_whisper  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pefty_whisper.config import AugmentSection  # noqa: E402
from pefty_whisper.data.audio import SAMPLE_RATE  # noqa: E402
from pefty_whisper.data.augment import Augmenter  # noqa: E402


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """A harmonic voice with syllable-rate modulation and a little noise (seeded)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = rng.uniform(100, 220)
    voice = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    return (0.2 * voice * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def measure(run: Callable[[int], object], utterances: int, seconds: float) -> float:
    """Audio seconds per wall second over `utterances` calls, the best of three passes after a
    warm-up call: on a shared machine the best pass is the one least slowed by others."""
    run(0)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for index in range(utterances):
            run(index)
        best = min(best, time.perf_counter() - start)
    return utterances * seconds / best


@click.command()
@click.option("--seconds", default=4.0, show_default=True, help="Length of each utterance.")
@click.option("--utterances", default=50, show_default=True, help="Calls per transform.")
def main(seconds: float, utterances: int) -> None:
    """Print a table of audio seconds per wall second for each transform."""
    audios = [speech_like(seconds, seed) for seed in range(8)]
    others = [speech_like(3.0, seed) for seed in range(100, 104)]
    with tempfile.TemporaryDirectory() as folder:
        import soundfile

        # A 60 s recording, as MUSAN's noise/ files are: read a stretch at a time.
        soundfile.write(Path(folder) / "n.wav", speech_like(60.0, 999), SAMPLE_RATE)
        cases: dict[str, AugmentSection] = {
            "speed 0.9": AugmentSection(speed_prob=1.0, speed=(0.9,)),
            "speed 1.1": AugmentSection(speed_prob=1.0, speed=(1.1,)),
            **{
                f"noise {kind}": AugmentSection(noise_prob=1.0, noise_kinds=(kind,))
                for kind in ("white", "pink", "brown", "hum", "babble")
            },
            "noise file": AugmentSection(noise_prob=1.0, noise_kinds=("file",), noise_dir=folder),
            "telephone": AugmentSection(telephone_prob=1.0),
            "gain": AugmentSection(gain_prob=1.0),
            "full chain": AugmentSection(
                speed_prob=1.0, noise_prob=1.0, telephone_prob=1.0, gain_prob=1.0
            ),
        }
        rows = []
        for name, section in cases.items():
            augmenter = Augmenter(section)

            def run(index: int, augmenter: Augmenter = augmenter) -> object:
                return augmenter(audios[index % len(audios)], index, others=others)

            rows.append((name, measure(run, utterances, seconds)))
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=80)

    def log_mel(index: int) -> object:
        return extractor(audios[index % len(audios)], sampling_rate=SAMPLE_RATE)

    rows.append(("(log-mel at 30 s, for scale)", measure(log_mel, utterances, seconds)))
    click.echo(
        f"{utterances} utterances of {seconds:g} s, one process, one thread "
        f"({platform.processor() or platform.machine()}, numpy {np.__version__})"
    )
    click.echo("| transform | audio s per wall s |\n|---|---:|")
    for name, rate in rows:
        click.echo(f"| {name} | {rate:,.0f} |")


if __name__ == "__main__":
    main()
