"""Data at scale: manifests as columns through a loader with workers, rounds that mix sets by
share (recorded and drawn from), log-mel on the training device, and an evaluation on a set
prepared from a Hugging Face dataset as its own column of `pefty rounds`."""

from __future__ import annotations

import gc
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from click.testing import CliRunner
from fixtures import save_tiny_whisper, whisper_processor
from workspaces import SENTENCES, make_workspace, write_audio, write_manifest

from pefty_whisper.cli import main
from pefty_whisper.config import load_config
from pefty_whisper.data.features import (
    SpeechCollator,
    SpeechDataset,
    batch_features,
    default_num_workers,
    features_on_device,
    log_mel_torch,
    padded_waveforms,
)
from pefty_whisper.data.manifest import read_manifest
from pefty_whisper.data.mixing import (
    MixEntry,
    TrainSet,
    mix_datasets,
    plan_draws,
    resolve_shares,
)
from pefty_whisper.data.table import Utterance, UtteranceTable
from pefty_whisper.errors import ConfigError
from pefty_whisper.train import default_round_plan
from pefty_whisper.workspace import RoundRecord, Workspace

datasets = pytest.importorskip("datasets")

GENERAL = [
    "일반 데이터 하나",
    "일반 데이터 둘",
    "일반 데이터 셋",
    "일반 데이터 넷",
    "일반 데이터 다섯",
]


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _reachable(root: object) -> int:
    """Python objects reachable from `root`: what a forked worker's reads and GC would touch."""
    seen, stack = set(), [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        stack.extend(gc.get_referents(obj))
    return len(seen)


def _manifest(tmp_path: Path, rows: int) -> Path:
    audio = [tmp_path / "audio" / f"u{i}.pcm" for i in range(4)]
    for i, path in enumerate(audio):
        write_audio(path, i, seconds=0.2)
    csv_rows = [(str(audio[i % 4]), f"{SENTENCES[i % 4]} {i}") for i in range(rows)]
    path = tmp_path / "data" / f"set{rows}.csv"
    write_manifest(path, csv_rows)
    return path


def test_manifest_is_columns_that_loader_workers_read_without_copies(tmp_path):
    processor = whisper_processor()
    small = read_manifest(_manifest(tmp_path, 300)).utterances
    large = read_manifest(_manifest(tmp_path, 1200)).utterances
    assert isinstance(large, UtteranceTable) and len(large) == 1200
    # No Python object per row: four times the rows, the same few objects (numpy buffers).
    assert _reachable(large) == _reachable(small) < 40
    assert large[5] == Utterance(
        str(tmp_path / "audio" / "u1.pcm"), f"{SENTENCES[1]} 5", None, "u1", ""
    )
    assert [u.sentence for u in large[-2:]] == [f"{SENTENCES[2]} 1198", f"{SENTENCES[3]} 1199"]

    dataset = SpeechDataset(large, processor)
    collator = SpeechCollator(
        processor.feature_extractor, processor.tokenizer.pad_token_id, "auto", 2.0
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=100, num_workers=2, persistent_workers=True, collate_fn=collator
    )
    pad = processor.tokenizer.pad_token_id
    for _ in range(2):  # two epochs through the same persistent workers
        seen = []
        for batch in loader:
            assert batch["input_features"].shape[1:] == (80, 200)  # 0.2 s padded to 2 s
            for row in batch["decoder_input_ids"]:
                ids = [t for t in row.tolist() if t != pad]
                seen.append(processor.tokenizer.decode(ids, skip_special_tokens=True))
        assert seen == [u.sentence for u in large]


def test_log_mel_on_the_device_equals_the_workers_features():
    processor = whisper_processor()
    fe = processor.feature_extractor
    rng = np.random.default_rng(0)
    audios = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (16_000, 40_000, 3_000)]
    for context in ("full", "auto"):
        expected = batch_features(fe, audios, context, 2.0)
        waveforms = padded_waveforms(fe, audios, context, 2.0)
        assert np.allclose(log_mel_torch(fe, waveforms).numpy(), expected, atol=1e-5)
    pad = processor.tokenizer.pad_token_id
    items = [{"audio": a, "labels": [1, 2, 3]} for a in audios]
    on_device = SpeechCollator(fe, pad, "auto", 2.0, waveforms=True)(items)
    assert "input_features" not in on_device
    batch = features_on_device(on_device, fe, torch.device("cpu"))
    reference = SpeechCollator(fe, pad, "auto", 2.0)(items)
    assert torch.allclose(batch["input_features"], reference["input_features"], atol=1e-5)
    assert torch.equal(batch["labels"], reference["labels"])


