"""The demo as data: the `pefty` commands it runs, each with its "already done?" check.

A step is the argv of one `pefty` command, run inside the demo workspace. The CLI prints
`pefty <argv>` and invokes the same argv, so what the user reads is exactly what ran and can be
typed again by hand (after `cd demo`). The settings come from the `pefty.yaml` written here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pefty_whisper.demo.base import BASE_DIR
from pefty_whisper.demo.corpus import generate_sample_corpus
from pefty_whisper.demo.english import ENGLISH_SET, write_english_set
from pefty_whisper.demo.sentences import SampleCorpusSpec, sentence_pools
from pefty_whisper.demo.voice_shift import VOICE_SHIFT_SET, write_voice_shift_set
from pefty_whisper.files import atomic_write_text
from pefty_whisper.whisper.model_dir import ModelDir
from pefty_whisper.workspace import BASE_LABEL, CONFIG_FILE, EvalLabel, Workspace

CORPUS_DIR = "sample_kspon"
ENGLISH_DIR = "sample_english"  # 20 English sentences: what the Korean rounds make it forget
ENGLISH_MANIFEST = f"{ENGLISH_DIR}/{ENGLISH_SET}.csv"  # relative to the workspace
VOICE_SHIFT_DIR = "sample_voice_shift"  # eval_clean's sentences in voices training never uses
VOICE_SHIFT_MANIFEST = f"{VOICE_SHIFT_DIR}/{VOICE_SHIFT_SET}.csv"
# Corpus: 80 utterances per part (64 train / 16 validation), 40 held-out sentences per eval set.
DEMO_CORPUS = SampleCorpusSpec(utterances_per_part=80, eval_clean=40, eval_other=40, dev=20)
EVAL_SET = "eval_clean"
EXPORT_QUANTIZATION = "int8"


@dataclass(frozen=True)
class Step:
    """One `pefty` command of the demo; `done` says whether an earlier run finished it."""

    argv: tuple[str, ...]
    done: Callable[[Workspace], bool] = lambda workspace: False
    note: str = ""  # why this step is there, printed beside the command

    @property
    def command(self) -> str:
        return "pefty " + " ".join(self.argv)


def demo_config(base: str) -> dict[str, Any]:
    """Settings chosen so that two rounds on whisper-base fit the demo's 20 minutes on 2 cores.

    Rounds train on packed 30 s windows (data.packing, the default): about five utterances
    per window, so 20 steps of batch 2 (about 3 passes over 64 utterances, 14 windows a pass)
    at a high LoRA learning rate are enough for espeak-ng Korean, a narrow domain, and the
    model keeps its timestamps for long recordings. Validation on 12 utterances every 10
    steps, so round 1 shows its CER falling. Gradient checkpointing is off: the CPU has memory
    to spare, not time. max_new_tokens leaves room for a 30 s window of five sentences with
    their timestamps (long-form decoding) and still stops a hallucinating zero-shot base.
    """
    return {
        "model": {"base": base},
        "train": {
            "batch_size": 2,
            "learning_rate": 1.0e-3,
            "warmup_steps": 2,
            "max_steps": 20,
            "eval_steps": 10,
            "max_eval_samples": 12,
            "logging_steps": 2,
            "gradient_checkpointing": False,
        },
        "decode": {"batch_size": 8, "max_new_tokens": 160},
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


def ensure_sample_corpus(workdir: Path) -> Path:
    """The synthetic KsponSpeech-layout corpus, generated once (seeded, about 10 s)."""
    corpus = workdir / CORPUS_DIR
    if not (corpus / "scripts" / "train.trn").is_file():
        generate_sample_corpus(corpus, DEMO_CORPUS, overwrite=corpus.exists())
    return corpus


def ensure_english_set(workdir: Path) -> Path:
    """The English set and its manifest, generated once (seeded, a few seconds)."""
    manifest = workdir / ENGLISH_MANIFEST
    return manifest if manifest.is_file() else write_english_set(manifest.parent)


def ensure_voice_shift_set(workdir: Path) -> Path:
    """eval_clean's sentences spoken by voices the rounds never train on, generated once."""
    manifest = workdir / VOICE_SHIFT_MANIFEST
    if manifest.is_file():
        return manifest
    lines = sentence_pools(DEMO_CORPUS).eval_clean
    return write_voice_shift_set(manifest.parent, lines, seed=DEMO_CORPUS.seed)


def _evaluations(model: str, label: str, note: str = "") -> list[Step]:
    """eval_clean (with its long-form and silence figures), the voice-shift set, then the
    English set's WER."""
    return [
        Step(
            ("evaluate", "--set", EVAL_SET, "--model", model),
            done=lambda ws: ws.eval_json(EvalLabel(label, EVAL_SET)).is_file(),
            note=note,
        ),
        Step(
            ("evaluate", "--set", VOICE_SHIFT_MANIFEST, "--model", model, "--no-longform"),
            done=lambda ws: ws.eval_json(EvalLabel(label, VOICE_SHIFT_SET)).is_file(),
            note="eval_clean's sentences in voices and at rates the rounds never train on",
        ),
        Step(
            (
                "evaluate",
                "--set",
                ENGLISH_MANIFEST,
                "--model",
                model,
                "--language",
                "en",
                "--no-longform",
            ),  # fmt: skip
            done=lambda ws: ws.eval_json(EvalLabel(label, ENGLISH_SET, language="en")).is_file(),
            note="other language: English WER, to see what the rounds forget",
        ),
    ]


def demo_steps(workspace: Workspace, num_rounds: int) -> list[Step]:
    """prepare, a zero-shot evaluation, then train -> merge -> evaluate per round, export,
    transcribe one held-out file with the export, and the rounds table."""
    final = workspace.merged_ref(num_rounds)
    export = workspace.export_dir_for(workspace.round_label(num_rounds), "ct2", EXPORT_QUANTIZATION)
    export_arg = str(export.relative_to(workspace.root))
    sample = sorted((workspace.root / CORPUS_DIR / "KsponSpeech_eval" / EVAL_SET).glob("*.pcm"))[0]
    steps = [
        Step(
            ("prepare", "kspon", "--root", CORPUS_DIR),
            done=lambda ws: (
                all(
                    ws.round_manifest(i, split).is_file()
                    for i in range(1, num_rounds + 1)
                    for split in ("train", "test")
                )
                and ws.manifest_path(EVAL_SET).is_file()
            ),
        ),
        *_evaluations(BASE_DIR, BASE_LABEL, note="round 0: zero-shot"),
    ]
    for index in range(1, num_rounds + 1):
        merged = workspace.merged_ref(index)
        steps += [
            # --resume continues a round a killed demo left unfinished, and starts a new one.
            Step(
                ("train", "--round", str(index), "--resume"),
                done=lambda ws, i=index: ws.round_finished(i),
            ),
            Step(("merge", "--round", str(index)), done=lambda ws, i=index: ws.merge_finished(i)),
            *_evaluations(merged, workspace.round_label(index)),
        ]
    steps += [
        Step(
            ("export", "--model", final, "--format", "ct2", "--quantization", EXPORT_QUANTIZATION),
            done=lambda ws: ModelDir(export).is_ct2,
        ),
        Step(("transcribe", str(sample.relative_to(workspace.root)), "--model", export_arg)),
        Step(("rounds", "--plot", "rounds.png")),
    ]
    return steps
