"""Augmentation wired into the training sets and evaluation: packed labels follow perturbed
lengths, the epoch reaches persistent loader workers, a mix's parts draw apart, round.json's
counts are the draws that ran, and evaluation conditions load each row as seeded."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from fixtures import whisper_processor

from pefty_whisper.config import AugmentSection, Config
from pefty_whisper.data.audio import SAMPLE_RATE, load_audio
from pefty_whisper.data.augment import PART_STRIDE, Augmenter, perturbed_samples
from pefty_whisper.data.conditions import ConditionedAudio, apply_condition
from pefty_whisper.data.features import SpeechDataset
from pefty_whisper.data.manifest import Utterance
from pefty_whisper.data.mixing import MixedDataset
from pefty_whisper.data.packing import WINDOW_S, packed_training_set
from pefty_whisper.errors import ConfigError
from pefty_whisper.train.augmentation import (
    attach_augment,
    augment_record,
    epoch_callbacks,
    loader_augment,
)
from pefty_whisper.whisper.tokens import TIME_STEP_S
from pefty_whisper.workspace import EvalLabel

SENTENCES = ["안녕하세요 반갑습니다", "오늘 날씨가 좋네요", "세 시에 만나요", "뉴스를 봤어요"]


def write_utterances(folder: Path, count: int, seconds: float = 2.5) -> list[Utterance]:
    """`count` wav files of a harmonic voice at different pitches and lengths, with rows."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(count):
        length = seconds + 0.37 * (i % 3)
        t = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
        voice = sum(np.sin(2 * np.pi * (120 + 15 * i) * k * t) / k for k in range(1, 8))
        audio = (0.2 * voice * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)
        path = folder / f"u{i}.wav"
        soundfile.write(path, audio, SAMPLE_RATE, subtype="FLOAT")
        rows.append(Utterance(str(path), SENTENCES[i % 4], len(audio) / SAMPLE_RATE, f"u{i}"))
    return rows


def packed_config(**augment) -> Config:
    return dataclasses.replace(
        Config(),
        data=dataclasses.replace(Config().data, untimed_share=0.0, no_speech_share=0.0),
        augment=AugmentSection(**augment),
    )


def timestamps(ids: list[int], first_timestamp: int) -> list[float]:
    return [(i - first_timestamp) * TIME_STEP_S for i in ids if i >= first_timestamp]


def test_packed_timestamps_follow_the_perturbed_members(tmp_path):
    utterances = write_utterances(tmp_path, 8)
    config = packed_config(speed_prob=1.0, speed=(0.9, 1.1), seed=3)
    tokenizer = whisper_processor().tokenizer
    dataset = packed_training_set(utterances, tokenizer, config)
    augment = loader_augment(config.augment)
    attach_augment(dataset, augment)
    # Planned at the slowest factor: no window can pass 30 s whatever its members draw.
    for window in dataset.plan.windows:
        planned = sum(window.gaps_s) + sum(utterances[i].duration / 0.9 for i in window.members)
        assert planned <= WINDOW_S
    window = dataset.plan.windows[0]
    assert window.kind == "packed" and window.num_utterances >= 3
    factors = [augment.plan(row).speed for row in window.members]
    assert set(factors) == {0.9, 1.1}  # both factors in the first window (seed 3)

    item = dataset[0]
    # The spans the labels must carry: each member's perturbed length after its gap.
    position, expected, unperturbed = 0, [], []
    for gap_s, row, factor in zip(window.gaps_s, window.members, factors, strict=True):
        samples = int(round(utterances[row].duration * SAMPLE_RATE))
        start = position + round(gap_s * SAMPLE_RATE)
        position = start + perturbed_samples(samples, factor)
        expected += [start / SAMPLE_RATE, position / SAMPLE_RATE]
        unperturbed.append(samples)
    assert len(item["audio"]) == position
    first = dataset.special.first_timestamp
    got = timestamps(item["labels"], first)
    on_grid = [round(t / TIME_STEP_S) * TIME_STEP_S for t in expected]
    assert got == pytest.approx(on_grid, abs=TIME_STEP_S / 2)
    # The unperturbed spans would be off by more than a grid step by the end of the window.
    plain_end = sum(round(g * SAMPLE_RATE) for g in window.gaps_s) + sum(unperturbed)
    assert abs(got[-1] - plain_end / SAMPLE_RATE) > 2 * TIME_STEP_S
    # And each member's audio is the perturbed waveform (the first sits after its gap).
    row = window.members[0]
    start = round(window.gaps_s[0] * SAMPLE_RATE)
    perturbed = Augmenter(config.augment)(load_audio(utterances[row].path), row).audio
    np.testing.assert_array_equal(item["audio"][start : start + len(perturbed)], perturbed)


