"""Word timestamps on real whisper-base (its alignment heads are OpenAI's): a file stitched from
known English sentences at known times, through the CTranslate2 export (faster-whisper) and the
transformers checkpoint (alignment.py), and `pefty transcribe --word-timestamps` in every format.

whisper-base hears espeak-ng's English nearly perfectly, so each sentence's first word can be
found in the words and its start compared with the time the sentence was placed at.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from pefty_whisper.cli import main
from pefty_whisper.inference import Transcriber, TranscriberOptions

RATE = 16_000
SENTENCES = (
    "the weather is very nice today",
    "i will meet my friend at the station",
    "please turn off the lights before you leave",
    "we had dinner at a small restaurant",
    "the train leaves early in the morning",
    "can you help me carry these boxes",
    "she reads a book every night before bed",
    "our flight was delayed by an hour",
)
GAPS_S = (1.0, 2.0, 1.5, 2.5, 1.2, 2.0, 3.0, 1.5)  # silence before each sentence
TOLERANCE_S = 0.5
# openai/whisper-base's alignment heads, as OpenAI published them (layer, head).
BASE_HEADS = [[3, 1], [4, 2], [4, 3], [4, 7], [5, 1], [5, 2], [5, 4], [5, 6]]
OPTIONS = TranscriberOptions(language="en", device="cpu")

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_torch_threads")]


@pytest.fixture(scope="module")
def stitched(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[float]]:
    """The sentences with silences between them (35 s: two windows, VAD on), and the time
    each sentence's speech starts."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    from pefty_whisper.data.espeak import Voice, synthesize

    parts, starts, at = [], [], 0
    for sentence, gap in zip(SENTENCES, GAPS_S, strict=True):
        speech = synthesize(sentence, Voice("en-us", 150, 50))
        onset = int(np.argmax(np.abs(speech) > 0.01))  # espeak-ng starts at once; be exact
        parts += [np.zeros(int(gap * RATE), np.float32), speech]
        at += int(gap * RATE)
        starts.append((at + onset) / RATE)
        at += len(speech)
    parts.append(np.zeros(RATE, np.float32))
    path = tmp_path_factory.mktemp("speech") / "stitched.wav"
    soundfile.write(path, np.concatenate(parts), RATE, subtype="FLOAT")
    return path, starts


@pytest.fixture(scope="module")
def ct2_export(whisper_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("faster_whisper", reason="pip install 'pefty-whisper[export]'")
    from pefty_whisper.export import export_ct2

    out = tmp_path_factory.mktemp("exports") / "base-ct2-int8"
    tone = 0.1 * np.sin(np.arange(RATE) / 8).astype(np.float32)  # a quick probe: any audio
    return export_ct2(whisper_base, out, "int8", probe_audio=[tone], probe_options=OPTIONS).out_dir


def _plain(text: str) -> str:
    return re.sub(r"[^a-z' ]", "", text.lower()).strip()


def first_word_starts(words: list[tuple[str, float]]) -> list[float]:
    """Where each sentence's first two words are found, in order, the first one's start."""
    plain = [_plain(text) for text, _ in words]
    found, at = [], 0
    for sentence in SENTENCES:
        head = sentence.split()[:2]
        for i in range(at, len(plain) - 1):
            if plain[i : i + 2] == head:
                found.append(words[i][1])
                at = i + 2
                break
        else:
            raise AssertionError(f"{sentence!r} not heard in {' '.join(plain)}")
    return found


def test_the_ct2_export_keeps_the_alignment_heads(whisper_base: Path, ct2_export: Path) -> None:
    generation = json.loads((whisper_base / "generation_config.json").read_text())
    assert generation["alignment_heads"] == BASE_HEADS  # import-ct2 keeps them
    assert json.loads((ct2_export / "config.json").read_text())["alignment_heads"] == BASE_HEADS


@pytest.mark.parametrize("backend", ["ct2", "torch"])
def test_each_sentence_starts_where_it_was_placed(
    backend: str, whisper_base: Path, ct2_export: Path, stitched: tuple[Path, list[float]]
) -> None:
    path, starts = stitched
    model = ct2_export if backend == "ct2" else whisper_base
    result = Transcriber(model, OPTIONS).transcribe_file(path, word_timestamps=True)
    assert result.method.startswith("sequential") and "VAD" in result.method
    words = [(w.text, w.start) for s in result.segments for w in s.words]
    found = first_word_starts(words)
    errors = [round(f - t, 2) for f, t in zip(found, starts, strict=True)]
    assert all(abs(e) <= TOLERANCE_S for e in errors), (backend, errors)
    for segment in result.segments:
        assert segment.words, segment
        assert segment.start - 0.5 <= segment.words[0].start
        assert all(w.start <= w.end and 0 < w.probability <= 1 for w in segment.words)
    ordered = [w.start for s in result.segments for w in s.words]
    assert ordered == sorted(ordered) and ordered[-1] <= result.duration_s


def test_transcribe_writes_words_in_json_srt_and_vtt(
    ct2_export: Path, stitched: tuple[Path, list[float]], tmp_path: Path
) -> None:
    path, starts = stitched
    # `pefty transcribe` decodes in the model's own language: a copy that speaks English.
    english = shutil.copytree(ct2_export, tmp_path / "english-ct2")
    generation = json.loads((english / "generation_config.json").read_text())
    generation["language"] = "en"
    (english / "generation_config.json").write_text(json.dumps(generation))

    def run(output_format: str) -> str:
        args = ["transcribe", str(path), "--model", str(english), "--word-timestamps"]
        args += ["--format", output_format, "--workdir", str(tmp_path), "-o", "decode.device=cpu"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return result.stdout

    files = json.loads(run("json"))
    segments = files[0]["segments"]
    words = [w for s in segments for w in s["words"]]
    assert set(words[0]) == {"word", "start", "end", "probability"}
    found = first_word_starts([(w["word"], w["start"]) for w in words])
    assert all(abs(f - t) <= TOLERANCE_S for f, t in zip(found, starts, strict=True))

    cues = run("srt").strip().split("\n\n")
    assert len(cues) == len(words)  # a cue per word
    number, times, text = cues[1].split("\n")
    assert number == "2" and text == words[1]["word"].strip()
    assert times == "{} --> {}".format(*(_srt(words[1][k]) for k in ("start", "end")))

    vtt = run("vtt")
    assert vtt.startswith("WEBVTT")
    blocks = vtt.strip().split("\n\n")[1:]
    assert len(blocks) == len(segments)  # a cue per segment, a timestamp before its words
    second = segments[0]["words"][1]
    assert f"<{_srt(second['start']).replace(',', '.')}>{second['word'].strip()}" in blocks[0]


def _srt(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d},{millis:03d}"
