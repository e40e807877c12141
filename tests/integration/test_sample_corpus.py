"""The synthetic sample corpus: KsponSpeech layout, real audio, deterministic, held-out eval."""

from __future__ import annotations

import importlib.util
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pefty_whisper.data import espeak
from pefty_whisper.demo import sentences, slots
from pefty_whisper.demo.corpus import generate_sample_corpus
from pefty_whisper.demo.sentences import (
    FILLERS,
    NOISE_TAGS,
    SampleCorpusSpec,
    sentence_pools,
    spelling_text,
)
from pefty_whisper.errors import DataError

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng): it speaks the sample corpus",
)

SMALL = SampleCorpusSpec(utterances_per_part=6, eval_clean=4, eval_other=4, dev=3, per_folder=4)
SCRIPTS = ("train.trn", "dev.trn", "eval_clean.trn", "eval_other.trn")
TRAIN_PATH = re.compile(r"KsponSpeech_0([1-5])/KsponSpeech_(\d{4})/KsponSpeech_(\d{6})\.pcm")
EVAL_PATH = re.compile(r"KsponSpeech_eval/(eval_clean|eval_other)/KsponSpeech_E(\d{5})\.pcm")
DUAL = re.compile(r"\([^()]*\)/\([^()]*\)")


def read_trn(path: Path) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        audio, transcript = line.split(" :: ", 1)
        rows.append((audio, transcript))
    return rows


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    out = tmp_path_factory.mktemp("sample") / "kspon"
    done: list[int] = []
    summary = generate_sample_corpus(out, SMALL, progress=done.append)
    assert sum(done) == SMALL.total_utterances == summary.num_utterances == 41
    assert summary.train_per_part == (6,) * 5 and summary.dev == 3
    assert summary.audio_seconds > 41 * 0.5
    assert not out.with_name("kspon.partial").exists()
    return out


@needs_espeak
def test_layout_mirrors_kspon(corpus: Path) -> None:
    assert sorted(p.name for p in corpus.iterdir()) == [
        *(f"KsponSpeech_0{n}" for n in range(1, 6)),
        "KsponSpeech_eval",
        "scripts",
    ]
    assert sorted(p.name for p in (corpus / "scripts").iterdir()) == sorted(SCRIPTS)
    train = [TRAIN_PATH.fullmatch(audio) for audio, _ in read_trn(corpus / "scripts/train.trn")]
    dev = [TRAIN_PATH.fullmatch(audio) for audio, _ in read_trn(corpus / "scripts/dev.trn")]
    assert all(train) and all(dev) and len(train) == 30 and len(dev) == 3
    # Utterance ids run on across parts and into dev, as in the real corpus.
    assert [int(m.group(3)) for m in train + dev] == list(range(1, 34))
    # Each part starts a new folder; folders hold at most per_folder utterances.
    folders_by_part: dict[str, set[str]] = {}
    for m in train:
        folders_by_part.setdefault(m.group(1), set()).add(m.group(2))
    assert [len(f) for f in folders_by_part.values()] == [2] * 5
    assert len(set.union(*folders_by_part.values())) == 10
    # Dev is the last folder of part 05 and holds dev only.
    assert {m.group(1) for m in dev} == {"5"} and {m.group(2) for m in dev} == {"0011"}
    clean = [EVAL_PATH.fullmatch(a) for a, _ in read_trn(corpus / "scripts/eval_clean.trn")]
    other = [EVAL_PATH.fullmatch(a) for a, _ in read_trn(corpus / "scripts/eval_other.trn")]
    assert [m.group(1) for m in clean] == ["eval_clean"] * 4
    assert [m.group(1) for m in other] == ["eval_other"] * 4
    # eval_other ids continue after eval_clean.
    assert [int(m.group(2)) for m in clean + other] == list(range(1, 9))


@needs_espeak
def test_audio_and_txt_match_scripts(corpus: Path) -> None:
    for script in SCRIPTS:
        for audio, transcript in read_trn(corpus / "scripts" / script):
            pcm = corpus / audio
            assert pcm.is_file(), pcm
            data = pcm.read_bytes()
            assert len(data) > 0 and len(data) % 2 == 0
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
            assert 0.5 <= samples.size / 16_000 <= 15.0, (audio, samples.size)
            assert np.sqrt(np.mean(samples**2)) > 0.01, f"{audio} is (nearly) silent"
            assert pcm.with_suffix(".txt").read_bytes().decode("cp949").strip() == transcript


