"""The model card through the real CLI: `pefty merge` and `pefty export` write README.md in the
Hub's format, `pefty evaluate` refreshes its model-index, huggingface_hub reads it back to the
figures of the eval records, and `pefty push` fails with one line offline or without a network.

Also: a merge and a CTranslate2 export keep the base's alignment heads. The workspace goes
through its steps once (the fixture), keeping each card as it was after each step, so the tests
read what each step wrote in any order.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from huggingface_hub import ModelCard
from workspaces import SENTENCES, cli_command, make_workspace, subprocess_env, write_manifest

from pefty_whisper.card import write_base_card
from pefty_whisper.cli import main
from pefty_whisper.workspace import EvalLabel, EvalRecord

FAST = ["-o", "train.max_steps=2", "-o", "train.eval_steps=2", "-o", "train.deepspeed=none"]
HEADS = [[0, 3], [1, 1]]  # not the default (every head of the second half): kept, not rebuilt


def invoke(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Round 1 on a tiny base that has a card of its own: merged, evaluated, exported, the
    export evaluated, the round merged again elsewhere and evaluated; cards kept per step."""
    pytest.importorskip("ctranslate2", reason="pip install 'pefty-whisper[export]'")
    root = tmp_path_factory.mktemp("card")
    base = save_tiny_whisper(root / "base")
    generation = json.loads((base / "generation_config.json").read_text())
    generation["alignment_heads"] = HEADS
    (base / "generation_config.json").write_text(json.dumps(generation))
    write_base_card(base, "openai/whisper-tiny", "apache-2.0", "A tiny random Whisper.")
    work = make_workspace(root / "work")
    audio = sorted((work / "audio").glob("*.pcm"))
    rows = [(str(p), s) for p, s in zip(audio, SENTENCES, strict=True)]
    write_manifest(work / "data" / "eval_clean.csv", rows)
    cards = root / "cards"
    cards.mkdir()
    merged, export, again = work / "merged" / "round1", work / "exports" / "round1-ct2-int8", root

    def keep(directory: Path, name: str) -> None:
        shutil.copyfile(directory / "README.md", cards / f"{name}.md")

    ws = ["--workdir", str(work)]
    invoke("train", "--round", "1", "--base", str(base), *ws, *FAST)
    invoke("merge", "--round", "1", *ws)
    keep(merged, "merged")
    invoke("evaluate", "--set", "eval_clean", *ws)
    invoke("evaluate", "--set", "eval_clean", "--limit", "2", "--no-longform", *ws)
    keep(merged, "evaluated")
    shutil.copytree(work / "eval" / "round1", cards / "evaluated-records")  # `again` rewrites
    invoke("export", "--model", "merged/round1", "--format", "ct2", *ws)
    keep(export, "export")
    invoke("evaluate", "--set", "eval_clean", "--model", "exports/round1-ct2-int8", *ws)
    keep(export, "export-evaluated")
    again = root / "again"
    invoke("merge", "--round", "1", "--out", str(again), *ws)
    keep(again, "again")
    invoke("evaluate", "--set", "eval_clean", "--model", str(again), "--no-longform", *ws)
    keep(again, "again-evaluated")
    return {"work": work, "cards": cards, "export": export, "again": again, "merged": merged}


def card(path: Path) -> ModelCard:
    return ModelCard.load(path if path.suffix == ".md" else path / "README.md")


def figures(model_card: ModelCard) -> dict[tuple[str, str | None, str], float]:
    return {
        (r.dataset_name, r.dataset_config, r.metric_config): r.metric_value
        for r in model_card.data.eval_results or []
    }


def test_merge_writes_a_hub_card_with_lineage_and_training(flow: dict[str, Path]) -> None:
    merged = card(flow["cards"] / "merged.md")
    data = merged.data
    assert data.language == "ko" and data.pipeline_tag == "automatic-speech-recognition"
    assert data.base_model == "openai/whisper-tiny" and data.license == "apache-2.0"  # the base's
    assert data.library_name == "transformers"
    assert {"pefty-whisper", "whisper", "lora"} <= set(data.tags)
    assert data.datasets == ["train_KsponSpeech_01_train"]
    assert data.eval_results is None  # not evaluated yet
    text = merged.text
    assert "## Rounds" in text and "## Training" in text and "## How to use it" in text
    training = text.split("## Training")[1].split("##")[0]
    assert "| 1 | `base` |" in training and "| 0.01 |" in training  # the round's learning rate
    assert str(flow["work"].parent) not in text  # a published card holds no local paths
    assert 'pipeline("automatic-speech-recognition", model="merged/round1")' in text
    assert "pefty export --model merged/round1 --format ct2" in text  # faster-whisper's way
    generation = json.loads((flow["merged"] / "generation_config.json").read_text())
    assert generation["alignment_heads"] == HEADS


