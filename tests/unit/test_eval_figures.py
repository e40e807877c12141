"""One decode's figures (evaluate/figures.py) and two decodes compared (evaluate/compare.py), on
planted transcripts: every protocol and subset with its interval, the per-utterance TSV that
recomputes them, and the paired comparison that reads two TSVs back."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from pefty_whisper.data.kspon import normalize_sides
from pefty_whisper.data.manifest import Utterance
from pefty_whisper.errors import ConfigError
from pefty_whisper.evaluate.compare import UnpairedError, paired_counts
from pefty_whisper.evaluate.figures import (
    PROTOCOL_COLUMNS,
    TSV_COLUMNS,
    figures_of,
    per_utterance_tsv,
    read_counts,
    score_decode,
)
from pefty_whisper.metrics import PROTOCOLS
from pefty_whisper.workspace import EvalLabel, EvalRecord, RateFigure

LINES = (
    "(3시)/(세 시)에 만나",
    "b/ 어/ (KBS)/(케이 비 에스) 뉴스 봤어?",
    "학교 끝나고 도서관 가서 공부했어",
    "(2019년)/(이천십구 년)에 (SNS)/(에스 엔 에스) 시작했어",
    "지금 배고파서 뭐 좀 먹어야겠다",
    "오늘 날씨가 좋네요",
)
DURATIONS = (1.2, 2.0, 4.99, 5.0, 12.5, None)


def _utterances(lines=LINES, durations=DURATIONS, prefix="u") -> list[Utterance]:
    sides = [normalize_sides(line) for line in lines]
    return [
        Utterance(f"/a/{prefix}{i}.pcm", s.spelling, d, f"{prefix}{i}", line, s.phonetic or "")
        for i, (line, s, d) in enumerate(zip(lines, sides, durations, strict=True))
    ]


def test_a_hypothesis_writing_the_phonetic_side_scores_0_under_dual_only(tmp_path: Path):
    utterances = _utterances()
    spoken = [u.phonetic or u.sentence for u in utterances]
    scores, figures = score_decode(utterances, spoken)
    assert figures.protocols["dual"].rate == 0 and figures.protocols["kspon-phonetic"].rate == 0
    assert figures.protocols["kspon"].rate > 0
    # Every figure carries an interval around its rate; the primary one is the record's cer.
    for figure in figures.protocols.values():
        assert figure.low <= figure.rate <= figure.high and figure.units == len(utterances)
    assert figures.primary.rate == pytest.approx(scores.spelling.cer)
    assert figures.protocols["spaces"].rate == pytest.approx(scores.spelling.cer_with_spaces)


def test_the_tsv_recomputes_every_figure_of_the_record(tmp_path: Path):
    utterances = _utterances()
    hypotheses = [
        "세 시에 만나",
        "어 KBS 뉴스",
        "학교 끝나고 도서관 가서",
        "2019년에 SNS",
        "",
        "오늘 날씨",
    ]
    measured = [1.0] * len(utterances)  # the decoded audio's seconds stand in for a missing one
    scores, figures = score_decode(utterances, hypotheses, durations=measured)
    path = tmp_path / "eval_clean.tsv"
    path.write_text(per_utterance_tsv(utterances, scores, figures.counts.durations))
    with path.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert tuple(rows[0]) == TSV_COLUMNS
    assert rows[0]["phonetic"] == "세 시에 만나" and rows[2]["phonetic"] == ""
    assert rows[0]["dual_side"] == "phonetic" and rows[2]["dual_side"] == "spelling"
    assert [r["duration"] for r in rows] == ["1.200", "2.000", "4.990", "5.000", "12.500", "1.000"]

    again = figures_of(read_counts(path))
    assert again.protocols == figures.protocols and again.subsets == figures.subsets
    # Digit and no-digit subsets add up to the whole; the duration buckets too.
    subsets, whole = figures.subsets, figures.primary
    for names in (("digits", "no digits"), ("<2 s", "2-5 s", "5-10 s", ">=10 s")):
        assert sum(subsets[n].errors for n in names) == whole.errors
        assert sum(subsets[n].reference_length for n in names) == whole.reference_length
        assert sum(subsets[n].units for n in names) == whole.units
    assert subsets["digits"].units == 2 and subsets["latin"].units == 2


def test_figures_of_3000_utterances_take_well_under_a_second_each():
    rng = np.random.default_rng(0)
    lines = [f"{i}번 문장 하나" if i % 7 == 0 else "오늘 날씨가 좋네요 정말로" for i in range(3000)]
    utterances = _utterances(lines, rng.uniform(0.5, 15, 3000).tolist())
    hypotheses = [line if rng.random() < 0.8 else line[:-2] for line in lines]
    scores, _ = score_decode(utterances, hypotheses)
    from pefty_whisper.evaluate.figures import decode_counts

    counts = decode_counts(utterances, scores)
    started = time.perf_counter()
    figures = figures_of(counts)
    elapsed = time.perf_counter() - started
    # 5 protocols from one draw, 7 subsets from one draw each (about 0.06 s a figure here);
    # the bound leaves room for a busy machine.
    assert len(figures.subsets) == 7 and elapsed / 8 < 0.2
    assert 0 < figures.primary.half_width < 1.0


def _tsv(tmp_path: Path, name: str, utterances, hypotheses) -> Path:
    scores, figures = score_decode(utterances, hypotheses)
    path = tmp_path / f"{name}.tsv"
    path.write_text(per_utterance_tsv(utterances, scores, figures.counts.durations))
    return path


def _planted_set(n: int, seed: int) -> tuple[list[Utterance], list[str]]:
    """n utterances of 20 characters; a hypothesis with about 10% character errors."""
    rng = np.random.default_rng(seed)
    syllables = np.array(list("가나다라마바사아자차카타파하거너더러머버"))
    lines = ["".join(rng.choice(syllables, 20)) for _ in range(n)]
    hypotheses = ["".join(c if rng.random() > 0.1 else "흐" for c in line) for line in lines]
    return _utterances(lines, [3.0] * n), hypotheses


def test_paired_comparison_of_two_tsvs(tmp_path: Path):
    utterances, hypotheses = _planted_set(3000, seed=1)
    base = read_counts(_tsv(tmp_path, "a", utterances, hypotheses))
    same = paired_counts(base, read_counts(_tsv(tmp_path, "b", utterances, hypotheses)))
    assert set(same) == set(PROTOCOLS)
    assert all(c.verdict == "no clear difference" and c.difference == 0 for c in same.values())
    # Three more errors in every 100 characters: a planted 3-point difference.
    rng = np.random.default_rng(2)
    worse = []
    for line, hyp in zip((u.sentence for u in utterances), hypotheses, strict=True):
        chars = list(hyp)
        for i in rng.choice(20, 20, replace=False):
            if chars[i] == line[i] and rng.random() < 0.0333:
                chars[i] = "흐"
        worse.append("".join(chars))
    compared = paired_counts(base, read_counts(_tsv(tmp_path, "c", utterances, worse)))
    kspon = compared["kspon"]
    assert kspon.verdict == "worse" and 2.0 < kspon.difference < 4.0 and kspon.low > 0
    # B's rows in another order pair by id to the same result.
    shuffled = list(reversed(range(3000)))
    reordered = read_counts(
        _tsv(tmp_path, "d", [utterances[i] for i in shuffled], [worse[i] for i in shuffled])
    )
    assert paired_counts(base, reordered)["kspon"] == kspon


def test_decodes_of_different_utterances_are_not_paired(tmp_path: Path):
    utterances, hypotheses = _planted_set(50, seed=3)
    whole = read_counts(_tsv(tmp_path, "whole", utterances, hypotheses))
    first = read_counts(_tsv(tmp_path, "first", utterances[:40], hypotheses[:40]))
    with pytest.raises(UnpairedError, match="decoded on different utterances .*40 in common"):
        paired_counts(whole, first)
    other_text = [Utterance(u.path, u.sentence[::-1], u.duration, u.id) for u in utterances]
    reprepared = read_counts(_tsv(tmp_path, "again", other_text, hypotheses))
    with pytest.raises(UnpairedError, match="50 of 50 utterances have other reference texts"):
        paired_counts(whole, reprepared)


def test_a_tsv_from_before_protocols_pairs_on_kspon_and_wer(tmp_path: Path):
    utterances, hypotheses = _planted_set(30, seed=4)
    path = _tsv(tmp_path, "new", utterances, hypotheses)
    old = tmp_path / "old.tsv"
    with path.open(encoding="utf-8") as source, old.open("w", encoding="utf-8") as out:
        for line in source:
            out.write("\t".join(line.rstrip("\n").split("\t")[:10]) + "\n")
    counts = read_counts(old)
    assert list(counts.counts) == ["kspon", "wer"] and np.isnan(counts.durations).all()
    assert set(paired_counts(read_counts(path), counts)) == {"kspon", "wer"}
    broken = tmp_path / "broken.tsv"
    broken.write_text(old.read_text().replace("\t20\t", "\tx\t", 1))
    with pytest.raises(Exception, match=r"broken.tsv:2: .* is not a count \('x'\)"):
        read_counts(broken)


def test_eval_record_keeps_the_figures_and_reads_records_written_before_them(tmp_path: Path):
    utterances, hypotheses = _planted_set(20, seed=5)
    _, figures = score_decode(utterances, hypotheses)
    old = {
        "model": "/w/merged/round1",
        "label": "round1",
        "set": "eval_clean",
        "manifest": "/w/data/eval_clean.csv",
        "limit": None,
        "backend": "torch",
        "context": "full",
        "language": "ko",
        "cer": 10.0,
        "cer_with_spaces": 9.0,
        "wer": 40.0,
        "num_utterances": 20,
        "audio_seconds": 60.0,
        "seconds": 6.0,
        "real_time_factor": 0.1,
        "utterances_per_second": 3.3,
        "normalization": "NFC",
        "evaluated": "2026-01-01T00:00:00+00:00",
    }
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    record = EvalRecord.read(path)
    assert record.protocols == {} and record.bootstrap is None and not record.timestamps
    from dataclasses import replace

    new = replace(
        record,
        protocols=figures.protocols,
        subsets=figures.subsets,
        bootstrap=figures.bootstrap,
    )
    new.write(tmp_path / "new.json")
    back = EvalRecord.read(tmp_path / "new.json")
    assert back == new and isinstance(back.protocols["dual"], RateFigure)
    assert back.bootstrap.resamples == 1000 and back.protocols["kspon"].format().count("±") == 1
    raw = json.loads((tmp_path / "new.json").read_text())
    assert set(raw["protocols"]) == set(PROTOCOLS) and "digits" not in raw["protocols"]
    assert set(raw["protocols"]["kspon"]) == {
        "rate", "low", "high", "errors", "reference_length", "units"
    }  # fmt: skip


def test_an_evaluation_decoded_with_timestamps_is_kept_apart_and_named_back():
    label = EvalLabel("round2", "eval_clean", timestamps=True, context="auto")
    assert label.stem == "eval_clean@context-auto-decode-timestamps"
    assert EvalLabel.parse(label.folder, label.stem) == label
    assert label.reference == "round2@context-auto-decode-timestamps"
    assert EvalLabel.from_reference(label.reference, "eval_clean") == label
    assert EvalLabel.from_reference("round2-ct2", "eval_other") == EvalLabel(
        "round2", "eval_other", backend="ct2"
    )
    with pytest.raises(ConfigError, match="not an evaluation's name"):
        EvalLabel.parse("round2", "eval_clean@decode-beam")


def test_protocol_columns_are_in_the_tsv():
    for errors, lengths in PROTOCOL_COLUMNS.values():
        assert errors in TSV_COLUMNS and lengths in TSV_COLUMNS
