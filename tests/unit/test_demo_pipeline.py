"""The demo's steps as data: what each round is evaluated on, and the settings it trains with."""

from __future__ import annotations

from pathlib import Path

import yaml

from pefty_whisper.config import load_config
from pefty_whisper.demo.pipeline import (
    CORPUS_DIR,
    ENGLISH_DIR,
    demo_steps,
    write_demo_config,
)
from pefty_whisper.workspace import EvalLabel, Workspace


def _workspace(tmp_path: Path) -> Workspace:
    # demo_steps names one held-out file for `pefty transcribe`; nothing else is read.
    sample = tmp_path / CORPUS_DIR / "KsponSpeech_eval" / "eval_clean" / "KsponSpeech_E00001.pcm"
    sample.parent.mkdir(parents=True)
    sample.write_bytes(b"\0\0")
    return Workspace.at(tmp_path)


def test_every_round_is_scored_on_eval_clean_and_in_english(tmp_path: Path) -> None:
    workspace = _workspace(tmp_path)
    steps = demo_steps(workspace, num_rounds=2)
    english = f"{ENGLISH_DIR}/eval_english.csv"
    scored = [
        (step.argv[step.argv.index("--model") + 1], step.argv[2])
        for step in steps
        if step.argv[0] == "evaluate"
    ]
    models = ["base/whisper-base", "merged/round1", "merged/round2"]
    assert scored == [(m, s) for m in models for s in ("eval_clean", english)]
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
