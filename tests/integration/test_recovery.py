"""Recovery of skipped speech (decode.recover): VAD speech that sequential decoding left without
a segment is decoded again on its own and put back in time order, marked recovered.

Real whisper-base (which hears espeak-ng's English nearly perfectly) decodes a stitched file;
one sentence's segment is taken out, and the recovery step, with the real audio and the real
Silero VAD, must give that sentence back in its place with its times; through the CLI's JSON,
with the same sentence taken out of the real decode, the recovered segment is marked, on a file
decoded with the VAD and on one decoded whole. A segment timed over three sentences that writes
one word gets the three back. Silence and noise stay without text.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from fixtures import drop_generation_language

from pefty_whisper.cli import main
from pefty_whisper.inference import Transcriber, TranscriberOptions
from pefty_whisper.inference.longform import plan_file, recover_speech

RATE = 16_000
ENGLISH = (
    "the weather is very nice today",
    "i will meet my friend at the station",
    "please turn off the lights before you leave",
    "we had dinner at a small restaurant",
    "the train leaves early in the morning",
)
GAPS_S = (1.0, 1.5, 2.0, 1.2, 1.8)  # silence before each sentence
TOLERANCE_S = 0.6  # VAD padding (0.4 s) and espeak-ng's soft edges
WINDOW_S = 30.0

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


def _espeak(text: str, language: str) -> np.ndarray:
    from pefty_whisper.data.espeak import Voice, synthesize

    return synthesize(text, Voice(language, 150, 50))


@pytest.fixture(scope="module")
def english(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, list[tuple]]:
    """The English sentences with pauses between them, and each sentence's time span."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    parts, spans, at = [], [], 0
    for sentence, gap in zip(ENGLISH, GAPS_S, strict=True):
        speech = _espeak(sentence, "en-us")
        loud = np.flatnonzero(np.abs(speech) > 0.01)
        parts += [np.zeros(int(gap * RATE), np.float32), speech]
        at += int(gap * RATE)
        spans.append(((at + loud[0]) / RATE, (at + loud[-1]) / RATE))
        at += len(speech)
    parts.append(np.zeros(RATE, np.float32))
    return np.concatenate(parts), spans


