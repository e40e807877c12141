"""CER and WER scored the KsponSpeech way: the same normalization of reference and hypothesis.

Korean spacing is loose (`할 수 있다` / `할수있다` are both written), so the primary figure is the
character error rate with spaces removed. CER with spaces and WER are reported beside it.
Punctuation is removed from both sides before scoring: Whisper writes it, KsponSpeech mostly
does not, and neither is an error in what was heard. Pure functions, no model code.

Published KsponSpeech figures differ in protocol (DESIGN.md section 11), so `score_protocols`
scores one decode under each named protocol (`PROTOCOLS`) and keeps per-utterance counts, from
which intervals.py draws its bootstrap intervals. Digits are scored as written: `3시` against
`세 시` is an error under `kspon`, which is what the `dual` protocol is for.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import jiwer
import numpy as np

_SPACES = re.compile(r"\s+")


def normalize_for_scoring(text: str) -> str:
    """NFC (composed Hangul), lower-case Latin, punctuation removed, single spaces."""
    text = unicodedata.normalize("NFC", text).lower()
    # Unicode category P* is punctuation, including `?.,!'"` and also `%` and `/`: dropping them
    # on both sides means `70%` vs `70 %` is not an error either.
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    return _SPACES.sub(" ", text).strip()


@dataclass(frozen=True)
class EditCounts:
    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


@dataclass(frozen=True)
class UtteranceScore:
    reference: str  # normalized
    hypothesis: str  # normalized
    chars: EditCounts  # spaces removed: the primary figure
    chars_with_spaces: EditCounts
    words: EditCounts


@dataclass(frozen=True)
class Scores:
    cer: float  # spaces removed, the primary figure, in percent
    cer_with_spaces: float
    wer: float
    num_utterances: int
    utterances: tuple[UtteranceScore, ...]


def score_utterance(reference: str, hypothesis: str) -> UtteranceScore:
    """Edit counts of one utterance at the three granularities, after normalization."""
    ref, hyp = normalize_for_scoring(reference), normalize_for_scoring(hypothesis)
    return UtteranceScore(
        reference=ref,
        hypothesis=hyp,
        chars=_char_edits(ref.replace(" ", ""), hyp.replace(" ", "")),
        chars_with_spaces=_char_edits(ref, hyp),
        words=_word_edits(ref, hyp),
    )


def score_corpus(references: Sequence[str], hypotheses: Sequence[str]) -> Scores:
    """Corpus-level rates: total edits over total reference length (not a mean of ratios)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    utterances = tuple(score_utterance(r, h) for r, h in zip(references, hypotheses, strict=True))
    return Scores(
        cer=_rate([u.chars for u in utterances]),
        cer_with_spaces=_rate([u.chars_with_spaces for u in utterances]),
        wer=_rate([u.words for u in utterances]),
        num_utterances=len(utterances),
        utterances=utterances,
    )


def _rate(counts: Sequence[EditCounts]) -> float:
    return _percent(sum(c.errors for c in counts), sum(c.reference_length for c in counts))


def _percent(errors: int, length: int) -> float:
    """Errors over reference length in percent; text written against an empty reference is 100%."""
    if length == 0:
        return 0.0 if errors == 0 else 100.0
    return 100.0 * errors / length


def _char_edits(ref: str, hyp: str) -> EditCounts:
    if not ref and not hyp:
        return EditCounts(0, 0, 0, 0)
    out = jiwer.process_characters(ref, hyp)
    return EditCounts(out.substitutions, out.deletions, out.insertions, len(ref))


def _word_edits(ref: str, hyp: str) -> EditCounts:
    ref_words, hyp_words = ref.split(), hyp.split()
    if not ref_words:
        return EditCounts(0, 0, len(hyp_words), 0)
    if not hyp_words:
        return EditCounts(0, len(ref_words), 0, len(ref_words))
    out = jiwer.process_words(ref, hyp)
    return EditCounts(out.substitutions, out.deletions, out.insertions, len(ref_words))