def test_shares_parse_resolve_and_draw():
    assert MixEntry.parse("cv_ko_train:0.1") == MixEntry("cv_ko_train", 0.1)
    assert MixEntry.parse("data/x.csv") == MixEntry("data/x.csv", None)
    with pytest.raises(ConfigError, match="share must be in"):
        MixEntry.parse("cv:1.5")
    assert resolve_shares([None, 0.2], [100, 7]) == pytest.approx([0.8, 0.2])
    assert resolve_shares([None, None, 0.5], [30, 10, 5]) == pytest.approx([0.375, 0.125, 0.5])
    with pytest.raises(ConfigError, match="add up to 0.9"):
        resolve_shares([0.6, 0.3], [10, 10])
    with pytest.raises(ConfigError, match="leaving nothing"):
        resolve_shares([None, 1.0], [10, 10])
    # The round's own set whole; a small set at a big share repeats, a big one is sampled.
    own, small, big = plan_draws([90, 4, 1000], [0.9, 0.05, 0.05], seed=3)
    assert own.tolist() == list(range(90))
    assert len(small) == 5 and set(small.tolist()) == {0, 1, 2, 3}  # once each, one twice
    assert len(big) == 5 and len(set(big.tolist())) == 5  # five distinct rows of 1000
    again = plan_draws([90, 4, 1000], [0.9, 0.05, 0.05], seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(again, (own, small, big), strict=True))
    assert default_num_workers(cpus=16, processes_per_node=1) == 8
    assert default_num_workers(cpus=16, processes_per_node=4) == 3
    assert default_num_workers(cpus=2, processes_per_node=1) == 1
    assert load_config(None, ["data.mix=cv:0.1,fleurs:0.05"]).data.mix == ("cv:0.1", "fleurs:0.05")


def test_round_plan_takes_several_train_sets_and_the_config_mix(tmp_path):
    workspace = Workspace.at(tmp_path)
    config = load_config(None, ["data.mix=cv_ko_train:0.1"])
    plan = default_round_plan(
        workspace, config, 2, train_csv=("train_KsponSpeech_02_train", "fleurs:0.2")
    )
    assert [(s.path.name, s.share) for s in plan.train_sets] == [
        ("train_KsponSpeech_02_train.csv", None),
        ("fleurs.csv", 0.2),
        ("cv_ko_train.csv", 0.1),
    ]
    default = default_round_plan(workspace, config, 3)  # the round's own set, plus data.mix
    assert default.train_csv.name == "train_KsponSpeech_03_train.csv"
    assert [(s.path.name, s.share) for s in default.mixed] == [("cv_ko_train.csv", 0.1)]
    with pytest.raises(ConfigError, match="listed twice"):
        default_round_plan(
            workspace, config, 2, train_csv=("train_KsponSpeech_02_train", "cv_ko_train")
        )


def test_mixed_dataset_draws_from_each_part():
    parts = [list(range(10)), [f"g{i}" for i in range(3)]]

    class Part(list):
        durations = property(lambda self: [1.0] * len(self))

    mixed = mix_datasets([Part(p) for p in parts], [_set(None), _set(0.5)], seed=0)
    items = [mixed[i] for i in range(len(mixed))]
    assert items[:10] == list(range(10)) and len(items) == 20
    # Half of a 20-example epoch from a 3-row set: three passes and one more row.
    assert sorted(Counter(items[10:]).values()) == [3, 3, 4]
    assert mixed.drawn == [10, 10] and mixed.shares == pytest.approx([0.5, 0.5])
    assert len(mixed.durations) == 20


