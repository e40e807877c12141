"""Manifests keep KsponSpeech's phonetic side beside the sentence, and old manifests still read."""

from __future__ import annotations

import csv
from pathlib import Path

from pefty_whisper.data.kspon import normalize_sides
from pefty_whisper.data.manifest import read_manifest, write_manifest
from pefty_whisper.data.table import Utterance, UtteranceTable

DUAL_LINE = "b/ 내일 (3시)/(세 시)에 만나 n/"
PLAIN_LINE = "학교 끝나고 도서관 가서 공부했어"


def _utterances(tmp_path: Path) -> list[Utterance]:
    rows = []
    for i, raw in enumerate((DUAL_LINE, PLAIN_LINE)):
        sides = normalize_sides(raw)
        rows.append(
            Utterance(
                str(tmp_path / f"u{i}.pcm"), sides.spelling, 1.5, f"u{i}", raw, sides.phonetic
            )
        )
    return rows


def _header(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as handle:
        return next(csv.reader(handle))


def test_phonetic_column_round_trips(tmp_path):
    utterances = _utterances(tmp_path)
    path = tmp_path / "eval.csv"
    write_manifest(path, utterances)
    assert _header(path) == ["path", "sentence", "duration", "id", "raw", "phonetic"]

    table = read_manifest(path, check_audio=False).utterances
    assert list(table) == utterances
    assert [table.phonetic(i) for i in range(2)] == ["내일 세 시에 만나", ""]
    assert table[0].sentence == "내일 3시에 만나"

    # Written again from the columns (no Utterance per row), the file is the same bytes.
    again = tmp_path / "again.csv"
    write_manifest(again, table)
    assert again.read_bytes() == path.read_bytes()


def test_manifest_without_phonetic_forms_keeps_the_five_columns(tmp_path):
    plain = [u for u in _utterances(tmp_path) if not u.phonetic]
    path = tmp_path / "plain.csv"
    write_manifest(path, iter(plain))  # a one-pass iterable is fine too
    assert _header(path) == ["path", "sentence", "duration", "id", "raw"]
    assert list(read_manifest(path, check_audio=False).utterances) == plain


def test_manifest_from_before_the_column_reads_with_empty_phonetic(tmp_path):
    path = tmp_path / "old.csv"
    path.write_text("path,sentence,duration,id,raw\n/a/u0.pcm,안녕하세요,1.000,u0,안녕하세요\n")
    table = read_manifest(path, check_audio=False).utterances
    assert table[0] == Utterance("/a/u0.pcm", "안녕하세요", 1.0, "u0", "안녕하세요")
    assert table[0].phonetic == "" and not table.has_phonetic


def test_table_take_and_concat_keep_the_phonetic_column(tmp_path):
    utterances = _utterances(tmp_path)
    table = UtteranceTable.from_utterances(utterances)
    assert table.has_phonetic
    assert [u.phonetic for u in table.take([1, 0])] == ["", "내일 세 시에 만나"]
    joined = UtteranceTable.concat([table[1:], table[:1]])
    assert [u.phonetic for u in joined] == ["", "내일 세 시에 만나"]
    assert not table[1:].has_phonetic
