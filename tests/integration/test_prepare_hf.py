"""`pefty prepare hf`: Hugging Face datasets (save_to_disk, audio folders) -> manifests."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from pefty_whisper.cli import main
from pefty_whisper.data.audio import load_audio

datasets = pytest.importorskip("datasets")

TEXTS = ["안녕하세요 반갑습니다", "오늘 날씨가 좋네요", "", "세 시에 만나요"]


def _tone(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))).astype(
        np.float32
    )


def _write_wavs(folder: Path, rate: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(len(TEXTS)):
        path = folder / f"clip{i}.wav"
        soundfile.write(path, _tone(0.5 + 0.25 * i, rate, i), rate)
        paths.append(path)
    return paths


def _manifest_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_saved_dataset_with_an_audio_column_becomes_a_manifest(tmp_path: Path) -> None:
    # The way a user holds FLEURS or Common Voice: a dataset saved with save_to_disk, whose
    # Audio column stores the file bytes inside the Arrow shards (44.1 kHz here).
    wavs = _write_wavs(tmp_path / "src", rate=44_100)
    dataset = datasets.Dataset.from_dict(
        {"audio": [str(p) for p in wavs], "transcription": TEXTS}
    ).cast_column("audio", datasets.Audio())
    dataset.save_to_disk(str(tmp_path / "saved"))
    for wav in wavs:
        wav.unlink()  # the saved dataset must be enough on its own

    workspace = tmp_path / "ws"
    result = CliRunner().invoke(
        main,
        ["prepare", "hf", str(tmp_path / "saved"), "--name", "fleurs", "--workdir", str(workspace)],
    )
    assert result.exit_code == 0, result.output
    rows = _manifest_rows(workspace / "data" / "fleurs.csv")
    assert [r["sentence"] for r in rows] == [t for t in TEXTS if t]
    # Bytes were written under the workspace and decode to the original length at 16 kHz.
    for row, seconds in zip(rows, (0.5, 0.75, 1.25), strict=True):
        assert Path(row["path"]).is_relative_to(workspace / "audio" / "fleurs")
        assert abs(len(load_audio(row["path"])) / 16_000 - seconds) < 0.01
        assert abs(float(row["duration"]) - seconds) < 0.01
    # The empty transcript is rejected with its row number, as for every other source.
    assert "skipped 1 lines: 1 empty transcript" in result.output
    rejects = (workspace / "data" / "prepare_rejects.tsv").read_text(encoding="utf-8")
    assert "\t3\t" in rejects


def test_audio_folder_with_metadata_and_a_split(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    _write_wavs(folder, rate=16_000)
    lines = ["file_name,sentence"] + [f"clip{i}.wav,{t}" for i, t in enumerate(TEXTS) if t]
    lines.append("missing.wav,없는 파일")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    workspace = tmp_path / "ws"
    result = CliRunner().invoke(
        main,
        ["prepare", "hf", str(folder), "--name", "mine", "--holdout", "--workdir", str(workspace)],
    )
    assert result.exit_code == 0, result.output
    train = _manifest_rows(workspace / "data" / "mine_train.csv")
    test = _manifest_rows(workspace / "data" / "mine_test.csv")
    assert len(train) + len(test) == 3 and test
    # Files that exist are referenced where they lie, not copied.
    assert all(Path(r["path"]).parent == folder for r in train + test)
    assert "audio file not found" in result.output


def test_a_dataset_with_several_splits_needs_split(tmp_path: Path) -> None:
    wavs = _write_wavs(tmp_path / "src", rate=16_000)
    part = datasets.Dataset.from_dict({"audio": [str(wavs[0])], "text": ["하나"]}).cast_column(
        "audio", datasets.Audio()
    )
    datasets.DatasetDict({"train": part, "test": part}).save_to_disk(str(tmp_path / "dd"))
    args = ["prepare", "hf", str(tmp_path / "dd"), "--name", "x", "--workdir", str(tmp_path / "w")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert "has splits train, test: pick one with --split" in result.output
    ok = CliRunner().invoke(main, [*args, "--split", "test"])
    assert ok.exit_code == 0, ok.output
    assert [r["sentence"] for r in _manifest_rows(tmp_path / "w" / "data" / "x.csv")] == ["하나"]
