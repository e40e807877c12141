"""Word-level timestamps: a window's tokens grouped into words, timed by the alignment heads.

A few cross-attention heads of Whisper's decoder follow the audio (`alignment_heads` in the
generation config; CTranslate2 keeps them in its config.json). Dynamic time warping over their
attention maps each text token to the frames it was read from: OpenAI's `find_alignment`, which
faster-whisper runs for CTranslate2 exports. The PyTorch engine runs the same alignment here, one
forced decoder pass per 30 s window over the window's text tokens, so both backends time words
alike. transformers' `generate(return_token_timestamps=True)` was tried first: it aligns the
timestamp tokens too, which soak up the pauses, so a sentence's first word came out up to 0.48 s
early on the stitched test file, and keeping every step's attentions made decoding 1.9x slower.
"""

from __future__ import annotations

import contextlib
import logging
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from pefty_whisper.inference.results import Segment, Word

if TYPE_CHECKING:
    import torch
    from transformers import WhisperTokenizer

__all__ = [
    "TimedToken",
    "alignment_heads",
    "dtw",
    "merge_punctuation",
    "split_words",
    "timed_words",
    "torch_token_times",
]

logger = logging.getLogger(__name__)

TOKENS_PER_SECOND = 50  # the encoder's 1,500 positions per 30 s window
MEDIAN_FILTER_WIDTH = 7  # OpenAI's smoothing of the attention maps along time
PREPENDED = "\"'“¿([{-"
APPENDED = "\"'.。,，!！?？:：”)]}、"
SENTENCE_ENDS = ".。!！?？"
# Languages written without spaces: every complete character sequence is a word.
UNSPACED = {"zh", "ja", "th", "lo", "my", "yue"}


@dataclass(frozen=True)
class TimedToken:
    """One text token of a window, with the time its alignment put it at."""

    token: int
    start: float
    end: float
    probability: float


