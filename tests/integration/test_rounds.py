"""Two rounds on a tiny Whisper through the real CLI: train -> merge -> evaluate, then `rounds`.

Also the merge's guarantees: merged logits equal the adapter model's, a changed base is refused,
and a merge killed midway leaves no merged/roundN behind.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from fixtures import drop_generation_language, save_tiny_whisper
from safetensors.torch import load_file, save_file
from workspaces import SENTENCES, make_workspace, subprocess_env, write_manifest

from pefty_whisper.cli import main
from pefty_whisper.evaluate.compare import compare_evaluations
from pefty_whisper.evaluate.figures import figures_of, read_counts
from pefty_whisper.evaluate.rounds_table import collect_rounds
from pefty_whisper.metrics import PROTOCOLS
from pefty_whisper.workspace import EvalRecord, MergeRecord, RoundRecord, Workspace

SHORT_ROUND = ["-o", "train.max_steps=2", "-o", "train.eval_steps=2"]
PHONETIC = {"KBS 뉴스를 봤어요": "케이 비 에스 뉴스를 봤어요"}


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def two_rounds(tmp_path_factory) -> tuple[Path, Path]:
    """A workspace with rounds 1 and 2 trained (8-bit, ZeRO-2), merged and evaluated."""
    root = tmp_path_factory.mktemp("rounds")
    base = save_tiny_whisper(root / "base")
    work = make_workspace(root / "work")
    audio = sorted((work / "audio").glob("*.pcm"))
    rows = [(str(p), s) for p, s in zip(audio, SENTENCES, strict=True)]
    write_manifest(work / "data" / "train_KsponSpeech_02_train.csv", rows[::-1])
    write_manifest(work / "data" / "train_KsponSpeech_02_test.csv", rows)
    # KsponSpeech's dual transcription: `(KBS)/(케이 비 에스)` keeps its spoken side beside it.
    with (work / "data" / "eval_clean.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "sentence", "phonetic"])
        writer.writerows([(*row, PHONETIC.get(row[1], "")) for row in rows])
    ws = ["--workdir", str(work)]
    invoke("evaluate", "--set", "eval_clean", "--model", str(base), *ws, "-o", f"model.base={base}")
    invoke("train", "--round", "1", "--base", str(base), *ws, *SHORT_ROUND)
    invoke("merge", "--round", "1", *ws)
    invoke("evaluate", "--set", "eval_clean", *ws)
    invoke("train", "--round", "2", *ws, *SHORT_ROUND)  # base defaults to merged/round1
    invoke("merge", *ws)  # the latest round
    invoke("evaluate", "--set", "eval_clean", "--model", "merged/round2", *ws)
    return base, work


def logits(model, features: torch.Tensor, decoder_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_features=features, decoder_input_ids=decoder_ids).logits


def test_merged_logits_equal_adapter_logits(two_rounds):
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    base, work = two_rounds
    torch.manual_seed(1)
    features = torch.randn(2, 80, 3000)
    decoder_ids = torch.tensor([[50258, 50264, 50359, 50363, 1000, 2000]] * 2)
    merged = WhisperForConditionalGeneration.from_pretrained(work / "merged" / "round1").eval()
    plain_base = WhisperForConditionalGeneration.from_pretrained(base).eval()
    with_adapter = PeftModel.from_pretrained(
        WhisperForConditionalGeneration.from_pretrained(base), work / "adapters" / "round1"
    ).eval()
    merged_logits = logits(merged, features, decoder_ids)
    assert torch.allclose(merged_logits, logits(with_adapter, features, decoder_ids), atol=1e-4)
    # The adapter learned something: merging changed the model.
    assert (merged_logits - logits(plain_base, features, decoder_ids)).abs().max() > 1e-3

    record = json.loads((work / "merged" / "round1" / "round.json").read_text())
    assert record["kind"] == "merged" and record["round"] == 1
    assert record["merge_check"]["max_abs_logit_diff"] <= record["merge_check"]["tolerance"]
    assert record["weights_hash"].startswith("sha256:")
    generation = json.loads((work / "merged" / "round1" / "generation_config.json").read_text())
    assert generation["language"] in ("ko", "korean") and generation["task"] == "transcribe"
    assert generation.get("forced_decoder_ids") is None
    assert (work / "merged" / "round1" / "preprocessor_config.json").is_file()


def test_round_2_trains_on_merged_round_1_with_its_hash(two_rounds):
    _, work = two_rounds
    round2 = json.loads((work / "adapters" / "round2" / "round.json").read_text())
    merged1 = json.loads((work / "merged" / "round1" / "round.json").read_text())
    assert round2["base"] == "merged/round1"
    assert round2["base_hash"] == merged1["weights_hash"]
    assert (work / "merged" / "round2" / "model.safetensors").is_file()
    # The same lineage through the typed records and the workspace's lookups.
    workspace = Workspace.at(work)
    record = RoundRecord.read(workspace.adapter_dir(2))
    assert record is not None and record.base == workspace.merged_ref(1) == "merged/round1"
    assert record.base_hash == workspace.merge_record(1).weights_hash
    assert record.data.train.name == "train_KsponSpeech_02_train"
    assert workspace.round_indices() == [1, 2] and workspace.latest_merged_round() == 2
    assert workspace.latest_adapter_round() == 2


def test_evaluate_writes_summary_and_per_utterance_tsv(two_rounds):
    _, work = two_rounds
    summary = json.loads((work / "eval" / "round2" / "eval_clean.json").read_text())
    assert summary["num_utterances"] == 4 and summary["backend"] == "torch"
    with (work / "eval" / "round2" / "eval_clean.tsv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["reference"] for r in rows] == [
        "안녕하세요 반갑습니다",
        "오늘 날씨가 좋네요",
        "세 시에 만나요",
        "kbs 뉴스를 봤어요",
    ]
    # The summary CER is the TSV's total character errors over total reference characters.
    errors = sum(int(r["char_errors"]) for r in rows)
    length = sum(int(r["reference_chars"]) for r in rows)
    assert summary["cer"] == pytest.approx(100 * errors / length)
    assert summary["real_time_factor"] > 0
    # The whole-recording figures: the 4 utterances stitched into one recording, decoded whole,
    # and three generated non-speech clips.
    longform = summary["longform"]
    assert longform["recordings"] == 1 and longform["audio_seconds"] > 4
    assert 0 <= longform["deleted"] <= 100 and longform["cer"] >= longform["deleted"]
    assert longform["method"]
    assert set(summary["silence_chars"]) == {"silence", "noise", "hum"}


def test_evaluate_scores_every_protocol_and_subset_with_intervals(two_rounds):
    _, work = two_rounds
    record = EvalRecord.read(work / "eval" / "round2" / "eval_clean.json")
    assert list(record.protocols) == list(PROTOCOLS)
    assert record.protocols["kspon"].rate == pytest.approx(record.cer)
    assert record.protocols["spaces"].rate == pytest.approx(record.cer_with_spaces)
    assert record.protocols["wer"].rate == pytest.approx(record.wer)
    for figure in (*record.protocols.values(), *record.subsets.values()):
        assert figure.low <= figure.rate <= figure.high
    # KBS is the one utterance with Latin letters; every 1 s utterance is under 2 s (the
    # manifest has no durations: the decoded audio's are used).
    assert record.subsets["latin"].units == 1 and record.subsets["no latin"].units == 3
    assert record.subsets["<2 s"].units == 4 and "digits" not in record.subsets
    assert record.bootstrap is not None and record.bootstrap.resamples == 1000
    # The TSV carries both sides and every protocol's counts: the record's figures come back.
    tsv = work / "eval" / "round2" / "eval_clean.tsv"
    with tsv.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["phonetic"] for r in rows] == ["", "", "", "케이 비 에스 뉴스를 봤어요"]
    assert [r["duration"] for r in rows] == ["1.000"] * 4
    again = figures_of(read_counts(tsv))
    assert again.protocols == record.protocols and again.subsets == record.subsets
    # The long-form figure of one recording has no interval over recordings.
    assert record.longform["recordings"] == 1 and record.longform["cer_low"] is None
    assert record.longform["recording_errors"] and record.longform["dual"] is not None


def test_evaluate_with_timestamps_is_kept_apart_and_prints_the_protocols(two_rounds, tmp_path):
    _, original = two_rounds
    work = tmp_path / "work"
    shutil.copytree(original, work)
    ws = ["--workdir", str(work), "--no-longform"]
    output = invoke("evaluate", "--model", "merged/round2", "--timestamps", *ws).output
    assert "protocols (95% interval): kspon " in output and " dual " in output
    assert "subsets (kspon): no digits " in output and " latin " in output and "±" in output
    record = EvalRecord.read(work / "eval" / "round2" / "eval_clean@decode-timestamps.json")
    assert record.timestamps and record.variant == "decode-timestamps"
    assert record.num_utterances == 4 and list(record.protocols) == list(PROTOCOLS)
    # The round's own figure is untouched, and the two compare on the same utterances.
    before = (original / "eval" / "round2" / "eval_clean.json").read_text()
    assert (work / "eval" / "round2" / "eval_clean.json").read_text() == before
    compared = invoke("compare", "round2", "round2@decode-timestamps", "--workdir", str(work))
    assert "B = round2@decode-timestamps, 4 utterances in both" in compared.output


def test_evaluate_through_ct2_keeps_the_torch_figures(two_rounds):
    _, work = two_rounds
    torch_summary = work / "eval" / "round2" / "eval_clean.json"
    before = torch_summary.read_text()
    ws = ["--workdir", str(work), "-o", "model.context=auto"]
    invoke("evaluate", "--set", "eval_clean", "--model", "merged/round2", "--backend", "ct2", *ws)
    summary = json.loads((work / "eval" / "round2-ct2" / "eval_clean.json").read_text())
    assert summary["backend"] == "ct2" and summary["context"] == "auto"
    assert summary["num_utterances"] == 4 and summary["cer"] >= 0
    # The conversion is kept for the next evaluation: int8 is ct2's default on a CPU.
    assert (work / "exports" / "round2-ct2-int8" / "model.bin").is_file()
    assert torch_summary.read_text() == before


def test_rounds_table_and_plot(two_rounds, tmp_path):
    _, work = two_rounds
    result = invoke("rounds", "--workdir", str(work), "--plot", str(tmp_path / "rounds.png"))
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["round", "base"] and "eval_clean CER" in lines[0]
    assert [line.split()[0] for line in lines[1:4]] == ["0", "1", "2"]
    assert "train_KsponSpeech_02_train" in lines[3] and "merged/round1" in lines[3]
    assert "eval_clean long-form (deleted)" in lines[0] and "silence chars" in lines[0]
    for line, label in zip(lines[1:4], ("round0", "round1", "round2"), strict=True):
        summary = json.loads((work / "eval" / label / "eval_clean.json").read_text())
        assert f"{summary['cer']:.1f}%" in line
        whole = summary["longform"]
        assert f"{whole['cer']:.1f}% ({whole['deleted']:.1f}%)" in line
        assert line.rstrip().endswith(f"  {sum(summary['silence_chars'].values()):,d}")
    assert (tmp_path / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Each figure with its interval, each round marked against its base on the same utterances.
    assert "eval_clean vs base" in lines[0]
    workspace = Workspace.at(work)
    config = workspace.load_config()
    for line, label in zip(lines[1:4], ("round0", "round1", "round2"), strict=True):
        interval = EvalRecord.read(work / "eval" / label / "eval_clean.json").protocols["kspon"]
        assert interval.format() in line
    assert "vs " not in lines[1]
    for line, (a, b) in zip(lines[2:4], (("round0", "round1"), ("round1", "round2")), strict=True):
        paired = compare_evaluations(workspace, config, a, b, "eval_clean").primary.paired
        mark = f"vs {a[-1]}: {paired.difference:+.1f} ±{paired.half_width:.1f} {paired.verdict}"
        assert mark in line
    assert "paired bootstrap" in result.output


def test_merge_refuses_a_changed_base(two_rounds, tmp_path):
    base, work = two_rounds
    changed = tmp_path / "changed_base"
    changed.mkdir()
    for file in base.iterdir():
        (changed / file.name).write_bytes(file.read_bytes())
    weights = load_file(changed / "model.safetensors")
    name = next(k for k in weights if k.endswith("fc1.weight"))
    weights[name] = weights[name] + 0.01
    save_file(weights, changed / "model.safetensors", metadata={"format": "pt"})
    record_path = work / "adapters" / "round1" / "round.json"
    record = json.loads(record_path.read_text())
    adapter_copy = tmp_path / "adapter"
    adapter_copy.mkdir()
    for file in (work / "adapters" / "round1").glob("adapter_*"):
        (adapter_copy / file.name).write_bytes(file.read_bytes())
    record["base_dir"] = str(changed)
    (adapter_copy / "round.json").write_text(json.dumps(record))
    result = CliRunner().invoke(
        main,
        [
            "merge",
            "--adapter",
            str(adapter_copy),
            "--out",
            str(tmp_path / "out"),
            "--workdir",
            str(work),
        ],
    )
    assert result.exit_code == 1
    assert "the base changed since training" in result.output
    assert not (tmp_path / "out").exists()


def test_merge_killed_midway_leaves_nothing_that_looks_finished(two_rounds, tmp_path):
    _, work = two_rounds
    out = tmp_path / "merged_killed"
    command = [
        sys.executable,
        "-m",
        "pefty_whisper.cli",
        "merge",
        "--round",
        "1",
        "--out",
        str(out),
        "--workdir",
        str(work),
    ]
    process = subprocess.Popen(command, env=subprocess_env(), start_new_session=True)
    deadline = time.time() + 120
    try:
        while not list(tmp_path.glob(".merged_killed.*.partial")):
            assert process.poll() is None, "merge ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert not out.exists()
    # The next merge cleans the leftover and completes.
    invoke("merge", "--round", "1", "--out", str(out), "--workdir", str(work))
    assert (out / "round.json").is_file()
    assert not list(tmp_path.glob(".merged_killed.*.partial"))


def test_merge_refuses_to_overwrite_without_force(two_rounds):
    _, work = two_rounds
    result = CliRunner().invoke(main, ["merge", "--round", "1", "--workdir", str(work)])
    assert result.exit_code == 1 and "pass --force" in result.output


def test_evaluate_missing_set_is_a_clear_error(two_rounds):
    _, work = two_rounds
    result = CliRunner().invoke(main, ["evaluate", "--set", "nope", "--workdir", str(work)])
    assert result.exit_code == 1
    assert "nope.csv: manifest not found" in result.output


def test_evaluating_an_adapter_of_a_hub_like_base_decodes_korean(tmp_path):
    """A hub base's generation config names no language. Evaluating its adapter goes through
    merge's one path, which writes the round's language (ko) into the merged checkpoint, so the
    evaluation decodes Korean instead of detecting a language per utterance."""
    base = drop_generation_language(save_tiny_whisper(tmp_path / "hub_like_base", seed=3))
    assert "language" not in json.loads((base / "generation_config.json").read_text())
    work = make_workspace(tmp_path / "work")
    audio = sorted((work / "audio").glob("*.pcm"))
    write_manifest(work / "data" / "eval_clean.csv", [(str(audio[0]), SENTENCES[0])])
    ws = ["--workdir", str(work)]
    invoke("train", "--round", "1", "--base", str(base), *ws, *SHORT_ROUND)
    invoke("evaluate", "--set", "eval_clean", "--model", "adapters/round1", *ws)
    summary = json.loads((work / "eval" / "round1-adapter" / "eval_clean.json").read_text())
    assert summary["language"] == "ko"
    assert summary["model"] == str(work / "adapters" / "round1")
    # The temporary merged checkpoint is gone; `pefty merge` writes the same language.
    assert not list(work.glob("pefty-eval-*"))
    invoke("merge", "--round", "1", *ws)
    generation = json.loads((work / "merged" / "round1" / "generation_config.json").read_text())
    assert generation["language"] in ("ko", "korean") and generation["task"] == "transcribe"
    merged = MergeRecord.read(work / "merged" / "round1")
    assert merged is not None and merged.base == str(base)
    assert merged.merge_check.max_abs_logit_diff <= merged.merge_check.tolerance


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng speaks the English set")
def test_a_set_in_another_language_shows_its_wer_per_round(two_rounds, tmp_path):
    from pefty_whisper.demo.english import ENGLISH_SENTENCES, write_english_set

    _, original = two_rounds
    work = tmp_path / "work"
    shutil.copytree(original, work)  # the other tests read the module's table as it was
    english = write_english_set(tmp_path / "english")
    ws = ["--workdir", str(work), "--no-longform", "--language", "en", "--set", str(english)]
    invoke("evaluate", "--model", "merged/round1", *ws)
    invoke("evaluate", "--model", "merged/round2", *ws)
    summary = json.loads((work / "eval" / "round2" / "eval_english@lang-en.json").read_text())
    assert summary["language"] == "en" and summary["num_utterances"] == len(ENGLISH_SENTENCES)
    tsv = (work / "eval" / "round2" / "eval_english@lang-en.tsv").read_text(encoding="utf-8")
    assert ENGLISH_SENTENCES[0] in tsv

    lines = invoke("rounds", "--workdir", str(work)).output.splitlines()
    header = lines[0]
    assert "eval_english WER (en)" in header and "eval_english CER" not in header
    assert "eval_clean CER" in header
    by_round = {line.split()[0]: line for line in lines[1:4]}
    assert by_round["0"].rstrip().endswith("-")  # round 0 was not evaluated on it
    for label, index in (("round1", "1"), ("round2", "2")):
        record = EvalRecord.read(work / "eval" / label / "eval_english@lang-en.json")
        assert f"{record.wer:.1f}% ±" in by_round[index]  # the WER with its interval
        assert by_round[index].rstrip().endswith(record.protocols["wer"].format())
    # The round's own figure on a set is never overwritten by one in another language.
    before = (work / "eval" / "round2" / "eval_clean.json").read_text()
    invoke("evaluate", "--model", "merged/round2", *ws[:-2], "--set", "eval_clean")
    assert (work / "eval" / "round2" / "eval_clean.json").read_text() == before
    assert (work / "eval" / "round2" / "eval_clean@lang-en.json").is_file()
    header = invoke("rounds", "--workdir", str(work)).output.splitlines()[0]
    assert "eval_clean WER (en)" in header and "eval_clean CER" in header
    # A conversion's figure in that language does not stand in for the round's own.
    own = json.loads((work / "eval" / "round2" / "eval_english@lang-en.json").read_text())
    converted = work / "eval" / "round2-ct2" / "eval_english@lang-en.json"
    converted.parent.mkdir(exist_ok=True)
    converted.write_text(json.dumps({**own, "backend": "ct2", "wer": own["wer"] + 7.0}))
    rows = collect_rounds(Workspace.at(work))
    assert rows[2].other_wer[("eval_english", "en")] == own["wer"]


def test_evaluate_names_an_unknown_language_before_loading(two_rounds):
    _, work = two_rounds
    result = CliRunner().invoke(
        main, ["evaluate", "--workdir", str(work), "--language", "klingon", "--no-longform"]
    )
    assert result.exit_code != 0
    assert "unknown Whisper language 'klingon'" in result.output


def _rewrite_tsv(path: Path, change) -> None:
    """A planted evaluation: each row of a per-utterance TSV changed by `change(row)`."""
    with path.open(encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        fields, rows = reader.fieldnames, list(reader)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fields, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(change(dict(row)) or row for row in rows)


def _errors(row: dict, char_errors: int | None = None, word_errors: int | None = None) -> dict:
    if char_errors is not None:
        for column in ("char_errors", "phonetic_char_errors", "dual_char_errors"):
            row[column] = str(char_errors)
        row["char_errors_with_spaces"] = str(char_errors)
    if word_errors is not None:
        row["word_errors"] = str(word_errors)
    return row


def _plant(work: Path, folder: str, stem: str, rows: list[tuple[str, str, int, int]]) -> None:
    """eval/<folder>/<stem>.json and .tsv holding (id, reference, errors, characters) rows."""
    source = work / "eval" / "round2" / "eval_clean.json"
    (work / "eval" / folder).mkdir(parents=True, exist_ok=True)
    shutil.copy(source, work / "eval" / folder / f"{stem}.json")
    with (work / "eval" / folder / f"{stem}.tsv").open("w", encoding="utf-8") as handle:
        handle.write("id\treference\thypothesis\tchar_errors\treference_chars\n")
        handle.writelines(f"{i}\t{ref}\t\t{e}\t{n}\n" for i, ref, e, n in rows)


def test_compare_finds_no_difference_with_itself_and_a_planted_one(two_rounds, tmp_path):
    _, original = two_rounds
    work = tmp_path / "work"
    shutil.copytree(original, work)
    ws = ["--workdir", str(work)]
    itself = invoke("compare", "round2", "merged/round2", "--set", "eval_clean", *ws).output
    lines = itself.splitlines()
    assert lines[0].startswith("eval_clean: A = round2, B = round2, 4 utterances in both")
    assert [line.split()[0] for line in lines[2:7]] == list(PROTOCOLS)
    assert all("+0.0 points [+0.0, +0.0]: no clear difference" in line for line in lines[2:7])
    assert lines[-1] == "B against A (kspon CER): no clear difference"

    # 300 planted utterances of 20 characters: A at 5%, B at 8% on every one of them.
    references = [(f"p{i}", f"문장 {i}") for i in range(300)]
    _plant(work, "planted-a", "eval_clean", [(i, r, 1, 20) for i, r in references])
    _plant(work, "planted-b", "eval_clean", [(i, r, 1 + (i[-1] in "012345"), 20)
                                             for i, r in references])  # fmt: skip
    planted = invoke("compare", "planted-a", "planted-b", *ws).output.splitlines()
    assert [line.split()[0] for line in planted[2:]] == ["kspon", "B"]  # an old-style TSV
    assert "5.0% ±0.0" in planted[2] and planted[-1].endswith(": worse")
    assert "+3.0 points" in planted[2]

    # Other utterances, a missing evaluation: one line each, naming the way out.
    _plant(work, "planted-c", "eval_clean", [(f"q{i}", r, 1, 20) for i, (_, r) in enumerate(
        references)])  # fmt: skip
    result = CliRunner().invoke(main, ["compare", "planted-a", "planted-c", *ws])
    assert result.exit_code == 1 and "decoded on different utterances" in result.output
    result = CliRunner().invoke(main, ["compare", "round1", "round3", *ws])
    assert result.exit_code == 1
    assert "run `pefty evaluate --set eval_clean --model merged/round3` first" in result.output
    result = CliRunner().invoke(main, ["compare", "round1", "round2@context-auto", *ws])
    assert result.exit_code == 1
    assert (
        "run `pefty evaluate --set eval_clean --model merged/round2 -o model.context=auto` first"
        in result.output
    )


def test_training_on_a_round_clearly_worse_than_its_base_warns(two_rounds, tmp_path, caplog):
    import logging

    from pefty_whisper.train import default_round_plan
    from pefty_whisper.train import plan as plan_module

    _, original = two_rounds
    work = tmp_path / "work"
    shutil.copytree(original, work)
    workspace = Workspace.at(work)
    config = workspace.load_config()
    logger = logging.getLogger(plan_module.__name__)
    logger.addHandler(caplog.handler)

    def warnings_for_round_3() -> str:
        caplog.clear()
        with caplog.at_level("WARNING", logger=logger.name):
            default_round_plan(workspace, config, 3)
        return caplog.text

    try:
        # Round 1 perfect and round 2 no better: no warning.
        _rewrite_tsv(work / "eval" / "round1" / "eval_clean.tsv", lambda r: _errors(r, 0))
        _rewrite_tsv(work / "eval" / "round2" / "eval_clean.tsv", lambda r: _errors(r, 0))
        assert warnings_for_round_3() == ""
        # Planted: round 2 wrong on every utterance its base got right.
        _rewrite_tsv(work / "eval" / "round2" / "eval_clean.tsv", lambda r: _errors(r, 3))
        text = warnings_for_round_3()
        assert "merged/round2 is clearly worse than its base (round 1): eval_clean CER" in text
        assert "To train round 3 on the earlier base instead: " in text
        assert text.rstrip().endswith("pefty train --round 3 --base merged/round1")
        # The other-language set by WER: forgetting English is flagged as well.
        _rewrite_tsv(work / "eval" / "round2" / "eval_clean.tsv", lambda r: _errors(r, 0))
        for label, words in (("round1", 0), ("round2", 2)):
            folder = work / "eval" / label
            for suffix in (".json", ".tsv"):
                shutil.copy(folder / f"eval_clean{suffix}", folder / f"eval_clean@lang-en{suffix}")
            _rewrite_tsv(folder / "eval_clean@lang-en.tsv", lambda r, w=words: _errors(r, None, w))
        text = warnings_for_round_3()
        assert "eval_clean WER (en)" in text and "eval_clean CER" not in text
        # An explicit earlier base, or a resumed round, is not warned about.
        caplog.clear()
        default_round_plan(workspace, config, 3, base="merged/round1")
        default_round_plan(workspace, config, 3, resume=True)
        assert caplog.text == ""
    finally:
        logger.removeHandler(caplog.handler)
