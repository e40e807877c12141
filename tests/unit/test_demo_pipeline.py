"""The demo's steps as data: what each round is evaluated on, and the settings it trains with."""

from __future__ import annotations

import shutil
from pathlib import Path
from random import Random

import pytest
import yaml

from pefty_whisper.config import load_config
from pefty_whisper.data.espeak import VOICES
from pefty_whisper.data.kspon import normalize_transcript
from pefty_whisper.data.manifest import read_manifest
from pefty_whisper.demo.pipeline import (
    CORPUS_DIR,
    DEMO_CORPUS,
    ENGLISH_DIR,
    VOICE_SHIFT_MANIFEST,
    demo_steps,
    write_demo_config,
)
from pefty_whisper.demo.sentences import sentence_pools
from pefty_whisper.demo.voice_shift import SHIFT_VOICES, shift_voice, write_voice_shift_set
from pefty_whisper.workspace import EvalLabel, Workspace


def _workspace(tmp_path: Path) -> Workspace:
    # demo_steps names one held-out file for `pefty transcribe`; nothing else is read.
    sample = tmp_path / CORPUS_DIR / "KsponSpeech_eval" / "eval_clean" / "KsponSpeech_E00001.pcm"
    sample.parent.mkdir(parents=True)
    sample.write_bytes(b"\0\0")
    return Workspace.at(tmp_path)


def test_every_round_is_scored_on_eval_clean_in_shifted_voices_and_in_english(
    tmp_path: Path,
) -> None:
    workspace = _workspace(tmp_path)
    steps = demo_steps(workspace, num_rounds=2)
    english = f"{ENGLISH_DIR}/eval_english.csv"
    scored = [
        (step.argv[step.argv.index("--model") + 1], step.argv[2])
        for step in steps
        if step.argv[0] == "evaluate"
    ]
    models = ["base/whisper-base", "merged/round1", "merged/round2"]
    sets = ("eval_clean", VOICE_SHIFT_MANIFEST, english)
    assert scored == [(m, s) for m in models for s in sets]
    for step in steps:
        if step.argv[0] == "evaluate" and step.argv[2] == VOICE_SHIFT_MANIFEST:
            assert step.argv[-1] == "--no-longform"  # Korean, the round's own language
    (shifted,) = [s for s in steps if s.argv[2:5] == (VOICE_SHIFT_MANIFEST, "--model", models[1])]
    assert not shifted.done(workspace)
    summary = workspace.eval_json(EvalLabel("round1", "eval_voice_shift"))
    summary.parent.mkdir(parents=True)
    summary.write_text("{}")
    assert shifted.done(workspace)
    for step in steps:
        if step.argv[0] == "evaluate" and step.argv[2] == english:
            assert step.argv[-3:] == ("--language", "en", "--no-longform")
    # Done once its summary exists, under the label the rounds table reads.
    english_round2 = [s for s in steps if s.argv[:3] == ("evaluate", "--set", english)][-1]
    assert not english_round2.done(workspace)
    summary = workspace.eval_json(EvalLabel("round2", "eval_english", language="en"))
    summary.parent.mkdir(parents=True)
    summary.write_text("{}")
    assert english_round2.done(workspace)


def test_the_demo_trains_packed_windows_at_30_s(tmp_path: Path) -> None:
    path = write_demo_config(tmp_path)
    written = yaml.safe_load(path.read_text())
    config = load_config(path)
    assert config.data.packing and config.model.context == "full"
    assert "context" not in written["model"]  # the defaults, as a user's round would run
    assert config.train.batch_size == 2  # about nine utterances a step


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng speaks the set")
def test_the_voice_shift_set_is_eval_cleans_sentences_in_voices_training_never_uses(tmp_path):
    lines = sentence_pools(DEMO_CORPUS).eval_clean[:4]
    manifest = write_voice_shift_set(tmp_path / "a", lines)
    rows = read_manifest(manifest).utterances
    # The references are what `pefty prepare kspon` writes for eval_clean's lines.
    assert [u.sentence for u in rows] == [normalize_transcript(line.raw) for line in lines]
    assert all(Path(u.path).is_file() and u.duration > 0.5 for u in rows)
    again = write_voice_shift_set(tmp_path / "b", lines)
    assert [Path(u.path).read_bytes() for u in read_manifest(again).utterances] == [
        Path(u.path).read_bytes() for u in rows
    ]
    rng = Random(0)
    voices = [shift_voice(rng) for _ in range(200)]
    assert not {v.name for v in voices} & set(VOICES)
    assert all(not 130 <= v.speed <= 175 for v in voices)  # the corpus's training rates
    assert {v.name for v in voices} == set(SHIFT_VOICES)