@needs_espeak
def test_transcripts_use_etri_notation(corpus: Path) -> None:
    transcripts = [t for s in SCRIPTS for _, t in read_trn(corpus / "scripts" / s)]
    tokens = [token for t in transcripts for token in t.split()]
    assert any(DUAL.search(t) for t in transcripts)
    assert any(token[:-1] in FILLERS and token.endswith("/") for token in tokens)
    assert any(token in NOISE_TAGS for token in tokens)
    assert not any(re.search(r"[0-9A-Za-z]", sentences.spoken_text(t)) for t in transcripts)


@needs_espeak
def test_same_seed_same_bytes(corpus: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_sample_corpus(again, SMALL)
    for script in SCRIPTS:
        script_path = Path("scripts") / script
        assert (again / script_path).read_bytes() == (corpus / script_path).read_bytes()
    some_files = read_trn(corpus / "scripts/train.trn")[:3]
    some_files += read_trn(corpus / "scripts/eval_other.trn")[:2]
    for audio, _ in some_files:
        assert (again / audio).read_bytes() == (corpus / audio).read_bytes(), audio


@needs_espeak
def test_refuses_to_clobber_without_overwrite(corpus: Path, tmp_path: Path) -> None:
    target = tmp_path / "kspon"
    generate_sample_corpus(target, SMALL)
    with pytest.raises(DataError, match="overwrite"):
        generate_sample_corpus(target, SMALL)
    summary = generate_sample_corpus(target, SMALL, overwrite=True)
    assert summary.scripts[0] == target / "scripts" / "train.trn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kspon"]  # no .partial or .old left

    not_a_corpus = tmp_path / "home"
    not_a_corpus.mkdir()
    (not_a_corpus / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="does not look like a sample corpus"):
        generate_sample_corpus(not_a_corpus, SMALL, overwrite=True)
    assert (not_a_corpus / "notes.txt").read_text() == "keep me"


@needs_espeak
def test_cli_prints_summary(tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "make_sample_corpus.py"
    spec = importlib.util.spec_from_file_location("make_sample_corpus", script)
    assert spec is not None and spec.loader is not None
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    args = ["--out", str(tmp_path / "c"), "--per-part", "2", "--eval", "1", "--dev", "1"]
    result = CliRunner().invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    assert "13 utterances" in result.output and "min" in result.output
    again = CliRunner().invoke(cli.main, args)
    assert again.exit_code != 0 and "--overwrite" in again.output


def test_missing_espeak_names_the_fix(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(espeak.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install espeak-ng"):
        generate_sample_corpus(tmp_path / "c", SMALL)


def test_eval_sentences_are_held_out() -> None:
    pools = sentence_pools(SampleCorpusSpec())
    seen_lines = [line for part in pools.train_parts for line in part] + list(pools.dev)
    seen_text = {line.text for line in seen_lines}
    seen_core = {line.core for line in seen_lines}
    held_out = pools.eval_clean + pools.eval_other
    assert len(held_out) == 80
    assert not {line.text for line in held_out} & seen_text
    assert not {line.core for line in held_out} & seen_core
    assert not {line.core for line in pools.eval_clean} & {line.core for line in pools.eval_other}
    # Every round trains on new sentences: parts share no sentence.
    part_cores = [{line.core for line in part} for part in pools.train_parts]
    assert sum(len(c) for c in part_cores) == len(set.union(*part_cores)) == 400
    # ...but the same vocabulary: nearly every eval word also occurs in train.
    train_words = {word for line in seen_lines for word in line.text.split()}
    eval_words = [word for line in held_out for word in line.text.split()]
    assert sum(word in train_words for word in eval_words) / len(eval_words) > 0.85
    # The stored text is the spelling side of the raw transcript.
    assert all(spelling_text(line.raw) == line.text for line in pools.all_lines())


def test_pools_are_reproducible_and_eval_is_stable_across_train_sizes() -> None:
    assert sentence_pools(SMALL) == sentence_pools(SMALL)
    bigger = SampleCorpusSpec(utterances_per_part=30, eval_clean=4, eval_other=4, dev=3)
    assert sentence_pools(bigger).eval_clean == sentence_pools(SMALL).eval_clean
    assert sentence_pools(SampleCorpusSpec(seed=1)) != sentence_pools(SampleCorpusSpec(seed=0))


def test_numbers_read_in_korean() -> None:
    assert slots.sino_korean(2019) == "이천십구"
    assert slots.sino_korean(15000) == "만 오천"
    assert slots.sino_korean(1995) == "천구백구십오"
    assert slots.native_korean(3) == "세"
    assert slots.native_korean(20) == "스무"
    assert slots.native_korean(25) == "스물다섯"