def test_evaluate_refreshes_the_model_index_to_the_records(flow: dict[str, Path]) -> None:
    found = figures(card(flow["cards"] / "evaluated.md"))
    expected = {}
    for path in sorted((flow["cards"] / "evaluated-records").glob("*.json")):
        record = EvalRecord.read(path)
        variant = EvalLabel.parse("round1", path.stem).variant or None
        assert record.protocols  # every protocol with its interval: all go on the card
        for protocol, figure in record.protocols.items():
            expected[(record.set, variant, protocol)] = figure.rate
        assert record.protocols["kspon"].rate == record.cer
        if record.longform:
            expected[(record.set, variant, "long-form")] = record.longform["cer"]
    assert found == expected
    assert ("eval_clean", "first-2", "kspon") in found
    for result in card(flow["cards"] / "evaluated.md").data.eval_results:
        if result.metric_config != "long-form":  # each protocol's figure carries its interval
            low, high = result.metric_args["interval"]
            assert low <= result.metric_value <= high
    assert ("eval_clean", None, "long-form") in found


def test_an_export_gets_its_own_card_and_keeps_the_alignment_heads(flow: dict[str, Path]) -> None:
    export = flow["export"]
    assert json.loads((export / "config.json").read_text())["alignment_heads"] == HEADS
    exported = card(flow["cards"] / "export.md")
    assert exported.data.library_name == "ctranslate2" and "ctranslate2" in exported.data.tags
    assert exported.data.base_model == "openai/whisper-tiny"
    assert exported.data.eval_results is None  # the merged round's figures are not its own
    assert 'WhisperModel("exports/round1-ct2-int8"' in exported.text
    record = EvalRecord.read(flow["work"] / "eval" / "round1-ct2-int8" / "eval_clean.json")
    found = figures(card(flow["cards"] / "export-evaluated.md"))
    assert found[("eval_clean", None, "kspon")] == record.cer and record.backend == "ct2"


def test_another_merge_of_the_round_has_only_its_own_figures(flow: dict[str, Path]) -> None:
    # eval/round1 measured merged/round1 before `again` was written: not again's figures.
    assert card(flow["cards"] / "again.md").data.eval_results is None
    record = EvalRecord.read(flow["work"] / "eval" / "round1" / "eval_clean.json")
    assert Path(record.model) == flow["again"]  # the same label: round1
    assert figures(card(flow["cards"] / "again-evaluated.md"))[
        ("eval_clean", None, "kspon")
    ] == pytest.approx(record.cer)


def test_someone_elses_readme_is_never_rewritten(flow: dict[str, Path], tmp_path: Path) -> None:
    mine = shutil.copytree(flow["again"], tmp_path / "mine")
    (mine / "README.md").write_text("# my own notes\n")
    invoke(
        "evaluate", "--set", "eval_clean", "--model", str(mine), "--no-longform", "--limit", "1",
        "--workdir", str(flow["work"]),
    )  # fmt: skip
    assert (mine / "README.md").read_text() == "# my own notes\n"


def test_push_offline_fails_with_one_line(flow: dict[str, Path]) -> None:
    before = (flow["merged"] / "README.md").read_text()
    result = CliRunner().invoke(
        main, ["push", "merged/round1", "--repo", "me/offline-ko", "--workdir", str(flow["work"])]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "offline (HF_HUB_OFFLINE is set)" in lines[0], result.output
    assert (flow["merged"] / "README.md").read_text() == before  # left as it was


def test_push_to_an_unreachable_hub_fails_with_one_line(
    flow: dict[str, Path], tmp_path: Path
) -> None:
    model = shutil.copytree(flow["export"], tmp_path / "to-push")
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = subprocess_env()
    env.update(HF_HUB_OFFLINE="0", HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_TOKEN="hf_test")
    command = cli_command("push", str(model), "--repo", "me/tiny-ko", "--workdir")
    process = subprocess.run(
        [*command, str(flow["work"])], capture_output=True, text=True, env=env, timeout=300
    )
    assert process.returncode == 1, process.stdout + process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and "the Hugging Face Hub is unreachable" in errors[0], process.stderr
    assert "Traceback" not in process.stderr
    # The card was rewritten for the push, naming the repository in its examples.
    assert 'WhisperModel("me/tiny-ko"' in card(model).text
