"""Synthetic sample corpus laid out exactly like KsponSpeech: parts, folders, headerless 16 kHz
pcm, CP949 .txt transcripts beside each file, and the official .trn scripts.

The repository stores no audio; the demo, the integration tests and the benchmarks generate this
corpus instead (sentences in demo/sentences.py, speech in demo/speech.py).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.data.espeak import require_espeak
from pefty_whisper.demo.sentences import (
    NUM_PARTS,
    SampleCorpusSpec,
    ScriptLine,
    SentencePools,
    check_spec,
    sentence_pools,
)
from pefty_whisper.demo.speech import render_audio, to_pcm_bytes
from pefty_whisper.errors import DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "eval_clean", "eval_other")


@dataclass(frozen=True)
class SampleCorpusSummary:
    """What was generated, for the CLI summary and for callers that build manifests from it."""

    out_dir: Path
    train_per_part: tuple[int, ...]
    dev: int
    eval_clean: int
    eval_other: int
    distinct_sentences: int  # distinct template sentences (disfluencies and tags not counted)
    audio_seconds: float
    elapsed_seconds: float
    scripts: tuple[Path, ...]  # train.trn, dev.trn, eval_clean.trn, eval_other.trn

    @property
    def num_utterances(self) -> int:
        return sum(self.train_per_part) + self.dev + self.eval_clean + self.eval_other


# ---------------------------------------------------------------------------------------------
# Layout


@dataclass(frozen=True)
class _Utterance:
    split: str
    rel_path: str  # e.g. KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm
    line: ScriptLine
    harder: bool  # eval_other: noisier, faster or slower, odd pitch


def _plan_layout(spec: SampleCorpusSpec, pools: SentencePools) -> list[_Utterance]:
    """Paths as in the real corpus: ids and folder numbers run on across parts, dev folders last."""
    plan: list[_Utterance] = []
    utt_id, folder = 1, 1
    for part_no, part in enumerate(pools.train_parts, 1):
        groups = [("train", part)] + ([("dev", pools.dev)] if part_no == NUM_PARTS else [])
        for split, lines in groups:
            # A new folder for each part and for dev, so the dev folders hold dev only.
            for start in range(0, len(lines), spec.per_folder):
                for line in lines[start : start + spec.per_folder]:
                    rel = (
                        f"KsponSpeech_{part_no:02d}/KsponSpeech_{folder:04d}/"
                        f"KsponSpeech_{utt_id:06d}.pcm"
                    )
                    plan.append(_Utterance(split, rel, line, harder=False))
                    utt_id += 1
                folder += 1
    eval_id = 1
    for split, lines in (("eval_clean", pools.eval_clean), ("eval_other", pools.eval_other)):
        for line in lines:
            rel = f"KsponSpeech_eval/{split}/KsponSpeech_E{eval_id:05d}.pcm"
            plan.append(_Utterance(split, rel, line, harder=split == "eval_other"))
            eval_id += 1
    return plan


def _write_utterance(utt: _Utterance, root: Path, seed: int) -> float:
    audio = render_audio(utt.line, f"{seed}:{utt.rel_path}", utt.harder)
    pcm_path = root / utt.rel_path
    pcm_path.parent.mkdir(parents=True, exist_ok=True)
    pcm_path.write_bytes(to_pcm_bytes(audio))
    # The real corpus ships each transcript beside its audio, in CP949.
    pcm_path.with_suffix(".txt").write_bytes((utt.line.raw + "\n").encode("cp949"))
    return audio.size / SAMPLE_RATE


def _render_all(
    plan: list[_Utterance],
    root: Path,
    seed: int,
    progress: Callable[[int], None] | None,
    workers: int,
) -> float:
    # espeak-ng runs as a subprocess, so threads overlap it without fighting over the GIL.
    seconds = 0.0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(_write_utterance, utt, root, seed) for utt in plan]
        for future in as_completed(futures):
            seconds += future.result()
            if progress is not None:
                progress(1)
    return seconds


def _write_scripts(plan: list[_Utterance], root: Path) -> None:
    scripts_dir = root / "scripts"
    scripts_dir.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        lines = [f"{u.rel_path} :: {u.line.raw}\n" for u in plan if u.split == split]
        (scripts_dir / f"{split}.trn").write_text("".join(lines), encoding="utf-8")


def _looks_like_sample_corpus(path: Path) -> bool:
    return (path / "scripts" / "train.trn").is_file() and (path / "KsponSpeech_01").is_dir()


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise DataError(f"{out_dir} is a file: choose a directory for the sample corpus")
    if not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise DataError(
            f"{out_dir} exists and is not empty: pass overwrite=True (--overwrite) to replace it, "
            "or choose another output directory"
        )
    if not _looks_like_sample_corpus(out_dir):
        # Overwrite deletes the directory; only ever delete something this module made.
        raise DataError(
            f"refusing to overwrite {out_dir}: it does not look like a sample corpus "
            "(no scripts/train.trn and KsponSpeech_01/); remove it yourself or choose another"
        )


def _move_into_place(partial: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.with_name(out_dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        out_dir.rename(old)
        partial.rename(out_dir)
        shutil.rmtree(old)
    else:
        partial.rename(out_dir)


def generate_sample_corpus(
    out_dir: Path,
    spec: SampleCorpusSpec = SampleCorpusSpec(),  # noqa: B008 - frozen, so safe to share
    progress: Callable[[int], None] | None = None,
    overwrite: bool = False,
    workers: int = 4,
) -> SampleCorpusSummary:
    """Write a synthetic KsponSpeech-layout corpus to `out_dir`, the same bytes for the same spec.

    It is built in a sibling `<out_dir>.partial` and renamed into place at the end, so a killed
    run never leaves a corpus that looks finished. `progress` gets the number of utterances just
    finished, to drive a progress bar. `overwrite` replaces an earlier sample corpus (and nothing
    else); `workers` espeak-ng processes run at once.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    check_spec(spec)
    require_espeak()
    _check_target(out_dir, overwrite)
    pools = sentence_pools(spec)
    plan = _plan_layout(spec, pools)

    partial = out_dir.with_name(out_dir.name + ".partial")
    if partial.exists():
        logger.warning("removing %s left by an interrupted run", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    logger.info("generating %d utterances into %s", len(plan), partial)
    try:
        audio_seconds = _render_all(plan, partial, spec.seed, progress, max(1, workers))
        _write_scripts(plan, partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _move_into_place(partial, out_dir)

    summary = SampleCorpusSummary(
        out_dir=out_dir,
        train_per_part=tuple(len(part) for part in pools.train_parts),
        dev=len(pools.dev),
        eval_clean=len(pools.eval_clean),
        eval_other=len(pools.eval_other),
        distinct_sentences=len({line.core for line in pools.all_lines()}),
        audio_seconds=audio_seconds,
        elapsed_seconds=time.perf_counter() - started,
        scripts=tuple(out_dir / "scripts" / f"{split}.trn" for split in SPLITS),
    )
    logger.info(
        "sample corpus: %d utterances, %.1f min of audio, %d distinct sentences, %.1f s",
        summary.num_utterances,
        audio_seconds / 60,
        summary.distinct_sentences,
        summary.elapsed_seconds,
    )
    return summary
