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
from pefty_whisper.evaluate.rounds_table import collect_rounds
from pefty_whisper.workspace import MergeRecord, RoundRecord, Workspace

SHORT_ROUND = ["-o", "train.max_steps=2", "-o", "train.eval_steps=2"]


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
    write_manifest(work / "data" / "eval_clean.csv", rows)
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
        wer = json.loads((work / "eval" / label / "eval_english@lang-en.json").read_text())["wer"]
        assert by_round[index].rstrip().endswith(f"{wer:.1f}%")
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
