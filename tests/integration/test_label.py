"""`pefty label` end to end on a tiny random Whisper and real espeak-ng speech: a long file
becomes timed rows, no-speech clips and planted bad labels are dropped with their reasons, a
killed run resumes without decoding again, two ranks give the one-process result, and a round
trains on the labels (its round.json naming the teacher) and evaluates exactly the spans.

A tiny random model writes nonsense, so the checks are on times, files, counts and equality
with the model's own decode of the same samples, never on words; the filter tests plant the
bad labels themselves.
"""

from __future__ import annotations

import csv
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from workspaces import cli_command, make_workspace, subprocess_env

from pefty_whisper.cli import main
from pefty_whisper.data.audio import load_audio
from pefty_whisper.data.manifest import read_manifest
from pefty_whisper.inference import Transcriber, TranscriberOptions
from pefty_whisper.workspace import LabelRecord, RoundRecord, Workspace

RATE = 16_000
SENTENCES = [
    "안녕하세요 오늘은 날씨가 좋습니다",
    "회의는 세 시에 시작합니다",
    "저는 커피를 좋아합니다",
]
# The structure under test, not the nonsense of a random model: its labels pass these.
LENIENT = [
    "-o", "label.min_avg_logprob=null", "-o", "label.max_compression_ratio=null",
    "-o", "label.max_segment_s=8", "-o", "decode.max_new_tokens=8", "-o", "decode.batch_size=4",
]  # fmt: skip

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


def invoke(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def speech() -> list[np.ndarray]:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    pytest.importorskip("faster_whisper", reason="the VAD ships with faster-whisper")
    from pefty_whisper.data.espeak import Voice, synthesize

    return [synthesize(text, Voice("ko", 150, 50)) for text in SENTENCES]


def write_sources(folder: Path, speech: list[np.ndarray]) -> list[tuple[float, float]]:
    """long.wav: the three sentences with 1.5 s pauses (over label.max_segment_s); short.wav:
    one sentence; quiet.wav: 5 s of low noise. Returns the planted sentence spans of long.wav."""
    folder.mkdir(parents=True, exist_ok=True)
    gap = np.zeros(int(1.5 * RATE), np.float32)
    pieces, spans, at = [gap], [], len(gap)
    for sentence in speech:
        spans.append((at / RATE, (at + len(sentence)) / RATE))
        pieces += [sentence, gap]
        at += len(sentence) + len(gap)
    soundfile.write(folder / "long.wav", np.concatenate(pieces), RATE, subtype="FLOAT")
    soundfile.write(folder / "short.wav", speech[1], RATE, subtype="FLOAT")
    quiet = (0.002 * np.random.default_rng(0).standard_normal(5 * RATE)).astype(np.float32)
    soundfile.write(folder / "quiet.wav", quiet, RATE, subtype="FLOAT")
    return spans


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, speech):
    """A workspace with round 1 trained and merged (the default teacher) and a folder of
    unlabelled audio labelled into `pl`."""
    root = tmp_path_factory.mktemp("label")
    base = save_tiny_whisper(root / "base", seed=3)
    work = make_workspace(root / "work")
    spans = write_sources(root / "unlabelled", speech)
    ws = ["--workdir", work]
    invoke("train", "--round", "1", "--base", base, *ws, "-o", "train.max_steps=1")
    invoke("merge", "--round", "1", *ws)
    result = invoke("label", root / "unlabelled", "--name", "pl", *ws, *LENIENT)
    return root, work, spans, result.output


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))


