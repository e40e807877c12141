"""How sure a decode was: the mean token log-probability and the no-speech probability of each
row, measured as Whisper measures them, for every backend (what `pefty label` filters on).

CTranslate2 returns both from its own generate; the PyTorch and ONNX engines score the tokens
they generated with one teacher-forced decoder pass, from which `row_confidence` reads them.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pefty_whisper.whisper.tokens import WhisperTokens

__all__ = ["Scored", "compression_ratio", "row_confidence"]


@dataclass(frozen=True)
class Scored:
    """Generated tokens of one row and how sure the model was of them."""

    tokens: list[int]  # no prompt, no end-of-text
    # Mean log-probability over the tokens and the end-of-text (openai/whisper's avg_logprob:
    # the sum over len(tokens) + 1).
    avg_logprob: float
    # p(no-speech token) at the step after <|startoftranscript|>; None if the model has none.
    no_speech_prob: float | None


@dataclass(frozen=True)
class ScoredText:
    """A Scored row with its text, as the Transcriber gives it back."""

    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float | None


def row_confidence(
    logits: np.ndarray,
    prompt_length: int,
    tokens: Sequence[int],
    special: WhisperTokens,
    ended: bool = True,
) -> Scored:
    """Scores of one row from the decoder's logits over `prompt + tokens` (shape: positions x
    vocabulary; position p predicts token p + 1), over the tokens decoding may choose: the
    suppressed ones are out, as in decoding (and in CTranslate2's scores). `ended` False: the
    row ran out of new tokens before its end-of-text, which then is not scored (as in
    CTranslate2); the mean still divides by len(tokens) + 1."""
    targets = [*tokens, special.eot] if ended else list(tokens)
    positions = np.arange(len(targets)) + prompt_length - 1
    chosen = logits[positions].astype(np.float64)
    if special.suppress_tokens:
        chosen[:, list(special.suppress_tokens)] = -np.inf
    if special.begin_suppress_tokens:
        chosen[0, list(special.begin_suppress_tokens)] = -np.inf
    log_z = _logsumexp(chosen)
    logprobs = chosen[np.arange(len(targets)), targets] - log_z
    no_speech_prob, no_speech = None, special.no_speech
    if no_speech is not None:
        first = logits[0].astype(np.float64)  # after <|startoftranscript|>
        no_speech_prob = float(np.exp(first[no_speech] - _logsumexp(first[None])[0]))
    return Scored(list(tokens), float(logprobs.sum() / (len(tokens) + 1)), no_speech_prob)


def _logsumexp(rows: np.ndarray) -> np.ndarray:
    top = rows.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(rows - top).sum(axis=-1, keepdims=True)))[:, 0]


def compression_ratio(text: str) -> float:
    """Bytes of the text over bytes gzipped: openai/whisper's repetition check (a loop such as
    "네 네 네 네 ..." compresses far better than speech, above 2.4)."""
    data = text.encode("utf-8")
    return len(data) / len(gzip.compress(data)) if data else 0.0
