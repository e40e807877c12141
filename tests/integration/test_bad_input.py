"""Bad input through the real `pefty prepare` and `pefty import-ct2`: duplicates, re-encoded
scripts, files that are not audio, paths outside the data root, every line rejected, and
CTranslate2 models whose converter stored equal tensors once."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from workspaces import write_audio

from pefty_whisper.cli import main


def invoke(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


def write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("path", "sentence"))
    writer.writerows(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def rows_of(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def test_duplicates_stay_on_one_side_and_are_reported(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(10):
        write_audio(corpus / f"a{i}.pcm", i)
    rows = [(f"a{i}.pcm", f"문장 {i}") for i in range(10)]
    rows += [("a3.pcm", "문장 3"), ("./a3.pcm", "다른 문장"), ("a7.pcm", "문장 7")]
    src = write_csv(corpus / "list.csv", rows)
    work = tmp_path / "work"
    result = invoke("prepare", "csv", str(src), "--name", "mine", "--split", "--workdir", str(work))
    assert "3 audio files listed more than once: kept once" in result.output
    assert "list.csv:12 repeats" in result.output and "list.csv:5" in result.output
    train = {r["path"] for r in rows_of(work / "data" / "mine_train.csv")}
    test = {r["path"] for r in rows_of(work / "data" / "mine_test.csv")}
    assert not train & test and len(train) + len(test) == 10
    rejects = rows_of(work / "data" / "prepare_rejects.tsv", "\t")
    assert sum("listed again" in r["reason"] for r in rejects) == 3


def test_each_prepared_set_keeps_its_rejects_record(tmp_path):
    corpus = tmp_path / "corpus"
    write_audio(corpus / "ok.pcm", 1)
    work = ["--workdir", str(tmp_path / "work")]
    one = write_csv(corpus / "one.csv", [("ok.pcm", "하나"), ("gone.pcm", "없음")])
    two = write_csv(corpus / "two.csv", [("ok.pcm", "둘"), ("lost.pcm", "없음")])
    invoke("prepare", "csv", str(one), "--name", "one", *work)
    invoke("prepare", "csv", str(two), "--name", "two", *work)
    invoke("prepare", "csv", str(two), "--name", "two", *work)  # a rerun replaces its own rows
    rejects = rows_of(tmp_path / "work" / "data" / "prepare_rejects.tsv", "\t")
    assert sorted((r["set"], Path(r["path"]).name) for r in rejects) == [
        ("one", "gone.pcm"),
        ("two", "lost.pcm"),
    ]


def test_a_cp949_script_is_read_and_dual_notation_is_cleaned(tmp_path):
    corpus = tmp_path / "corpus"
    lines = []
    texts = [
        "(아/ 그러니까)/(아/ 그러니까) 내가 (A/S)/(에이 에스) 맡겼어",
        "(그+ 그 사람)/(그+ 그 사람)이 (C++)/(씨 플플) 배워",
        "b/ (3시)/(세 시)에 봐 n/",
    ]
    for i, text in enumerate(texts):
        write_audio(corpus / "wav" / f"u{i}.pcm", i)
        lines.append(f"wav\\u{i}.pcm :: {text}")  # made on Windows: backslashes, CP949
    (corpus / "script.trn").write_bytes("\r\n".join(lines).encode("cp949"))
    work = tmp_path / "work"
    result = invoke(
        "prepare", "folder", str(corpus), "--name", "calls", "--normalize", "spelling",
        "--workdir", str(work),
    )  # fmt: skip
    assert "no lines skipped" in result.output, result.output
    sentences = [r["sentence"] for r in rows_of(work / "data" / "calls.csv")]
    assert sentences == [
        "아 그러니까 내가 A/S 맡겼어",
        "그 그 사람이 C++ 배워",
        "3시에 봐",
    ]


def test_when_every_line_is_rejected_one_example_and_a_hint_are_given(tmp_path):
    corpus = tmp_path / "corpus"
    src = write_csv(corpus / "sub" / "list.csv", [("audio/a.wav", "하나"), ("audio/b.wav", "둘")])
    result = invoke("prepare", "csv", str(src), "--name", "x", "--workdir", str(tmp_path), ok=False)
    assert result.exit_code == 1
    assert "every input line was rejected (2 audio file not found)" in result.output
    assert str(corpus / "sub" / "audio" / "a.wav") in result.output
    assert "resolved against the CSV's folder" in result.output
    assert not (tmp_path / "data" / "x.csv").exists()


def test_kspon_with_every_training_line_rejected_fails(tmp_path):
    root = tmp_path / "KsponSpeech"
    (root / "scripts").mkdir(parents=True)
    (root / "scripts" / "train.trn").write_text(
        "KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm :: 없는 파일\n", encoding="utf-8"
    )
    eval_audio = root / "KsponSpeech_eval" / "eval_clean" / "KsponSpeech_E00001.pcm"
    write_audio(eval_audio, 1)
    (root / "scripts" / "eval_clean.trn").write_text(
        "KsponSpeech_eval/eval_clean/KsponSpeech_E00001.pcm :: 평가 문장\n", encoding="utf-8"
    )
    result = invoke("prepare", "kspon", "--root", str(root), "--workdir", str(tmp_path), ok=False)
    assert result.exit_code == 1
    assert "train.trn: every training line was rejected" in result.output
    assert "KsponSpeech_000001.pcm: audio file not found" in result.output


def test_files_that_are_not_audio_say_what_they_are(tmp_path):
    corpus = tmp_path / "corpus"
    write_audio(corpus / "good.pcm", 1)
    (corpus / "notes.mp3").write_text("meeting notes, not a recording\n")
    (corpus / "folder.wav").mkdir()
    (corpus / "readme.pcm").write_text("this file documents the corpus layout\n")
    rows = [
        ("good.pcm", "좋아"),
        ("notes.mp3", "메모"),
        ("folder.wav", "폴더"),
        ("readme.pcm", "설명"),
    ]
    src = write_csv(corpus / "list.csv", rows)
    invoke("prepare", "csv", str(src), "--name", "odd", "--workdir", str(tmp_path))
    reasons = {
        Path(r["path"]).name: r["reason"]
        for r in rows_of(tmp_path / "data" / "prepare_rejects.tsv", "\t")
    }
    assert "it holds text, not audio: 'meeting notes" in reasons["notes.mp3"]
    assert reasons["folder.wav"].startswith("a directory, not an audio file")
    assert "not pcm audio (it holds text" in reasons["readme.pcm"]


def test_paths_outside_the_data_root_are_reported_and_names_must_be_plain(tmp_path):
    corpus = tmp_path / "corpus"
    write_audio(corpus / "inside.pcm", 1)
    write_audio(corpus / "b.pcm", 3)  # absolute, but inside
    write_audio(tmp_path / "elsewhere" / "outside.pcm", 2)
    src = write_csv(
        corpus / "list.csv",
        [
            ("inside.pcm", "안"),
            ("../elsewhere/outside.pcm", "밖"),
            (str(corpus / "inside.pcm"), "또"),
        ],
    )
    work = ["--workdir", str(tmp_path / "work")]
    result = invoke("prepare", "csv", str(src), "--name", "roots", *work)
    assert "1 audio paths lie outside the data root" in result.output
    assert "list.csv:3" in result.output and "outside.pcm" in result.output
    for name in ("../x", "/tmp/x", "a/b", ".hidden"):
        refused = invoke("prepare", "csv", str(src), "--name", name, *work, ok=False)
        assert refused.exit_code == 1 and "must be a plain name" in refused.output, name
    assert not (tmp_path / "x.csv").exists()


def test_import_ct2_of_a_model_with_aliased_tensors(tmp_path):
    """Untouched zero biases and unit LayerNorm weights: the converter stores each value once."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from fixtures import TINY_DIMS, whisper_processor
    from transformers import WhisperForConditionalGeneration

    from pefty_whisper.whisper.processor import (
        WhisperDims,
        whisper_config,
        write_preprocessor_config,
    )

    processor = whisper_processor()
    torch.manual_seed(0)
    config = whisper_config(WhisperDims(n_mels=80, **TINY_DIMS), processor.tokenizer, tied=True)
    model = WhisperForConditionalGeneration(config)  # fresh init: zero biases, unit norms
    source = tmp_path / "fresh"
    model.save_pretrained(source)
    processor.save_pretrained(source)
    write_preprocessor_config(source, processor.feature_extractor)
    ct2_dir = tmp_path / "ct2"
    ctranslate2.converters.TransformersConverter(
        str(source), copy_files=["tokenizer.json", "preprocessor_config.json"]
    ).convert(str(ct2_dir), quantization="float32")
    from pefty_whisper.whisper.ct2_file import Ct2ModelFile

    assert Ct2ModelFile(ct2_dir / "model.bin").aliases, "the converter aliased nothing"
    out = tmp_path / "imported"
    invoke("import-ct2", str(ct2_dir), str(out))
    imported = WhisperForConditionalGeneration.from_pretrained(out)
    for name, tensor in model.state_dict().items():
        assert torch.equal(imported.state_dict()[name], tensor), name
