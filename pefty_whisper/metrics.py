"""CER and WER scored the KsponSpeech way: the same normalization of reference and hypothesis.

Korean spacing is loose (`할 수 있다` / `할수있다` are both written), so the primary figure is the
character error rate with spaces removed. CER with spaces and WER are reported beside it.
Punctuation is removed from both sides before scoring: Whisper writes it, KsponSpeech mostly
does not, and neither is an error in what was heard. Pure functions, no model code.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

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
    errors = sum(c.errors for c in counts)
    length = sum(c.reference_length for c in counts)
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