def _set(share: float | None) -> TrainSet:
    return TrainSet(Path("x.csv"), share)


def _hf_dataset(folder: Path) -> Path:
    """A FLEURS-like saved dataset: an Audio column (44.1 kHz wav bytes) and transcriptions."""
    folder.mkdir(parents=True)
    paths = []
    for i in range(len(GENERAL)):
        t = np.arange(int(0.4 * 44_100)) / 44_100
        path = folder / f"g{i}.wav"
        soundfile.write(
            path, (0.3 * np.sin(2 * np.pi * (300 + 40 * i) * t)).astype(np.float32), 44_100
        )
        paths.append(str(path))
    dataset = datasets.Dataset.from_dict({"audio": paths, "transcription": GENERAL})
    saved = folder.parent / "fleurs_saved"
    dataset.cast_column("audio", datasets.Audio()).save_to_disk(str(saved))
    return saved


@pytest.fixture(scope="module")
def mixed_round(tmp_path_factory):
    """Round 1 on the round's own set plus a prepared HF set at half of each epoch, trained with
    the GPU-path log-mel (computed by the trainer, here on the CPU), merged and evaluated."""
    root = tmp_path_factory.mktemp("mixed")
    base = save_tiny_whisper(root / "base")
    work = make_workspace(root / "work")
    saved = _hf_dataset(root / "hf_src")
    ws = ["--workdir", str(work)]
    invoke("prepare", "hf", str(saved), "--name", "fleurs_ko", "--holdout", *ws)
    loaded: list[str] = []
    original = SpeechDataset.__getitem__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("pefty_whisper.train.recipe.log_mel_on_gpu", lambda: True)
        patch.setattr(
            SpeechDataset,
            "__getitem__",
            lambda self, i: loaded.append(self.utterances.path(i)) or original(self, i),
        )
        invoke(
            "train", "--round", "1", "--base", str(base), *ws,
            "--train", "train_KsponSpeech_01_train", "--train", "fleurs_ko_train:0.5",
            "-o", "train.max_steps=2", "-o", "train.eval_steps=2", "-o", "train.deepspeed=none",
            # Single utterances, so the loader's items are the two sets' rows (packed mixing:
            # test_packing_round.py).
            "-o", "data.packing=false",
        )  # fmt: skip
    invoke("merge", "--round", "1", *ws)
    invoke("evaluate", "--set", "fleurs_ko_test", *ws)
    return work, loaded


def test_a_mixed_round_records_its_shares_and_draws_from_both_sets(mixed_round):
    work, loaded = mixed_round
    record = RoundRecord.read(work / "adapters" / "round1")
    assert record is not None
    train, (general,) = record.data.train, record.data.mixed
    assert train.name == "train_KsponSpeech_01_train" and general.name == "fleurs_ko_train"
    assert (train.share, train.drawn) == (0.5, 4)
    assert (general.share, general.drawn) == (0.5, 4) and general.kept == 4
    assert record.data.train_examples == 8
    on_disk = json.loads((work / "adapters" / "round1" / "round.json").read_text())
    assert on_disk["data"]["mixed"][0]["share"] == 0.5
    # 2 steps of batch 4: one 8-example epoch, so both sets were read by the loader.
    assert any("/audio/fleurs_ko/" in p for p in loaded)
    assert any(p.endswith(("u0.pcm", "u1.pcm", "u2.pcm", "u3.pcm")) for p in loaded)


def test_rounds_shows_the_mix_and_the_prepared_set_as_its_own_column(mixed_round):
    work, _ = mixed_round
    lines = invoke("rounds", "--workdir", str(work)).output.splitlines()
    assert "fleurs_ko_test CER" in lines[0]
    row = next(line for line in lines if line.split()[0] == "1")
    assert "train_KsponSpeech_01_train 50% + fleurs_ko_train 50%" in row
    cer = json.loads((work / "eval" / "round1" / "fleurs_ko_test.json").read_text())["cer"]
    assert f"{cer:.1f}%" in row
