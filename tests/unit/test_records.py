"""round.json records: one read/write pair each, the same JSON keys as before, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pefty_whisper.config import ModelSection, config_to_dict, load_config
from pefty_whisper.errors import PeftyError
from pefty_whisper.workspace import (
    ROUND_FILE,
    DataRecord,
    EvalLabel,
    MergeCheck,
    MergeRecord,
    RoundData,
    RoundRecord,
    ValidationRecord,
    Workspace,
)

# round.json as train.py wrote it before the records were typed (a dict, key by key).
OLD_ADAPTER_JSON = {
    "round": 2,
    "kind": "adapter",
    "base": "merged/round1",
    "base_dir": "/work/ws/merged/round1",
    "base_hash": "sha256:" + "ab" * 32,
    "data": {
        "train": {
            "path": "/work/ws/data/train_KsponSpeech_02_train.csv",
            "rows": 6,
            "rejected_rows": 2,
            "kept": 4,
            "dropped_audio_over_max_duration": 0,
            "dropped_labels_over_max_tokens": 0,
            "dropped_unreadable_audio": 0,
        },
        "validation": {
            "path": "/work/ws/data/train_KsponSpeech_02_test.csv",
            "rows": 4,
            "rejected_rows": 0,
            "kept": 4,
            "dropped_audio_over_max_duration": 0,
            "dropped_labels_over_max_tokens": 0,
            "dropped_unreadable_audio": 0,
        },
    },
    "quant": "8bit",
    "deepspeed": "zero2",
    "world_size": 1,
    "steps": 8,
    "resumed_from": None,
    "train_loss": 9.5,
    "best_validation": {
        "step": 8,
        "cer": 75.0,
        "cer_with_spaces": 80.0,
        "wer": 100.0,
        "loss": 9.1,
    },
    "trainable_parameters": 98304,
    "started": "2025-01-01T00:00:00+00:00",
    "finished": "2025-01-01T00:01:00+00:00",
    "seconds": 60.2,
    "versions": {"torch": "2.13.0", "peft": "0.21.0"},
    "config": {"model": {"base": "openai/whisper-small", "language": "ko", "task": "transcribe"}},
}

# merged/roundN/round.json as merge.py wrote it: the adapter's data, steps and validation copied.
OLD_MERGED_JSON = {
    "round": 2,
    "kind": "merged",
    "adapter_dir": "/work/ws/adapters/round2",
    "base": "merged/round1",
    "base_dir": "/work/ws/merged/round1",
    "base_hash": "sha256:" + "ab" * 32,
    "weights_hash": "sha256:" + "cd" * 32,
    "dtype": "float32",
    "merge_check": {"max_abs_logit_diff": 2.5e-06, "tolerance": 0.001},
    "data": OLD_ADAPTER_JSON["data"],
    "steps": 8,
    "best_validation": OLD_ADAPTER_JSON["best_validation"],
    "merged": "2025-01-01T00:02:00+00:00",
    "versions": {"torch": "2.13.0"},
}


def write_json(directory: Path, record: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ROUND_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    return directory


def data_record(name: str, kept: int) -> DataRecord:
    return DataRecord(path=Path(f"/ws/data/{name}.csv"), rows=kept + 1, rejected_rows=1, kept=kept)


def adapter_record() -> RoundRecord:
    return RoundRecord(
        round=1,
        base="openai/whisper-small",
        base_dir=Path("/cache/whisper-small"),
        base_hash="sha256:" + "0" * 64,
        data=RoundData(
            train=data_record("train_KsponSpeech_01_train", 10),
            validation=data_record("train_KsponSpeech_01_test", 3),
        ),
        quant="8bit",
        deepspeed="zero2",
        world_size=2,
        steps=20,
        resumed_from="checkpoint-10",
        train_loss=1.25,
        best_validation=ValidationRecord(step=20, cer=12.5, cer_with_spaces=14.0, wer=30.0),
        trainable_parameters=1234,
        started="2025-01-01T00:00:00+00:00",
        finished="2025-01-01T00:10:00+00:00",
        seconds=600.0,
        versions={"torch": "2.13.0"},
        config=config_to_dict(load_config(None, ["model.language=ja"])),
    )


def test_round_record_round_trip(tmp_path):
    record = adapter_record()
    record.write(tmp_path)
    assert RoundRecord.read(tmp_path) == record
    on_disk = json.loads((tmp_path / ROUND_FILE).read_text())
    assert list(on_disk)[:3] == ["round", "kind", "base"] and on_disk["kind"] == "adapter"
    assert on_disk["base_dir"] == "/cache/whisper-small"
    assert on_disk["data"]["train"]["path"] == "/ws/data/train_KsponSpeech_01_train.csv"
    assert set(on_disk) == set(OLD_ADAPTER_JSON)  # the same keys as before the records
    assert set(on_disk["data"]["train"]) == set(OLD_ADAPTER_JSON["data"]["train"])
    assert set(on_disk["best_validation"]) == set(OLD_ADAPTER_JSON["best_validation"])


def test_merge_record_round_trip(tmp_path):
    adapter = adapter_record()
    record = MergeRecord(
        round=1,
        adapter_dir=tmp_path / "adapters" / "round1",
        base=adapter.base,
        base_dir=adapter.base_dir,
        base_hash=adapter.base_hash,
        weights_hash="sha256:" + "1" * 64,
        dtype="float16",
        merge_check=MergeCheck(max_abs_logit_diff=1e-6, tolerance=1e-3),
        data=adapter.data,
        steps=adapter.steps,
        best_validation=adapter.best_validation,
        merged="2025-01-01T00:11:00+00:00",
        versions={"torch": "2.13.0"},
    )
    record.write(tmp_path)
    assert MergeRecord.read(tmp_path) == record
    on_disk = json.loads((tmp_path / ROUND_FILE).read_text())
    assert on_disk["kind"] == "merged" and set(on_disk) == set(OLD_MERGED_JSON)


def test_records_written_before_the_dataclasses_read_back(tmp_path):
    adapter = RoundRecord.read(write_json(tmp_path / "adapters" / "round2", OLD_ADAPTER_JSON))
    assert adapter is not None
    assert adapter.round == 2 and adapter.base == "merged/round1"
    assert adapter.base_dir == Path("/work/ws/merged/round1")
    assert adapter.data.train.kept == 4 and adapter.data.train.rejected_rows == 2
    assert adapter.data.train.name == "train_KsponSpeech_02_train"
    assert adapter.best_validation == ValidationRecord(8, 75.0, 80.0, 100.0, 9.1)
    assert adapter.resumed_from is None and adapter.versions["peft"] == "0.21.0"
    assert adapter.model_section(ModelSection(language="en")).language == "ko"

    merged = MergeRecord.read(write_json(tmp_path / "merged" / "round2", OLD_MERGED_JSON))
    assert merged is not None
    assert merged.merge_check.max_abs_logit_diff == pytest.approx(2.5e-6)
    assert merged.data == adapter.data and merged.best_validation == adapter.best_validation

    # Written again, the old JSON comes back key for key.
    adapter.write(tmp_path / "again")
    assert json.loads((tmp_path / "again" / ROUND_FILE).read_text()) == OLD_ADAPTER_JSON
    merged.write(tmp_path / "again_merged")
    assert json.loads((tmp_path / "again_merged" / ROUND_FILE).read_text()) == OLD_MERGED_JSON

    workspace = Workspace.at(tmp_path)
    assert workspace.round_record(2) == adapter and workspace.merge_record(2) == merged
    assert workspace.round_finished(2) and workspace.merge_finished(2)
    assert workspace.round_record(3) is None and not workspace.merge_finished(3)


def test_a_merged_record_without_data_reads(tmp_path):
    old = {**OLD_MERGED_JSON, "data": None, "steps": None, "best_validation": None}
    merged = MergeRecord.read(write_json(tmp_path, old))
    assert merged is not None and merged.data is None and merged.best_validation is None


def test_no_record_is_none(tmp_path):
    assert RoundRecord.read(tmp_path) is None
    assert MergeRecord.read(tmp_path / "missing") is None


def test_bad_records_name_the_file(tmp_path):
    (tmp_path / ROUND_FILE).write_text("{not json")
    with pytest.raises(PeftyError, match=r"round\.json: not valid JSON"):
        RoundRecord.read(tmp_path)

    broken = {k: v for k, v in OLD_ADAPTER_JSON.items() if k not in ("base_hash", "steps")}
    broken["best_validation"] = {"step": 1}  # the rest of it is optional
    broken["data"] = {"train": OLD_ADAPTER_JSON["data"]["train"], "validation": {"rows": 1}}
    write_json(tmp_path / "broken", broken)
    with pytest.raises(PeftyError) as error:
        RoundRecord.read(tmp_path / "broken")
    message = str(error.value)
    assert str(tmp_path / "broken" / ROUND_FILE) in message
    assert "'base_hash'" in message and "'steps'" in message

    write_json(tmp_path / "nested", {**OLD_ADAPTER_JSON, "data": {"train": {}, "validation": {}}})
    with pytest.raises(PeftyError, match=r"missing 'data.train.path'"):
        RoundRecord.read(tmp_path / "nested")


def test_an_adapter_record_is_not_a_merge_record(tmp_path):
    write_json(tmp_path, OLD_ADAPTER_JSON)
    with pytest.raises(PeftyError, match="kind 'adapter' where 'merged' was expected"):
        MergeRecord.read(tmp_path)


def test_the_workspace_names_every_round_eval_and_manifest_path(tmp_path):
    from pefty_whisper.data.manifest import round_manifest_name

    workspace = Workspace.at(tmp_path)
    assert workspace.round_manifest(3, "test") == tmp_path / "data/train_KsponSpeech_03_test.csv"
    assert round_manifest_name(3, "train") == "train_KsponSpeech_03_train"
    assert workspace.merged_ref(2) == "merged/round2"
    assert (
        workspace.eval_json(EvalLabel("round2", "eval_clean"))
        == tmp_path / "eval/round2/eval_clean.json"
    )
    assert workspace.eval_tsv(EvalLabel("round0", "dev")) == tmp_path / "eval/round0/dev.tsv"
    assert workspace.adapter_label(2) == "round2-adapter"
    assert EvalLabel("round2", "eval_clean", backend="ct2").folder == "round2-ct2"
    assert workspace.model_label(Path("/m/whisper small!")) == "whisper-small-"
    assert [workspace.label_round(x) for x in ("round0", "round12", "round2-ct2", "7")] == [
        0,
        12,
        None,
        None,
    ]
    # Folders count as rounds; only a round.json makes one finished.
    (tmp_path / "adapters" / "round1").mkdir(parents=True)
    write_json(tmp_path / "adapters" / "round2", OLD_ADAPTER_JSON)
    (tmp_path / "merged" / "round3").mkdir(parents=True)
    (tmp_path / "merged" / "roundx").mkdir()
    assert workspace.round_indices() == [1, 2, 3]
    assert workspace.finished_rounds("adapters") == [2]
    assert workspace.latest_adapter_round() == 2 and workspace.latest_merged_round() is None
    assert not workspace.round_finished(1) and workspace.round_finished(2)