Protocol = Literal["kspon", "kspon-phonetic", "dual", "spaces", "wer"]
PROTOCOLS: tuple[Protocol, ...] = get_args(Protocol)
PROTOCOL_DESCRIPTIONS: dict[Protocol, str] = {
    "kspon": "CER, spelling side, spaces removed (the primary figure; SpeechBrain, icefall)",
    "kspon-phonetic": "CER against the phonetic side where there is one (kospeech's default)",
    "dual": "CER against whichever side gives the utterance fewer errors",
    "spaces": "CER with spaces counted as characters (ESPnet2)",
    "wer": "WER, spelling side",
}


# eq=False: dataclass equality would compare numpy arrays, which has no single truth value.
@dataclass(frozen=True, eq=False)
class ProtocolCounts:
    """One protocol's edit counts per utterance: what a corpus rate and its interval are made of."""

    protocol: Protocol
    errors: np.ndarray  # int64, one per utterance
    reference_lengths: np.ndarray  # int64, one per utterance (characters or words)

    @property
    def rate(self) -> float:
        """Total errors over total reference length, in percent (as `Scores` computes it)."""
        return _percent(int(self.errors.sum()), int(self.reference_lengths.sum()))


@dataclass(frozen=True, eq=False)
class ProtocolScores:
    """One decode scored under every protocol; `spelling` holds today's per-utterance detail."""

    counts: tuple[ProtocolCounts, ...]  # in PROTOCOLS order
    # Per utterance: True where `dual` took the phonetic side (it had strictly fewer errors).
    dual_took_phonetic: np.ndarray
    spelling: Scores

    @property
    def num_utterances(self) -> int:
        return self.spelling.num_utterances

    def __getitem__(self, protocol: Protocol) -> ProtocolCounts:
        for counts in self.counts:
            if counts.protocol == protocol:
                return counts
        raise KeyError(f"unknown protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")

    def rates(self) -> dict[Protocol, float]:
        """Each protocol's corpus rate in percent, in PROTOCOLS order."""
        return {c.protocol: c.rate for c in self.counts}


def score_protocols(
    references: Sequence[str],
    hypotheses: Sequence[str],
    phonetic: Sequence[str | None] | None = None,
) -> ProtocolScores:
    """Score one decode under every protocol in PROTOCOLS.

    `references` are the spelling side (a manifest's `sentence`), `phonetic` the pronunciation
    side of each utterance (a manifest's `phonetic`), "" or None where the utterance has none:
    there `kspon-phonetic` and `dual` use the spelling side. Both sides go through
    `normalize_for_scoring`, like the hypothesis.
    """
    if phonetic is not None and len(phonetic) != len(references):
        raise ValueError(f"{len(references)} references but {len(phonetic)} phonetic forms")
    spelling = score_corpus(references, hypotheses)
    chars = _count_array([u.chars for u in spelling.utterances])
    phonetic_chars = chars.copy()
    for index, side in enumerate(phonetic or ()):
        if not side:
            continue
        reference = normalize_for_scoring(side).replace(" ", "")
        utterance = spelling.utterances[index]
        if not reference or reference == utterance.reference.replace(" ", ""):
            continue  # nothing left once normalized, or the same text: the spelling counts
        edits = _char_edits(reference, utterance.hypothesis.replace(" ", ""))
        phonetic_chars[index] = (edits.errors, edits.reference_length)
    # Fewer errors wins; a tie keeps the spelling side, the primary reference.
    took_phonetic = phonetic_chars[:, 0] < chars[:, 0]
    dual = np.where(took_phonetic[:, None], phonetic_chars, chars)
    spaces = _count_array([u.chars_with_spaces for u in spelling.utterances])
    words = _count_array([u.words for u in spelling.utterances])
    columns = {
        "kspon": chars,
        "kspon-phonetic": phonetic_chars,
        "dual": dual,
        "spaces": spaces,
        "wer": words,
    }
    return ProtocolScores(
        counts=tuple(
            ProtocolCounts(name, columns[name][:, 0].copy(), columns[name][:, 1].copy())
            for name in PROTOCOLS
        ),
        dual_took_phonetic=took_phonetic,
        spelling=spelling,
    )


def _count_array(counts: Sequence[EditCounts]) -> np.ndarray:
    """(errors, reference_length) per utterance as an int64 array of shape (n, 2)."""
    array = np.array([(c.errors, c.reference_length) for c in counts], dtype=np.int64)
    return array.reshape(len(counts), 2)