def test_a_long_file_becomes_timed_rows_labelled_by_the_latest_round(labelled):
    root, work, spans, output = labelled
    manifest = read_manifest(work / "data" / "pl.csv")
    rows = list(manifest.utterances)
    long_rows = [u for u in rows if Path(u.path).name == "long.wav"]
    assert len(long_rows) == 3  # one per sentence, cut at the pauses
    for row, (start, end) in zip(long_rows, spans, strict=True):
        assert row.start <= start + 0.05 and row.end >= end - 0.05  # the sentence inside
        assert row.end - row.start < (end - start) + 1.5  # and not the next one
        assert row.duration == pytest.approx(row.end - row.start, abs=1e-3)
    short = [u for u in rows if Path(u.path).name == "short.wav"]
    assert len(short) == 1 and short[0].span == (None, None)  # a short file stays whole
    assert "quiet.wav" not in {Path(u.path).name for u in rows}
    # The labels are the teacher's own decode of exactly those samples.
    merged = work / "merged" / "round1"
    options = TranscriberOptions(max_new_tokens=8, batch_size=4, device="cpu")
    texts = Transcriber(merged, options).transcribe_batch(
        [load_audio(u.path, *u.span) for u in rows]
    )
    assert [u.sentence for u in rows] == [t.strip() for t in texts]
    record = LabelRecord.read(work / "data" / "pl.label.json")
    assert record.teacher.model == str(merged) and record.teacher.round == 1
    assert record.teacher.weights_hash.startswith("sha256:")
    assert (record.kept, record.dropped) == (4, {"no_speech_vad": 1})
    assert "no_speech_vad" in output and "4 utterances" in output
    rejects = _rows(work / "data" / "pl.rejects.tsv")
    assert [(Path(r["path"]).name, r["reason"]) for r in rejects] == [
        ("quiet.wav", "no_speech_vad")
    ]
    assert not (work / "data" / ".pl.label").exists()  # the progress is gone once written


def test_a_second_label_of_the_name_is_refused_without_force(labelled):
    root, work, _, _ = labelled
    result = invoke("label", root / "unlabelled", "--name", "pl", "--workdir", work, ok=False)
    assert result.exit_code != 0 and "already exists: pass --force" in result.output


def test_one_split_of_a_saved_dataset_is_labelled(labelled, tmp_path):
    """A Hugging Face dataset without text, its audio held as bytes, with two splits: label
    refuses to guess the split and names --split; --split test labels that split alone."""
    datasets = pytest.importorskip("datasets")
    root, work, spans, _ = labelled
    speech = [load_audio(root / "unlabelled" / "long.wav", *span) for span in spans]
    wavs = []
    for i, clip in enumerate(speech):
        wavs.append(tmp_path / f"clip{i}.wav")
        soundfile.write(wavs[-1], clip, RATE, subtype="FLOAT")

    def split(paths: list[Path]):
        table = datasets.Dataset.from_dict({"audio": [str(p) for p in paths]})
        return table.cast_column("audio", datasets.Audio())

    saved = tmp_path / "unlabelled_ds"
    datasets.DatasetDict(
        {"train": split(wavs[1:2]), "test": split([wavs[0], wavs[2]])}
    ).save_to_disk(str(saved))
    for wav in wavs:
        wav.unlink()  # the dataset holds the bytes
    args = ["label", saved, "--name", "ds_pl", "--workdir", work, "--model",
            work / "merged" / "round1", *LENIENT]  # fmt: skip
    refused = invoke(*args, ok=False)
    assert refused.exit_code != 0
    assert "has splits train, test: pick one with --split" in refused.output
    invoke(*args, "--split", "test")
    rows = list(read_manifest(work / "data" / "ds_pl.csv").utterances)
    assert [round(u.duration, 2) for u in rows] == [round(len(speech[i]) / RATE, 2) for i in (0, 2)]
    assert all(Path(u.path).is_relative_to(work / "audio" / "ds_pl") for u in rows)
    record = LabelRecord.read(work / "data" / "ds_pl.label.json")
    assert record.source == f"{saved} [split test]" and record.inputs == 2
    # The pick belongs to a dataset: on a folder of audio it is an error, not ignored.
    folder = invoke("label", root / "unlabelled", "--name", "x", "--split", "test",
                    "--workdir", work, ok=False)  # fmt: skip
    assert "pick from a Hugging Face dataset" in folder.output
    assert not (work / "data" / "x.csv").exists()


