"""KsponSpeech transcripts: parse .trn lines and normalize ETRI notation for Whisper targets.

KsponSpeech writes its transcripts in ETRI notation (see DESIGN.md section 6):

- ``(spelling)/(pronunciation)`` dual transcriptions, e.g. ``(3G)/(쓰리 쥐)``;
- noise tags ``b/`` breath, ``l/`` laughter, ``o/`` other speaker, ``n/`` noise,
  ``u/`` unintelligible word;
- fillers ``어/``, repetitions ``그+``, ``*`` unclear part, ``#`` rare word (prefix).

`normalize_transcript` turns that into the text Whisper should learn to write, following ESPnet's
KsponSpeech recipe (``df``: dual -> first side, then ``char``). `normalize_sides` gives the
spelling and the phonetic form from one parse, so a manifest can keep both and a decode can be
scored against either (metrics.py).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from pefty_whisper.config import NormalizeMode
from pefty_whisper.errors import DataError

logger = logging.getLogger(__name__)

# A dual transcription `(spelling)/(pronunciation)`. Sides hold no parentheses, so in nested or
# malformed input such as `((70)/(칠십))%` the innermost well-formed pair matches and the stray
# parentheses around it are dropped later as leftovers. Spaces around the `/` are tolerated.
_DUAL = re.compile(r"\(([^()]*)\)\s*/\s*\(([^()]*)\)")

# Noise tags b/ l/ o/ n/ u/ only as whole tokens: nothing but whitespace or sentence punctuation
# (or the text's start/end) on either side. Letters next to them mean ordinary text (`fun/`,
# `menu`, `n/a`), which must survive. Several tags may be glued together (`b/n/`).
_NOISE_TAG = re.compile(r"(?<![^\s.,?!])(?:[blonu]/)+(?![^\s.,?!])")

# A filler `/` or repetition `+` ending a word (`어/`, `그+`, `그/+`): drop the mark, keep the word.
# Not before `(`: in a broken dual such as `(1시)/(한 시` that slash separates two words.
_WORD_END_MARK = re.compile(r"[/+](?=[\s.,?!/+*#)]|$)")

# A `/` or `+` between two characters outside a dual (`어/그`) separates words: make it a space so
# the words on either side are not glued together.
_INNER_MARK = re.compile(r"[/+]")

# `*` (unclear), `#` (rare word prefix) and parentheses left over from malformed duals are
# notation only; the words they mark are kept.
_NOTATION_ONLY = re.compile(r"[*#()]")
# Every pattern `_strip_notation` applies needs one of these characters.
_ANY_MARK = re.compile(r"[/+*#()]")
# A letter or digit: `\w` is `str.isalnum()` or `_` (checked over every code point), so this is
# `any(c.isalnum() for c in text)` in one C-level search.
_ALNUM = re.compile(r"[^\W_]")

# Inside a spelling side the marks are text or notation by what they follow: after Hangul a `/`
# or `+` is a filler or repetition mark (`(아/ 그러니까)/(...)`, `(그+ 그)/(...)`), after a Latin
# letter, digit or symbol it is part of the word (`A/S`, `C++`, `A+`). Likewise `*` and `#`
# next to Hangul are notation, while `C#` and `5*3` are text. Noise tags are whole tokens.
_HANGUL = "\uac00-\ud7a3\u3131-\u318e"
_SPELLING_MARK_BETWEEN = re.compile(f"(?<=[{_HANGUL}])[/+]+(?=[^\\s/+])")
_SPELLING_MARK_END = re.compile(f"(?<=[{_HANGUL}])[/+]+")
_SPELLING_STAR = re.compile(f"(?<=[{_HANGUL}])\\*|\\*(?=[{_HANGUL}])|(?<!\\S)\\*(?!\\S)")
_SPELLING_RARE = re.compile(f"(?<![^\\s(])#(?=[{_HANGUL}])")

_MODES: tuple[str, ...] = get_args(NormalizeMode)


def normalize_transcript(text: str, mode: NormalizeMode = "spelling") -> str:
    """Turn one ETRI-notation transcript into a Whisper training target.

    ``spelling`` (the default) keeps the spelling side of each dual transcription as written, so
    digits, Latin letters and symbols such as ``70%``, ``A/S`` or ``C++`` stay; that is what
    Whisper writes. Only the marks that follow Hangul there (fillers, repetitions) and noise tags
    are notation and go. ``phonetic`` keeps the pronunciation side instead (Hangul as spoken).
    Outside duals, both modes remove noise tags, keep filler and repeated words without their
    ``/`` or ``+``, and remove ``*``, ``#`` and stray parentheses.

    Sentence punctuation ``? . ! ,`` and every other character (hyphen, ``%``, ``~``) are kept:
    Whisper writes punctuation and the scorer strips it from both sides at evaluation time.
    ``raw`` returns the text untouched apart from whitespace.

    Whitespace is collapsed to single spaces and stripped. In ``spelling`` and ``phonetic`` mode a
    result without a single letter or digit (the line was only tags or punctuation) comes back as
    ``""``, which callers treat as a rejected utterance.
    """
    if mode not in _MODES:
        raise ValueError(f"Unknown normalize mode {mode!r}: expected one of {', '.join(_MODES)}")
    if mode == "raw":
        return _collapse_spaces(text)

    # Dual sides are handled apart from the surrounding text: the spelling side is text as
    # written, where `/`, `+` and `#` after Latin letters, digits or symbols are real characters
    # (`A/S`, `C++`, `C#`); after Hangul they are marks (`(아/ 그러니까)/(...)`).
    pieces: list[str] = []
    position = 0
    for match in _DUAL.finditer(text):
        pieces.append(_strip_notation(text[position : match.start()]))
        spelling, pronunciation = match.group(1), match.group(2)
        pieces.append(
            _strip_spelling_notation(spelling)
            if mode == "spelling"
            else _strip_notation(pronunciation)
        )
        position = match.end()
    pieces.append(_strip_notation(text[position:]))
    return _finish(pieces)


@dataclass(frozen=True, slots=True)
class TranscriptSides:
    """Both readings of one transcript; they differ only inside its dual parts."""

    spelling: str  # what normalize_transcript(text, "spelling") returns
    phonetic: str  # normalize_transcript(text, "phonetic"), or "" where it equals `spelling`


def normalize_sides(text: str) -> TranscriptSides:
    """The spelling and phonetic forms of one ETRI-notation transcript, from one parse.

    Scorers disagree on which side of ``(3시)/(세 시)`` is the reference (DESIGN.md section 11), so
    prepare keeps both. ``phonetic`` is ``""`` where it would repeat ``spelling`` (no dual part,
    or both sides read alike), which keeps manifests of corpora without duals free of a copy of
    every sentence. A line without dual parts costs what `normalize_transcript` costs.
    """
    matches = list(_DUAL.finditer(text))
    if not matches:
        return TranscriptSides(_finish([_strip_notation(text)]), "")
    spelling: list[str] = []
    phonetic: list[str] = []
    position = 0
    for match in matches:
        outside = _strip_notation(text[position : match.start()])
        spelling += (outside, _strip_spelling_notation(match.group(1)))
        phonetic += (outside, _strip_notation(match.group(2)))
        position = match.end()
    outside = _strip_notation(text[position:])
    spelling.append(outside)
    phonetic.append(outside)
    spelling_text, phonetic_text = _finish(spelling), _finish(phonetic)
    return TranscriptSides(spelling_text, "" if phonetic_text == spelling_text else phonetic_text)


def _finish(pieces: list[str]) -> str:
    """Join the pieces of one side; "" when no letter or digit is left (a rejected line)."""
    # Pieces are joined without spaces: `(70%)/(칠십 퍼센트)를` must stay one word.
    result = _collapse_spaces("".join(pieces))
    return result if _ALNUM.search(result) else ""


def _strip_notation(text: str) -> str:
    """Remove ETRI marks from text outside a dual (or from a pronunciation side), keeping words."""
    if not _ANY_MARK.search(text):
        return text  # most pronunciation sides (`세 시`): one search instead of four passes
    text = _NOISE_TAG.sub(" ", text)
    text = _WORD_END_MARK.sub("", text)
    text = _INNER_MARK.sub(" ", text)
    return _NOTATION_ONLY.sub("", text)


def _strip_spelling_notation(side: str) -> str:
    """Remove the ETRI marks a spelling side carries (they follow Hangul), keep `A/S`, `C++`."""
    side = _NOISE_TAG.sub(" ", side)
    side = _SPELLING_MARK_BETWEEN.sub(" ", side)
    side = _SPELLING_MARK_END.sub("", side)
    side = _SPELLING_STAR.sub("", side)
    return _SPELLING_RARE.sub("", side)


def _collapse_spaces(text: str) -> str:
    """Collapse runs of whitespace (spaces, tabs, newlines) to one space and strip the ends."""
    return " ".join(text.split())


@dataclass(frozen=True)
class TrnLine:
    """One line of a KsponSpeech script file (`train.trn`, `eval_clean.trn`, ...)."""

    audio_path: str  # as written, e.g. "KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm"
    transcript: str  # raw ETRI-notation text, stripped
    line_no: int  # 1-based, for error messages that point back into the file


def parse_trn_line(line: str, source: str | Path, line_no: int) -> TrnLine:
    """Split a `path.pcm :: transcript` line, naming the file and line when it is malformed.

    The transcript is returned raw (not normalized) so that the caller picks the mode. An empty
    transcript is not an error here: normalization returns "" and the caller rejects it.
    """
    # A UTF-8 byte-order mark survives decoding as "utf-8" and would end up in the first path.
    stripped = line.strip().lstrip("\ufeff").strip()
    audio_path, separator, transcript = stripped.partition("::")
    expected = "expected 'KsponSpeech_01/KsponSpeech_0001/KsponSpeech_000001.pcm :: transcript'"
    if not separator:
        raise DataError(f"{source}:{line_no}: no ' :: ' separator in {stripped!r}; {expected}")
    audio_path = audio_path.strip()
    if not audio_path:
        raise DataError(f"{source}:{line_no}: empty audio path before ' :: '; {expected}")
    return TrnLine(audio_path=audio_path, transcript=transcript.strip(), line_no=line_no)


def read_cp949_transcript(path: Path) -> str:
    """Read a per-utterance KsponSpeech `.txt` transcript and return its stripped text.

    The corpus ships these files in CP949, but users often re-save them as UTF-8. Strict UTF-8 is
    tried first because it almost never accepts CP949 Korean bytes, whereas CP949 silently turns
    some UTF-8 Korean into other characters (UTF-8 "몰라" decodes as CP949 "紐곕씪").
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read transcript ({exc.strerror or exc})") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    else:
        if not text.isascii():
            logger.debug("%s: decoded as UTF-8, not the corpus's CP949", path)
        return text.strip()
    try:
        return data.decode("cp949").strip()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: transcript is neither CP949 nor UTF-8 (bad byte at offset {exc.start}); "
            "re-save it in one of those encodings"
        ) from exc