def test_the_epoch_reaches_persistent_loader_workers(tmp_path):
    utterances = write_utterances(tmp_path, 3, seconds=1.0)
    section = AugmentSection(noise_prob=1.0, noise_kinds=("pink",), gain_prob=1.0, seed=5)
    dataset = SpeechDataset(utterances, whisper_processor())
    augment = loader_augment(section)
    attach_augment(dataset, augment)
    (callback,) = epoch_callbacks(augment)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=1, persistent_workers=True
    )
    augmenter = Augmenter(section)
    seen = {}
    for epoch in (0, 1):
        # As the Trainer does it: on_epoch_begin, then a new iterator over the same workers.
        callback.on_epoch_begin(None, SimpleNamespace(epoch=float(epoch)), None)
        seen[epoch] = [item["audio"].numpy() for item in loader]
        for row, audio in enumerate(seen[epoch]):
            clean = load_audio(utterances[row].path)
            np.testing.assert_array_equal(audio, augmenter(clean, row, epoch).audio)
    assert not np.array_equal(seen[0][0], seen[1][0])


def test_the_parts_of_a_mix_draw_apart(tmp_path):
    utterances = write_utterances(tmp_path, 2, seconds=1.0)
    section = AugmentSection(noise_prob=1.0, noise_kinds=("white",))
    parts = [SpeechDataset(utterances, whisper_processor()) for _ in range(2)]
    mixed = MixedDataset(parts, [np.arange(2), np.array([0, 1, 0])], [0.4, 0.6])
    attach_augment(mixed, loader_augment(section))
    assert [p.augment.offset for p in parts] == [0, PART_STRIDE]
    first, second = parts[0][0]["audio"], parts[1][0]["audio"]
    assert not np.array_equal(first, second)
    # round.json counts each row as often as the epoch draws it: 2 + 3.
    record = augment_record(section, mixed, epochs=0.5)
    assert record == {
        "spec_augment": False,
        "passes": 1,
        "utterances": 5,
        "noise-white": 5,
    }


def test_round_json_counts_are_the_draws_of_every_epoch_begun(tmp_path):
    utterances = write_utterances(tmp_path, 12, seconds=1.2)
    config = packed_config(
        spec_augment=True, speed_prob=0.5, telephone_prob=0.3, gain_prob=0.2, seed=1
    )
    dataset = packed_training_set(utterances, whisper_processor().tokenizer, config)
    assert augment_record(config.augment, dataset, epochs=1.0) == {"spec_augment": True}
    attach_augment(dataset, loader_augment(config.augment))
    record = augment_record(config.augment, dataset, epochs=1.5)  # two epochs begun
    augmenter = Augmenter(config.augment)
    plans = [augmenter.plan(row, epoch) for epoch in (0, 1) for row in range(12)]
    assert record["passes"] == 2 and record["utterances"] == 24
    assert record["telephone"] == sum(p.telephone for p in plans) > 0
    assert record["gain"] == sum(p.gain_db is not None for p in plans) > 0
    for factor in (0.9, 1.1):
        assert record[f"speed-{factor:g}"] == sum(p.speed == factor for p in plans)
    assert augment_record(AugmentSection(), SpeechDataset(utterances, None), 1.0) is None


def test_a_set_under_a_condition_is_kept_apart_by_its_name():
    label = EvalLabel("round2", "eval_clean", condition="telephone+noise-babble-10db")
    assert label.stem == "eval_clean@cond-telephone+noise-babble-10db"
    assert label.column == "eval_clean@telephone+noise-babble-10db"
    assert EvalLabel.parse(label.folder, label.stem) == label
    both = EvalLabel("round1", "eval_clean", language="en", first=5, condition="speed-0.9")
    assert both.variant == "lang-en-first-5-cond-speed-0.9"
    assert EvalLabel.parse(both.folder, both.stem) == both
    assert EvalLabel("round1", "eval_clean").column == "eval_clean"
    with pytest.raises(ConfigError, match="not an evaluation's name"):
        EvalLabel.parse("round1", "eval_clean@lang-en-cond-")


def test_conditioned_rows_are_seeded_by_their_row_with_neighbours_as_babble(tmp_path):
    utterances = write_utterances(tmp_path, 6, seconds=1.0)
    paths = [u.path for u in utterances]
    conditioned = ConditionedAudio(paths, "noise-babble-5db+telephone", AugmentSection())
    neighbours = [load_audio(paths[i]) for i in (1, 2, 4, 5)]
    expected = apply_condition(load_audio(paths[3]), conditioned.condition, 3, neighbours)
    np.testing.assert_array_equal(conditioned(3), expected)
    np.testing.assert_array_equal(conditioned(3), conditioned(3))
    assert not np.array_equal(conditioned(0), load_audio(paths[0]))
    with pytest.raises(ConfigError, match="augment.noise_dir"):
        ConditionedAudio(paths, "noise-file-10db", AugmentSection())
    with pytest.raises(ConfigError, match="Unknown evaluation condition 'telefone'"):
        ConditionedAudio(paths, "telefone", AugmentSection())