def test_planted_bad_labels_are_dropped_with_their_reason(labelled, tmp_path):
    """A finished progress with planted labels (a repetition loop, a no-speech clip, a low
    confidence, a disagreement) is written through the real resume path: no decoding, the
    filters alone decide."""
    root, work, _, _ = labelled
    source = tmp_path / "clips"
    source.mkdir()
    names = ["good", "loop", "nospeech", "unsure", "disagree"]
    for name in names:
        shutil.copy(root / "unlabelled" / "short.wav", source / f"{name}.wav")
    progress_dir = work / "data" / ".planted.label"
    first = invoke("label", source, "--name", "planted", "--workdir", work, *LENIENT, "-o",
                   "label.second_pass=beam")  # fmt: skip
    assert "5 utterances" in first.output
    settings = json.loads((work / "data" / "planted.label.json").read_text())
    assert settings["second_pass"] == "beam"
    planted = {
        "good": dict(text="오늘 회의는 세 시에 시작합니다", avg_logprob=-0.2, no_speech_prob=0.01),
        "loop": dict(text="네 " * 60, avg_logprob=-0.1, no_speech_prob=0.01),
        "nospeech": dict(text="감사합니다", avg_logprob=-0.5, no_speech_prob=0.95),
        "unsure": dict(text="회의는 세 시에", avg_logprob=-2.5, no_speech_prob=0.01),
        "disagree": dict(text="완전히 다른 문장입니다", avg_logprob=-0.3, no_speech_prob=0.01),
    }
    # Relabel with --force: the unfinished progress is planted before the run resumes it.
    _plant(progress_dir, source, names, planted, work)
    result = invoke("label", source, "--name", "planted", "--workdir", work, "--force", "-o",
                    "label.max_segment_s=8", "-o", "label.second_pass=beam")  # fmt: skip
    record = LabelRecord.read(work / "data" / "planted.label.json")
    assert record.kept == 1 and record.dropped == {
        "repetition": 1, "no_speech": 1, "low_logprob": 1, "disagreement": 1,
    }  # fmt: skip
    assert [u.id for u in read_manifest(work / "data" / "planted.csv").utterances] == ["good"]
    reasons = {
        Path(r["path"]).stem: r["reason"] for r in _rows(work / "data" / "planted.rejects.tsv")
    }
    assert reasons == {"loop": "repetition", "nospeech": "no_speech", "unsure": "low_logprob",
                       "disagree": "disagreement"}  # fmt: skip
    assert "repetition" in result.output and "resumed: 5 inputs" in result.output


