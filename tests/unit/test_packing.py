"""Packed 30 s windows: labels, timestamps, limits and shares, on the real tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from fixtures import whisper_processor

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.data.manifest import Utterance
from pefty_whisper.data.packing import (
    PackedDataset,
    PackingOptions,
    no_speech_audio,
    packing_tokens,
    plan_windows,
)
from pefty_whisper.whisper.tokens import WhisperTokens

SENTENCES = ["안녕하세요 반갑습니다", "오늘 날씨가 좋네요", "세 시에 만나요", "KBS 뉴스를 봤어요"]
TIMESTAMP = re.compile(r"<\|(\d+\.\d\d)\|>")


@pytest.fixture(scope="module")
def tokenizer():
    return whisper_processor().tokenizer


@pytest.fixture(scope="module")
def special(tokenizer) -> WhisperTokens:
    return packing_tokens(tokenizer, "ko", "transcribe")


def _corpus(folder: Path, count: int, seed: int = 0) -> list[Utterance]:
    rng = np.random.default_rng(seed)
    utterances = []
    for i in range(count):
        seconds = float(rng.uniform(1.0, 7.0))
        samples = int(seconds * SAMPLE_RATE)
        audio = (0.1 * rng.standard_normal(samples) * 32767).astype("<i2")
        path = folder / f"u{i:04d}.pcm"
        path.write_bytes(audio.tobytes())
        utterances.append(
            Utterance(str(path), SENTENCES[i % len(SENTENCES)], samples / SAMPLE_RATE, f"u{i}")
        )
    return utterances


def _plan(utterances, tokenizer, options):
    lengths = [len(tokenizer(u.sentence, add_special_tokens=False).input_ids) for u in utterances]
    return plan_windows([u.duration for u in utterances], lengths, options)


def test_packed_labels_decode_to_the_joined_transcripts_with_increasing_times(
    tmp_path: Path, tokenizer, special: WhisperTokens
) -> None:
    utterances = _corpus(tmp_path, 24)
    options = PackingOptions(single_share=0.0, no_speech_share=0.0, seed=3)
    dataset = PackedDataset(utterances, _plan(utterances, tokenizer, options), tokenizer, special)
    assert dataset.plan.count("packed") == len(dataset) and len(dataset) < len(utterances)
    for index, window in enumerate(dataset.plan.windows):
        item = dataset[index]
        ids = [item["decoder_input_ids"][0], *item["labels"]]
        text = tokenizer.decode(ids, decode_with_timestamps=True)
        assert text.startswith("<|startoftranscript|><|ko|><|transcribe|><|")
        assert text.endswith("<|endoftext|>") and "<|notimestamps|>" not in text
        times = [float(t) for t in TIMESTAMP.findall(text)]
        assert len(times) == 2 * window.num_utterances
        assert times == sorted(times) and len(set(times)) == len(times)
        assert times[-1] <= 30.0
        # Each timestamp pair brackets its utterance exactly where the waveform holds it.
        audio = item["audio"]
        assert len(audio) / SAMPLE_RATE <= 30.0
        for k, member in enumerate(window.members):
            start, end = times[2 * k], times[2 * k + 1]
            assert abs((end - start) - utterances[member].duration) <= 0.03
        plain = tokenizer.decode(ids, skip_special_tokens=True)
        joined = "".join(utterances[m].sentence for m in window.members)
        assert plain.replace(" ", "") == joined.replace(" ", "")


def test_no_window_passes_30_s_or_448_tokens(tmp_path: Path, tokenizer, special) -> None:
    long_text = "가나다라마바사 " * 25  # about 176 tokens: two fit in 448, three do not
    utterances = [
        Utterance(u.path, long_text, u.duration, u.id) for u in _corpus(tmp_path, 30, seed=1)
    ]
    options = PackingOptions(single_share=0.0, no_speech_share=0.0)
    dataset = PackedDataset(utterances, _plan(utterances, tokenizer, options), tokenizer, special)
    assert any(w.num_utterances >= 2 for w in dataset.plan.windows)
    for index in range(len(dataset)):
        item = dataset[index]
        assert len(item["labels"]) + 1 <= 448
        assert len(item["audio"]) <= 30 * SAMPLE_RATE
    # Every utterance is in exactly one window, in corpus order, none cut.
    members = [m for w in dataset.plan.windows for m in w.members]
    assert members == list(range(len(utterances)))


def test_shares_follow_the_options(tokenizer) -> None:
    durations = [3.0] * 2000
    lengths = [12] * 2000
    plan = plan_windows(durations, lengths, PackingOptions(single_share=0.3, no_speech_share=0.1))
    speech = plan.count("packed") + plan.count("single")
    assert abs(plan.count("single") / 2000 - 0.3) < 0.05  # utterances kept single
    assert plan.count("no_speech") == round(0.1 * speech)
    assert plan.utterances == 2000
    # Seeded: the same options give the same plan, another seed another one.
    again = plan_windows(durations, lengths, PackingOptions(single_share=0.3, no_speech_share=0.1))
    assert again == plan
    other = plan_windows(
        durations, lengths, PackingOptions(single_share=0.3, no_speech_share=0.1, seed=9)
    )
    assert other != plan


def test_single_and_no_speech_examples(tmp_path: Path, tokenizer, special) -> None:
    utterances = _corpus(tmp_path, 40, seed=2)
    options = PackingOptions(single_share=0.5, no_speech_share=0.2, seed=5)
    dataset = PackedDataset(utterances, _plan(utterances, tokenizer, options), tokenizer, special)
    kinds = {w.kind for w in dataset.plan.windows}
    assert kinds == {"packed", "single", "no_speech"}
    for index, window in enumerate(dataset.plan.windows):
        item = dataset[index]
        if window.kind == "single":
            ids = [item["decoder_input_ids"][0], *item["labels"]]
            assert tokenizer.decode(ids[:4]) == (
                "<|startoftranscript|><|ko|><|transcribe|><|notimestamps|>"
            )
        if window.kind == "no_speech":
            # The forced prompt is read as always; the target after <|sot|> is no-speech and
            # the transcript is empty.
            ko, transcribe = special.languages["ko"], special.tasks["transcribe"]
            assert item["decoder_input_ids"] == [special.sot, ko, transcribe, special.no_timestamps]
            assert item["labels"] == [
                special.no_speech,
                transcribe,
                special.no_timestamps,
                special.eot,
            ]
            assert len(item["audio"]) == round(window.noise_s * SAMPLE_RATE)


def test_untimed_windows_carry_the_joined_text_without_timestamps(
    tmp_path: Path, tokenizer, special
) -> None:
    utterances = _corpus(tmp_path, 60, seed=4)
    timed = PackingOptions(single_share=0.0, no_speech_share=0.0, seed=2)
    untimed = PackingOptions(single_share=0.0, untimed_share=0.4, no_speech_share=0.0, seed=2)
    plan = _plan(utterances, tokenizer, untimed)
    # The share only relabels windows: the grouping and the silences stay as they were.
    assert [(w.members, w.gaps_s) for w in plan.windows] == [
        (w.members, w.gaps_s) for w in _plan(utterances, tokenizer, timed).windows
    ]
    dataset = PackedDataset(utterances, plan, tokenizer, special)
    flags = [w.timestamps for w in plan.windows]
    assert plan.summary()["untimed_windows"] == flags.count(False) > 0 and any(flags)
    for index, window in enumerate(plan.windows):
        item = dataset[index]
        ids = [item["decoder_input_ids"][0], *item["labels"]]
        text = tokenizer.decode(ids, decode_with_timestamps=True)
        if window.timestamps:
            assert TIMESTAMP.search(text) and "<|notimestamps|>" not in text
            continue
        assert text.startswith("<|startoftranscript|><|ko|><|transcribe|><|notimestamps|>")
        assert not TIMESTAMP.search(text)
        # The utterances' transcripts in order, a space between them (WER needs it).
        plain = tokenizer.decode(ids, skip_special_tokens=True).strip()
        assert plain == " ".join(utterances[m].sentence for m in window.members)


def test_the_untimed_share_follows_the_options() -> None:
    plan = plan_windows([3.0] * 3000, [12] * 3000, PackingOptions(untimed_share=0.3))
    untimed = plan.summary()["untimed_windows"]
    assert abs(untimed / plan.count("packed") - 0.3) < 0.08


def test_no_speech_audio_is_quiet_and_seeded() -> None:
    for kind in ("silence", "noise", "hum"):
        audio = no_speech_audio(kind, 2.0, seed=1)
        assert audio.dtype == np.float32 and len(audio) == 2 * SAMPLE_RATE
        assert float(np.abs(audio).max()) < 0.1
        assert np.array_equal(audio, no_speech_audio(kind, 2.0, seed=1))
    assert not np.any(no_speech_audio("silence", 1.0, seed=0))


def test_the_no_speech_token_is_whispers(special: WhisperTokens, tokenizer) -> None:
    # whisper-base's vocabulary calls it <|nocaptions|>; it sits right before <|notimestamps|>,
    # where transformers' and faster-whisper's no-speech detection read it.
    assert special.no_speech == special.no_timestamps - 1
    assert tokenizer.convert_ids_to_tokens(special.no_speech) == "<|nocaptions|>"


def test_the_language_may_be_given_as_the_config_accepts_it(tokenizer, special) -> None:
    # model.language accepts Whisper's names and any case; packing must read it the same way.
    for language in ("korean", "KO", "ko"):
        assert packing_tokens(tokenizer, language, "transcribe") == special


def test_packing_says_that_the_auto_context_does_not_apply(tmp_path: Path, tokenizer, caplog):
    import logging

    from pefty_whisper.config import load_config
    from pefty_whisper.data.packing import packed_training_set

    # The CLI's logging setup stops pefty's loggers at their own handler: listen on the module's.
    logger = logging.getLogger("pefty_whisper.data.packing")
    logger.addHandler(caplog.handler)
    try:
        utterances = _corpus(tmp_path, 6)
        with caplog.at_level("WARNING", logger=logger.name):
            dataset = packed_training_set(
                utterances, tokenizer, load_config(None, ["model.context=auto"])
            )
        assert "model.context=auto does not apply to packed windows" in caplog.text
        assert dataset.plan.utterances == 6
        caplog.clear()
        with caplog.at_level("WARNING", logger=logger.name):
            packed_training_set(utterances, tokenizer, load_config(None))
        assert "does not apply" not in caplog.text
    finally:
        logger.removeHandler(caplog.handler)


def test_mixed_sets_are_packed_apart_and_passes_never_join(tmp_path: Path, tokenizer) -> None:
    from pefty_whisper.config import load_config
    from pefty_whisper.data.mixing import TrainSet, mix_datasets
    from pefty_whisper.data.packing import packed_mixed_set
    from pefty_whisper.data.table import UtteranceTable

    class Part:  # what mix_datasets and packing read of a SpeechDataset
        def __init__(self, utterances) -> None:
            self.utterances = UtteranceTable.from_utterances(utterances)

        def __len__(self) -> int:
            return len(self.utterances)

    (tmp_path / "own").mkdir()
    (tmp_path / "small").mkdir()
    own, small = _corpus(tmp_path / "own", 10, seed=1), _corpus(tmp_path / "small", 3, seed=2)
    sets = [TrainSet(Path("own.csv")), TrainSet(Path("small.csv"), 0.5)]
    mixed = mix_datasets([Part(own), Part(small)], sets, seed=0)
    assert mixed.drawn == [10, 10]  # the small set three times over, and one more
    packed = packed_mixed_set(mixed, tokenizer, load_config(None))
    assert packed.plan.utterances == 20
    for part in packed.datasets:
        paths = [part.utterances.path(i) for i in range(len(part.utterances))]
        folders = {Path(path).parent.name for path in paths}
        assert len(folders) == 1  # one set per part: a window never joins two corpora
        for window in part.plan.windows:
            members = [paths[m] for m in window.members]
            assert len(set(members)) == len(members)  # no utterance twice in a window
