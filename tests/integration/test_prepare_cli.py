"""`pefty prepare` through the real CLI, on a small KsponSpeech layout with planted faults."""

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from pefty_whisper.cli import main
from pefty_whisper.data.manifest import read_manifest

RATE = 16_000


def write_pcm(path: Path, seconds: float = 1.0, odd: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(RATE * seconds)) / RATE
    samples = (8000 * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
    path.write_bytes(samples + (b"\x01" if odd else b""))


def train_path(part: int, folder: int, utt: int) -> str:
    return f"KsponSpeech_{part:02d}/KsponSpeech_{folder:04d}/KsponSpeech_{utt:06d}.pcm"


@pytest.fixture
def kspon_root(tmp_path: Path) -> Path:
    """Parts 1 and 2 with 10 good lines each, dev, eval sets, and six planted faults in part 1."""
    root = tmp_path / "KsponSpeech"
    lines: list[bytes] = []
    for part, folder in ((1, 1), (2, 125)):
        for i in range(10):
            rel = train_path(part, folder, part * 1000 + i)
            write_pcm(root / rel, seconds=1.0 + i / 10)
            lines.append(f"{rel} :: 그래서 (1시)/(한 시)에 어/ 가는 거야 {i}번 b/".encode())
    # Planted faults, at lines 21..26 of train.trn.
    missing = train_path(1, 1, 1900)
    zero = train_path(1, 1, 1901)
    (root / zero).write_bytes(b"")
    odd = train_path(1, 1, 1902)
    write_pcm(root / odd, odd=True)
    only_tags = train_path(1, 1, 1903)
    write_pcm(root / only_tags)
    lines += [
        f"{missing} :: 없는 파일이에요".encode(),
        f"{zero} :: 빈 파일이에요".encode(),
        f"{odd} :: 홀수 바이트 (A/S)/(에이 에스) 센터".encode(),
        f"{only_tags} :: b/ n/ l/".encode(),
        f"{train_path(1, 1, 1904)} 구분자가 없어요".encode(),
        f"{train_path(1, 1, 1905)} :: ".encode() + "잘못된 인코딩".encode("cp949"),
    ]
    scripts = root / "scripts"
    scripts.mkdir()
    (scripts / "train.trn").write_bytes(b"\n".join(lines) + b"\n")
    dev = train_path(5, 621, 620001)
    write_pcm(root / dev)
    (scripts / "dev.trn").write_text(f"{dev} :: 개발 세트 문장이에요\n", encoding="utf-8")
    for name, first in (("eval_clean", 1), ("eval_other", 3001)):
        rel = f"KsponSpeech_eval/{name}/KsponSpeech_E{first:05d}.pcm"
        write_pcm(root / rel)
        (scripts / f"{name}.trn").write_text(f"{rel} :: 평가 (KBS)/(케이 비 에스) 뉴스\n")
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_prepare_kspon_writes_round_manifests_and_reports_planted_faults(kspon_root, tmp_path):
    work = tmp_path / "work"
    result = run("prepare", "kspon", "--root", str(kspon_root), "--workdir", str(work))
    assert result.exit_code == 0, result.output
    data = work / "data"
    part1_train = read_rows(data / "train_KsponSpeech_01_train.csv")
    part1_test = read_rows(data / "train_KsponSpeech_01_test.csv")
    # 10 good lines + the odd-length pcm (kept, last byte dropped); 80/20 split.
    assert (len(part1_train), len(part1_test)) == (9, 2)
    assert len(read_rows(data / "train_KsponSpeech_02_train.csv")) == 8
    assert len(read_rows(data / "train_KsponSpeech_02_test.csv")) == 2
    assert [r["sentence"] for r in read_rows(data / "dev.csv")] == ["개발 세트 문장이에요"]
    assert [r["sentence"] for r in read_rows(data / "eval_clean.csv")] == ["평가 KBS 뉴스"]
    assert len(read_rows(data / "eval_other.csv")) == 1

    rows = {r["id"]: r for r in part1_train + part1_test}
    assert rows["KsponSpeech_001003"]["sentence"] == "그래서 1시에 어 가는 거야 3번"
    assert rows["KsponSpeech_001003"]["raw"] == "그래서 (1시)/(한 시)에 어/ 가는 거야 3번 b/"
    assert float(rows["KsponSpeech_001003"]["duration"]) == pytest.approx(1.3)
    assert rows["KsponSpeech_001902"]["sentence"] == "홀수 바이트 A/S 센터"
    # The pronunciation side survives beside the spelling side, for scoring under both.
    assert rows["KsponSpeech_001003"]["phonetic"] == "그래서 한 시에 어 가는 거야 3번"
    assert rows["KsponSpeech_001902"]["phonetic"] == "홀수 바이트 에이 에스 센터"
    assert [r["phonetic"] for r in read_rows(data / "eval_clean.csv")] == ["평가 케이 비 에스 뉴스"]
    # A set without a dual part has no phonetic column at all.
    assert "phonetic" not in read_rows(data / "dev.csv")[0]
    table = read_manifest(data / "eval_clean.csv").utterances
    assert (table[0].sentence, table[0].phonetic) == ("평가 KBS 뉴스", "평가 케이 비 에스 뉴스")
    assert Path(rows["KsponSpeech_001003"]["path"]).is_file()

    with (data / "prepare_rejects.tsv").open(encoding="utf-8") as handle:
        rejects = {int(r["line"]): r["reason"] for r in csv.DictReader(handle, delimiter="\t")}
    assert rejects == {
        21: "audio file not found",
        22: "empty pcm file (0 bytes)",
        24: "empty transcript after normalization",
        25: "no ' :: ' between path and text",
        26: "line is not UTF-8",
    }
    assert "skipped 5 lines" in result.output
    assert "1 pcm files had an odd byte count" in result.output


def test_prepare_kspon_is_idempotent(kspon_root, tmp_path):
    work = tmp_path / "work"
    run("prepare", "kspon", "--root", str(kspon_root), "--workdir", str(work))
    first = {p.name: p.read_bytes() for p in sorted((work / "data").iterdir())}
    run("prepare", "kspon", "--root", str(kspon_root), "--workdir", str(work))
    second = {p.name: p.read_bytes() for p in sorted((work / "data").iterdir())}
    assert first == second
    assert len(first) == 8  # 4 round files, dev, eval_clean, eval_other, rejects


def test_prepare_kspon_split_follows_config(kspon_root, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "pefty.yaml").write_text("data:\n  test_ratio: 0.5\n")
    assert run("prepare", "kspon", "--root", str(kspon_root), "--workdir", str(work)).exit_code == 0
    assert len(read_rows(work / "data" / "train_KsponSpeech_02_test.csv")) == 5


def test_prepare_kspon_reads_cp949_txt_without_trn(kspon_root, tmp_path):
    for trn in (kspon_root / "scripts").iterdir():
        for line in trn.read_bytes().splitlines():
            if b" :: " not in line:
                continue
            rel, text = line.split(b" :: ", 1)
            audio = kspon_root / rel.decode()
            if audio.exists() and text.decode("utf-8", errors="strict"):
                audio.with_suffix(".txt").write_bytes(text.decode().encode("cp949"))
    (kspon_root / "scripts" / "train.trn").unlink()
    for trn in (kspon_root / "scripts").iterdir():
        trn.unlink()
    work = tmp_path / "work"
    result = run("prepare", "kspon", "--root", str(kspon_root), "--workdir", str(work))
    assert result.exit_code == 0, result.output
    data = work / "data"
    assert [r["sentence"] for r in read_rows(data / "dev.csv")] == ["개발 세트 문장이에요"]
    assert [r["sentence"] for r in read_rows(data / "eval_clean.csv")] == ["평가 KBS 뉴스"]
    part2 = read_rows(data / "train_KsponSpeech_02_train.csv")
    assert part2 and all(r["sentence"].startswith("그래서 1시에") for r in part2)


def test_prepare_kspon_bad_root_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["prepare", "kspon", "--root", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "KsponSpeech root not found" in result.output
    assert "Traceback" not in result.output


def test_prepare_csv_with_aliases_relative_paths_and_split(tmp_path):
    corpus = tmp_path / "corpus"
    for i in range(5):
        write_pcm(corpus / "audio" / f"u{i}.pcm")
    soundfile.write(corpus / "audio" / "w.wav", np.zeros(8000, dtype=np.float32) + 0.1, 8000)
    (corpus / "list.csv").write_text(
        "audio,text\n"
        + "".join(f"audio/u{i}.pcm,안녕하세요  {i}\n" for i in range(5))
        + "audio/w.wav,웨이브 파일\n"
        + "audio/missing.wav,없음\n",
        encoding="utf-8",
    )
    work = tmp_path / "work"
    result = run(
        "prepare",
        "csv",
        str(corpus / "list.csv"),
        "--name",
        "mine",
        "--split",
        "--workdir",
        str(work),
    )
    assert result.exit_code == 0, result.output
    train = read_rows(work / "data" / "mine_train.csv")
    test = read_rows(work / "data" / "mine_test.csv")
    assert len(train) + len(test) == 6 and len(test) == 1
    wav = next(r for r in train + test if r["id"] == "w")
    assert float(wav["duration"]) == pytest.approx(1.0)
    assert "안녕하세요 0" in {r["sentence"] for r in train + test}
    assert "1 audio file not found" in result.output


def test_prepare_csv_missing_column_names_the_column(tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("file_name,words\nx.wav,hi\n")
    result = CliRunner().invoke(main, ["prepare", "csv", str(src), "--name", "x"])
    assert result.exit_code == 1
    assert "bad.csv: no audio path column" in result.output
    assert "found: file_name, words" in result.output


def test_prepare_folder_with_sibling_txt(tmp_path):
    src = tmp_path / "recordings"
    write_pcm(src / "a" / "one.pcm")
    (src / "a" / "one.txt").write_text("첫 번째 녹음", encoding="utf-8")
    write_pcm(src / "b" / "two.pcm")
    (src / "b" / "two.txt").write_bytes("두 번째 녹음".encode("cp949"))
    write_pcm(src / "b" / "three.pcm")  # no transcript
    work = tmp_path / "work"
    result = run("prepare", "folder", str(src), "--name", "rec", "--workdir", str(work))
    assert result.exit_code == 0, result.output
    rows = read_rows(work / "data" / "rec.csv")
    assert sorted(r["sentence"] for r in rows) == ["두 번째 녹음", "첫 번째 녹음"]
    assert "1 transcript .txt not found" in result.output