def _plant(progress_dir: Path, source: Path, names, planted, work: Path) -> None:
    """The progress file a finished (not yet written) labelling of `source` leaves."""
    from pefty_whisper.label.run import teacher_model

    config = Workspace.at(work).load_config(
        None, ["label.max_segment_s=8", "label.second_pass=beam"]
    )
    teacher = teacher_model(Workspace.at(work), config, None)
    progress_dir.mkdir(parents=True)
    settings = {
        "source": str(source), "inputs": len(names), "teacher": teacher.model,
        "teacher_hash": teacher.weights_hash, "second_pass": "beam", "second_pass_hash": None,
        "max_segment_s": 8.0, "min_segment_s": 1.0, "join_pause_s": 0.5,
        "language": config.model.language,
    }  # fmt: skip
    (progress_dir / "settings.json").write_text(json.dumps(settings), encoding="utf-8")
    second = "오늘 회의는 세 시에 시작합니다"
    lines = []
    for index, name in enumerate(sorted(names)):
        row = dict(input=index, segment=0, start=None, end=None, seconds=2.6, second=second,
                   reason="", **planted[name])  # fmt: skip
        if name == "disagree":
            row["second"] = "회의는 세 시에 시작합니다"
        if name in ("loop", "nospeech", "unsure"):
            row["second"] = row["text"]
        lines += [json.dumps(row, ensure_ascii=False), json.dumps({"input": index, "done": 1})]
    (progress_dir / "progress-0.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_killed_label_resumes_without_decoding_again(labelled, tmp_path):
    root, work, _, _ = labelled
    source = tmp_path / "many"
    source.mkdir()
    for i in range(40):
        shutil.copy(root / "unlabelled" / "short.wav", source / f"clip{i:02d}.wav")
    args = ["label", str(source), "--name", "many", "--workdir", str(work), "--model",
            str(work / "merged" / "round1"), *LENIENT, "-o", "decode.batch_size=1"]  # fmt: skip
    process = subprocess.Popen(
        cli_command(*args), env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    progress = work / "data" / ".many.label" / "progress-0.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if progress.is_file() and progress.read_text().count('"done"') >= 5:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = [json.loads(line) for line in progress.read_text().splitlines()]
    done_before = {line["input"] for line in before if "done" in line}
    decoded_before = {line["input"] for line in before if "done" not in line}
    assert 5 <= len(done_before) < 40, "the run was not killed midway"
    result = invoke(*args)
    assert f"resumed: {len(done_before)} inputs" in result.output
    assert f"{40 - len(decoded_before)} utterances decoded now" in result.output
    rows = read_manifest(work / "data" / "many.csv").utterances
    assert len(rows) == 40 and len({u.path for u in rows}) == 40
    assert len({u.sentence for u in rows}) == 1  # the same clip: the same label, run or resumed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_ranks_give_the_one_process_result(labelled):
    root, work, _, _ = labelled
    model = work / "merged" / "round1"
    common = [str(root / "unlabelled"), "--workdir", str(work), "--model", str(model), *LENIENT]
    invoke("label", *common[:1], "--name", "one", *common[1:])
    env = dict(subprocess_env(), OMP_NUM_THREADS="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                "--master-addr", "127.0.0.1", "--master-port", str(_free_port())]  # fmt: skip
    command = [*launcher, "-m", "pefty_whisper.cli", "label", common[0], "--name", "two",
               *common[1:]]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    one, two = (work / "data" / f"{n}.csv" for n in ("one", "two"))
    assert two.read_text() == one.read_text()
    assert (work / "data" / "two.rejects.tsv").read_text() == (
        work / "data" / "one.rejects.tsv"
    ).read_text()
    record = LabelRecord.read(work / "data" / "two.label.json")
    assert record.world_size == 2 and record.kept == 4


def test_a_round_trains_on_the_labels_and_evaluates_exactly_the_spans(labelled):
    root, work, spans, _ = labelled
    ws = ["--workdir", work]
    invoke("train", "--round", "2", *ws, "--train", "train_KsponSpeech_01_train", "--train",
           "pl:0.5", "--valid", "train_KsponSpeech_01_test", "-o", "train.max_steps=1")  # fmt: skip
    record = RoundRecord.read(work / "adapters" / "round2")
    mixed = {d.name: d for d in record.data.mixed}
    assert mixed["pl"].teacher.model == str(work / "merged" / "round1")
    assert mixed["pl"].label_filters["max_segment_s"] == 8.0
    assert record.data.train.teacher is None  # a set with its own transcripts
    table = invoke("rounds", *ws).output
    assert "pseudo-labels: pl by merged/round1" in table
    invoke("evaluate", "--set", "pl", "--model", "merged/round1", *ws)
    with (work / "eval" / "round1" / "pl.tsv").open(encoding="utf-8") as handle:
        evaluated = list(csv.DictReader(handle, delimiter="\t"))
    expected = [u.duration for u in read_manifest(work / "data" / "pl.csv").utterances]
    assert [float(r["duration"]) for r in evaluated] == pytest.approx(expected, abs=2e-3)


def test_a_round_with_a_ct2_export_labels_through_it_with_the_same_confidences(labelled):
    """The default teacher is the latest round's CTranslate2 export where one exists; its
    confidences are the PyTorch model's (float32)."""
    root, work, _, _ = labelled
    invoke("export", "--model", "merged/round1", "--format", "ct2", "--quantization", "float32",
           "--workdir", work)  # fmt: skip
    invoke("label", root / "unlabelled", "--name", "pl_ct2", "--workdir", work, *LENIENT)
    record = LabelRecord.read(work / "data" / "pl_ct2.label.json")
    assert record.teacher.backend == "ct2" and record.teacher.round == 1
    export = Path(record.teacher.model)
    torch_rows = read_manifest(work / "data" / "pl.csv").utterances
    ct2_rows = read_manifest(work / "data" / "pl_ct2.csv").utterances
    assert [u.span for u in ct2_rows] == [u.span for u in torch_rows]
    audios = [load_audio(u.path, *u.span) for u in torch_rows]
    options = TranscriberOptions(max_new_tokens=8, batch_size=4, device="cpu")
    torch_scores = Transcriber(work / "merged" / "round1", options).transcribe_scored(audios)
    ct2_scores = Transcriber(export, options).transcribe_scored(audios)
    for ours, theirs in zip(torch_scores, ct2_scores, strict=True):
        assert ours.tokens == theirs.tokens
        assert ours.avg_logprob == pytest.approx(theirs.avg_logprob, abs=1e-2)
        assert ours.no_speech_prob == pytest.approx(theirs.no_speech_prob, abs=1e-4)