def alignment_heads(generation_config: Any, layers: int, heads: int) -> list[tuple[int, int]]:
    """The (layer, head) pairs that follow the audio; without them, CTranslate2's default
    (every head of the decoder's second half), with a warning: times are rougher."""
    found = getattr(generation_config, "alignment_heads", None)
    if found:
        return [(int(layer), int(head)) for layer, head in found]
    logger.warning(
        "the model's generation config has no alignment_heads: timing words with every head of "
        "the decoder's second half (CTranslate2's default), which is rougher"
    )
    return [(layer, head) for layer in range(layers // 2, layers) for head in range(heads)]


def torch_token_times(
    model: Any,
    features: torch.Tensor,
    num_frames: int,
    prompt: Sequence[int],
    text_tokens: Sequence[int],
    eot: int,
    heads: Sequence[tuple[int, int]],
) -> list[TimedToken]:
    """OpenAI's find_alignment on a transformers Whisper: one forced pass over
    `prompt + text_tokens + eot` (prompt ending in <|notimestamps|>), DTW over the alignment
    heads' cross-attention within the window's `num_frames` log-mel frames."""
    import torch

    if not text_tokens:
        return []
    ids = torch.tensor([[*prompt, *text_tokens, eot]], device=features.device)
    with torch.inference_mode(), _eager_attention(model):
        encoded = model.model.encoder(features).last_hidden_state
        decoded = model.model.decoder(
            input_ids=ids, encoder_hidden_states=encoded, output_attentions=True, use_cache=False
        )
        logits = model.proj_out(decoded.last_hidden_state)[0].float()
        first = len(prompt) - 1  # the row that predicts the first text token
        rows = logits[first : first + len(text_tokens)].softmax(dim=-1)
        picked = torch.tensor(text_tokens, device=rows.device)
        probabilities = rows[torch.arange(len(text_tokens), device=rows.device), picked].cpu()
        probabilities = probabilities.numpy()
        attentions = decoded.cross_attentions
        weights = torch.stack([attentions[layer][0, head] for layer, head in heads]).float()
        # The attention within the audio, renormalized: a softmax over only these frames, as
        # OpenAI takes it (the padding past the audio must not dilute it).
        weights = weights[:, :, : max(1, num_frames // 2)]
        weights = weights / weights.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        std, mean = torch.std_mean(weights, dim=-2, keepdim=True, unbiased=False)
        weights = _median_filter((weights - mean) / std.clamp_min(1e-12), MEDIAN_FILTER_WIDTH)
        matrix = weights.mean(dim=0)[first:-1]  # rows: <|notimestamps|> .. the last text token
    text_index, time_index = dtw(-matrix.double().cpu().numpy())
    jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
    times = time_index[jumps] / TOKENS_PER_SECOND  # len(text_tokens) + 1: each token's start
    return [
        TimedToken(int(token), float(times[i]), float(times[i + 1]), float(probabilities[i]))
        for i, token in enumerate(text_tokens)
    ]


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """Attention weights come only from the eager kernels (SDPA returns none); for this pass
    only, so decoding keeps its faster kernel."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = before


def _median_filter(x: torch.Tensor, width: int) -> torch.Tensor:
    import torch.nn.functional as F  # noqa: N812 (torch's own name for it)

    if x.shape[-1] <= width // 2:
        return x
    padded = F.pad(x, (width // 2, width // 2), mode="reflect")
    return padded.unfold(-1, width, 1).median(dim=-1).values


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest monotonic path through `cost` (tokens x frames), as (token, frame) index
    arrays; anti-diagonals are filled at once, since each cell needs only the two before."""
    n, m = cost.shape
    total = np.full((n + 1, m + 1), np.inf)
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    total[0, 0] = 0.0
    for k in range(2, n + m + 1):  # i + j == k
        i = np.arange(max(1, k - m), min(n, k - 1) + 1)
        j = k - i
        options = np.stack([total[i - 1, j - 1], total[i - 1, j], total[i, j - 1]])
        # OpenAI's order: diagonal only when strictly cheapest, then up, then left.
        choice = np.where(
            (options[0] < options[1]) & (options[0] < options[2]),
            0,
            np.where((options[1] < options[0]) & (options[1] < options[2]), 1, 2),
        )
        total[i, j] = cost[i - 1, j - 1] + options[choice, np.arange(len(i))]
        trace[i, j] = choice
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        step = trace[i, j]
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    path.reverse()
    indices = np.array(path, dtype=np.int64).reshape(-1, 2)
    return indices[:, 0], indices[:, 1]


def split_words(
    tokenizer: WhisperTokenizer, tokens: Sequence[int], language: str | None
) -> list[tuple[str, list[int]]]:
    """Words and the positions of their tokens: a word starts at a leading space or a
    punctuation mark (every mark its own word, as OpenAI splits them before timing); tokens
    that end inside a character (a Hangul syllable can span two) wait for the next."""
    pieces: list[tuple[str, list[int]]] = []
    pending: list[int] = []
    for index in range(len(tokens)):
        pending.append(index)
        text = tokenizer.decode([tokens[i] for i in pending])
        if "\ufffd" in text and index < len(tokens) - 1:
            continue
        pieces.append((text, pending))
        pending = []
    if language in UNSPACED:
        return pieces
    words: list[tuple[str, list[int]]] = []
    for text, positions in pieces:
        if not words or text.startswith(" ") or text.strip() in string.punctuation:
            words.append((text, list(positions)))
        else:
            words[-1] = (words[-1][0] + text, words[-1][1] + positions)
    return words


def merge_punctuation(words: Sequence[Word]) -> list[Word]:
    """Opening marks joined to the word after them, closing ones to the word before, which
    keeps its own times (OpenAI's merge_punctuations)."""
    merged: list[Word | None] = list(words)
    following = len(merged) - 1
    for i in range(len(merged) - 2, -1, -1):
        word, after = merged[i], merged[following]
        if (
            word is not None
            and after is not None
            and word.text.startswith(" ")
            and (word.text.strip() in PREPENDED)
        ):
            merged[following] = replace(after, text=word.text + after.text)
            merged[i] = None
        else:
            following = i
    previous = 0
    for i in range(1, len(merged)):
        word, before = merged[i], merged[previous]
        if (
            word is not None
            and before is not None
            and not before.text.endswith(" ")
            and (word.text in APPENDED)
        ):
            merged[previous] = replace(before, text=before.text + word.text)
            merged[i] = None
        else:
            previous = i
    return [w for w in merged if w is not None]


def timed_words(
    tokenizer: WhisperTokenizer,
    segments: Sequence[Segment],
    segment_tokens: Sequence[Sequence[TimedToken]],
    language: str | None,
    offset: float = 0.0,
) -> list[Segment]:
    """The window's segments with their words, and OpenAI's corrections of what DTW gets
    wrong: a word after a pause or a sentence's end soaks up the silence before it, so such
    words longer than twice the median are cut back. `offset` shifts the window's times to the
    file's."""
    per_segment = []
    for timed in segment_tokens:
        tokens = [t.token for t in timed]
        per_segment.append(
            [
                Word(
                    offset + timed[positions[0]].start,
                    offset + timed[positions[-1]].end,
                    text,
                    float(np.mean([timed[p].probability for p in positions])),
                )
                for text, positions in split_words(tokenizer, tokens, language)
            ]
        )
    flat = [w for words in per_segment for w in words]
    durations = [w.end - w.start for w in flat if w.end > w.start]
    median = min(0.7, float(np.median(durations))) if durations else 0.0
    longest = 2 * median
    if median > 0:  # over the window: a sentence may end in the segment before
        flat = _cut_at_sentence_ends(flat, longest)
    out, last_speech, used = [], offset, 0
    for segment, count in zip(segments, [len(words) for words in per_segment], strict=True):
        words, used = merge_punctuation(flat[used : used + count]), used + count
        if not words:
            out.append(segment)
            continue
        first = words[0]
        pause = first.end - last_speech > 4 * median
        if median > 0 and pause and first.end - first.start > longest:
            if len(words) > 1 and words[1].end - words[1].start > longest:
                boundary = max(words[1].end / 2, words[1].end - longest)
                first = replace(first, end=boundary)
                words[1] = replace(words[1], start=boundary)
            words[0] = replace(first, start=max(0.0, first.end - longest))
        last_speech = words[-1].end
        # The segment keeps the times its timestamp tokens gave (faster-whisper moves them to
        # its words; here a request with words cuts the same segments as one without).
        out.append(replace(segment, words=_rounded(words)))
    return out


def _cut_at_sentence_ends(words: list[Word], longest: float) -> list[Word]:
    words = list(words)
    for i in range(1, len(words)):
        if words[i].end - words[i].start <= longest:
            continue
        if words[i].text.strip() in SENTENCE_ENDS:
            words[i] = replace(words[i], end=words[i].start + longest)
        elif words[i - 1].text.strip() in SENTENCE_ENDS:
            words[i] = replace(words[i], start=words[i].end - longest)
    return words


def _rounded(words: Sequence[Word]) -> tuple[Word, ...]:
    return tuple(
        replace(
            w,
            start=round(float(w.start), 3),
            end=round(float(w.end), 3),
            probability=None if w.probability is None else round(float(w.probability), 4),
        )
        for w in words
    )
