"""A round on packed 30 s windows (data.packing): what it records, and that the model it makes
keeps predicting timestamps, which a round of single utterances unlearns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from workspaces import make_workspace

from pefty_whisper.cli import main
from pefty_whisper.data.audio import load_audio
from pefty_whisper.inference import Transcriber, TranscriberOptions
from pefty_whisper.workspace import RoundRecord

pytestmark = pytest.mark.usefixtures("restore_torch_threads")

# 48 one-second utterances: three packed windows of 16 plus one no-speech window per pass.
PACKED = ["-o", "data.packing=true", "-o", "data.single_share=0", "-o", "data.untimed_share=0"]
PACKED += ["-o", "data.no_speech_share=0.34"]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("base") / "tiny", seed=4)


def train_and_merge(work: Path, base: Path, *overrides: str) -> Path:
    ws = ["--workdir", str(work)]
    common = ["--quant", "none", "--deepspeed", "none", "-o", "train.learning_rate=0.02"]
    for args in (
        ["train", "--round", "1", "--base", str(base), *common, *overrides, *ws],
        ["merge", "--round", "1", *ws],
    ):
        result = CliRunner().invoke(main, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return work / "merged" / "round1"


def test_packed_round_records_its_windows_and_keeps_timestamps(tiny_base, tmp_path):
    packed_work = make_workspace(tmp_path / "packed", repeats=12)
    packed = train_and_merge(packed_work, tiny_base, *PACKED)
    record = RoundRecord.read(packed_work / "adapters" / "round1")
    assert record is not None and record.packing is not None
    assert record.packing == {
        "windows": 4,
        "packed_windows": 3,
        "untimed_windows": 0,
        "single_utterances": 0,
        "no_speech_windows": 1,
        "utterances": 48,
        "windows_seen": 8 * 4,  # 8 steps of batch 4
    }

    single_work = make_workspace(tmp_path / "single", repeats=12)
    single = train_and_merge(single_work, tiny_base, "-o", "data.packing=false")
    assert RoundRecord.read(single_work / "adapters" / "round1").packing is None

    # Left to choose after <|ko|><|transcribe|>, the packed round's model starts with a
    # timestamp, so long-form decoding can move its window by what it predicts; a round of
    # single utterances with <|notimestamps|> moves the same base the other way.
    audio = np.concatenate([load_audio(p) for p in sorted((packed_work / "audio").glob("*.pcm"))])
    options = TranscriberOptions(backend="torch", max_new_tokens=12)
    packed_model = Transcriber(packed, options)
    assert packed_model.engine.predicts_timestamps(audio)
    assert packed_model.method(audio) == "sequential"
    margins = {
        name: Transcriber(model, options).engine.timestamp_margin(audio)
        for name, model in (("base", tiny_base), ("packed", packed), ("single", single))
    }
    # A random base already "prefers" timestamps by their number (log 1501, the logsumexp of
    # near-uniform logits): what training shows is the direction each format moves it.
    assert margins["single"] < margins["base"] and margins["single"] < margins["packed"], margins


def test_a_packed_round_packs_each_mixed_set_apart(tiny_base, tmp_path):
    work = make_workspace(tmp_path, repeats=12)
    own = work / "data" / "train_KsponSpeech_01_train.csv"
    other = work / "data" / "other.csv"
    other.write_text(own.read_text())
    result = CliRunner().invoke(
        main,
        ["train", "--round", "1", "--base", str(tiny_base), "--train", "train_KsponSpeech_01_train",
         "--train", "other:0.25", *PACKED, "--quant", "none", "--deepspeed", "none",
         "-o", "train.max_steps=2", "--workdir", str(work)],
        catch_exceptions=False,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = RoundRecord.read(work / "adapters" / "round1")
    assert record is not None and record.packing is not None
    (mixed,) = record.data.mixed
    # 48 utterances of the round's own set whole, and a quarter of the epoch from the other.
    assert record.data.train.drawn == 48 and mixed.drawn == 16 and mixed.share == 0.25
    assert record.packing["utterances"] == 48 + 16
    # Windows never join the two sets: the own set makes its 3 windows, the other 1 more.
    assert record.packing["packed_windows"] == 3 + 1