@pytest.fixture(scope="module")
def base_dir(whisper_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's whisper-base, copied: its generation config loses the language here."""
    model = shutil.copytree(whisper_base, tmp_path_factory.mktemp("base") / "whisper-base")
    return drop_generation_language(model)  # the CLI detects English, as a hub base would


@pytest.fixture(scope="module")
def transcriber(base_dir: Path) -> Transcriber:
    options = TranscriberOptions(language="en", device="cpu", longform="sequential", vad="always")
    return Transcriber(base_dir, replace(options, recover=False))


def _words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


@pytest.mark.slow
def test_a_removed_sentence_comes_back_in_order_with_its_times(
    transcriber: Transcriber, english: tuple
) -> None:
    audio, spans = english
    [decoded] = transcriber.transcribe_audios([audio])
    assert not decoded.uncovered, decoded  # the real decode heard every sentence
    missing = ENGLISH[2]
    kept = [s for s in decoded.segments if _words(s.text) != missing.split()]
    assert len(kept) == len(decoded.segments) - 1, [s.text for s in decoded.segments]

    plan = plan_file(audio, use_vad=True, window_s=WINDOW_S, chunked=False)  # the real VAD
    [recovered] = recover_speech(
        lambda pieces: transcriber.transcribe_speech(pieces, language="en"),
        [audio],
        [plan],
        [kept],
        WINDOW_S,
    )
    assert len(recovered) == len(decoded.segments)
    [back] = [s for s in recovered if s.recovered]
    assert _words(back.text) == missing.split()
    assert recovered.index(back) == 2  # between the second and the fourth sentence
    start, end = spans[2]
    assert back.start == pytest.approx(start, abs=TOLERANCE_S)
    assert back.end == pytest.approx(end, abs=TOLERANCE_S)
    assert [s.start for s in recovered] == sorted(s.start for s in recovered)


@pytest.mark.slow
def test_a_segment_timed_over_three_sentences_that_writes_one_word_is_decoded_again(
    transcriber: Transcriber, english: tuple
) -> None:
    """Issue 21's long round: one segment's times spanned three sentences, its text held three
    words. Coverage by times sees nothing missing; the text against the speech does."""
    audio, spans = english
    [decoded] = transcriber.transcribe_audios([audio])
    segments = list(decoded.segments)
    assert [_words(s.text) for s in segments] == [s.split() for s in ENGLISH], segments
    plan = plan_file(audio, use_vad=True, window_s=WINDOW_S, chunked=False)  # the real VAD

    def recover(found: list) -> list:
        [out] = recover_speech(
            lambda pieces: transcriber.transcribe_speech(pieces, language="en"),
            [audio],
            [plan],
            [found],
            WINDOW_S,
        )
        return out

    assert recover(segments) == segments  # an honest decode is left as it is
    first_word = segments[1].text.split()[0]
    sparse = replace(segments[1], end=segments[3].end, text=first_word)
    recovered = recover([segments[0], sparse, segments[4]])
    # Each sentence once, in order; decoded alone, without the file's context, a sentence may
    # come back with a word or two misheard ("we have been around a small restaurant").
    assert len(recovered) == len(ENGLISH), [s.text for s in recovered]
    for segment, sentence in zip(recovered, ENGLISH, strict=True):
        heard = SequenceMatcher(None, _words(segment.text), sentence.split()).ratio()
        assert heard >= 0.5, (segment.text, sentence)
    assert [s.recovered for s in recovered] == [False, True, True, True, False]
    for segment, (start, end) in zip(recovered[1:4], spans[1:4], strict=True):
        assert segment.start == pytest.approx(start, abs=TOLERANCE_S)
        assert segment.end == pytest.approx(end, abs=TOLERANCE_S)


@pytest.mark.slow
def test_a_region_holding_no_speech_adds_no_segment(
    transcriber: Transcriber, english: tuple
) -> None:
    audio, _ = english
    rng = np.random.default_rng(0)
    quiet = np.concatenate(
        [np.zeros(4 * RATE, np.float32), (0.003 * rng.standard_normal(4 * RATE)).astype("f4")]
    )
    # Regions the VAD might have mistaken for speech: digital silence, then low noise.
    plan = replace(plan_file(quiet, False, WINDOW_S, False), regions=((0.2, 3.8), (4.2, 7.8)))
    [segments] = recover_speech(
        lambda pieces: transcriber.transcribe_speech(pieces, language="en"),
        [quiet],
        [plan],
        [[]],
        WINDOW_S,
    )
    assert segments == []
    # Files of silence and noise: the VAD hears nothing, recovery has nothing to decode.
    with_recovery = Transcriber(transcriber.model_dir, replace(transcriber.options, recover=True))
    results = with_recovery.transcribe_audios([quiet, np.zeros(35 * RATE, np.float32)])
    assert [r.text for r in results] == ["", ""]


# ---- through the CLI -----------------------------------------------------------------------


@pytest.mark.slow
def test_cli_json_marks_the_recovered_segments(
    base_dir: Path, english: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pefty_whisper.inference.torch_backend import TorchEngine

    audio, spans = english
    path = tmp_path / "stitched.wav"
    soundfile.write(path, audio, RATE, subtype="FLOAT")
    decode_sequential = TorchEngine.decode_sequential

    def skip_the_third_sentence(self, audios, plans, request):  # as the round did
        found = decode_sequential(self, audios, plans, request)
        return [[s for s in segments if "lights" not in s.text] for segments in found]

    monkeypatch.setattr(TorchEngine, "decode_sequential", skip_the_third_sentence)
    args = ["transcribe", str(path), "--model", str(base_dir), "--format", "json"]
    args += ["--longform", "sequential", "--vad", "always", "--workdir", str(tmp_path)]

    off = CliRunner().invoke(main, [*args, "-o", "decode.recover=false"])
    assert off.exit_code == 0, off.output
    (skipped,) = json.loads(off.stdout)
    ((start, end),) = skipped["uncovered_speech"]
    assert start <= spans[2][0] + TOLERANCE_S and end >= spans[2][1] - TOLERANCE_S
    assert "that no segment covers" in off.stderr
    assert not any("recovered" in s for s in skipped["segments"])

    on = CliRunner().invoke(main, args)
    assert on.exit_code == 0, on.output
    (item,) = json.loads(on.stdout)
    assert item["uncovered_speech"] == [] and "that no segment covers" not in on.stderr
    assert [bool(s.get("recovered")) for s in item["segments"]] == [0, 0, 1, 0, 0]
    back = item["segments"][2]
    assert _words(back["text"]) == ENGLISH[2].split()
    assert back["start"] == pytest.approx(spans[2][0], abs=TOLERANCE_S)
    assert back["end"] == pytest.approx(spans[2][1], abs=TOLERANCE_S)
    assert item["text"].split(". ")[2].lower().startswith("please turn off")

    # A file of one window under the default --vad auto is decoded whole, without VAD; the VAD
    # still listens after the decode, and what the window's walk skipped comes back all the same.
    assert len(audio) <= WINDOW_S * RATE
    short = CliRunner().invoke(main, [a for a in args if a not in ("--vad", "always")])
    assert short.exit_code == 0, short.output
    (whole,) = json.loads(short.stdout)
    assert "VAD" not in whole["method"], whole["method"]
    assert [bool(s.get("recovered")) for s in whole["segments"]] == [0, 0, 1, 0, 0]
    assert _words(whole["segments"][2]["text"]) == ENGLISH[2].split()
