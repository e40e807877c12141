"""Training examples: audio decoded and log-mel features computed on the fly, labels, batches.

Features are never cached: an 80x3000 float array is about 1 MB per utterance, over 100 GB for
one KsponSpeech part. The loader's workers decode audio and the collator (which runs in those
workers too) computes a whole batch's features at the batch's context (see context.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pefty_whisper.context import ContextMode, context_samples
from pefty_whisper.data.audio import SAMPLE_RATE, load_audio, probe_audio
from pefty_whisper.data.manifest import Utterance
from pefty_whisper.errors import DataError

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor, WhisperProcessor

logger = logging.getLogger(__name__)


@dataclass
class FilterReport:
    """What was dropped before training started, and why; recorded in round.json."""

    kept: int = 0
    too_long_audio: int = 0
    too_long_labels: int = 0
    unreadable_audio: int = 0
    examples: list[str] = field(default_factory=list)  # a few ids per reason, for the log

    def as_dict(self) -> dict[str, int]:
        return {
            "kept": self.kept,
            "dropped_audio_over_max_duration": self.too_long_audio,
            "dropped_labels_over_max_tokens": self.too_long_labels,
            "dropped_unreadable_audio": self.unreadable_audio,
        }


def label_ids(processor: WhisperProcessor, sentence: str) -> list[int]:
    """`<|startoftranscript|><|ko|><|transcribe|><|notimestamps|> text <|endoftext|>`."""
    return processor.tokenizer(sentence).input_ids


def filter_utterances(
    utterances: Sequence[Utterance],
    processor: WhisperProcessor,
    max_duration_s: float,
    max_label_tokens: int,
) -> tuple[list[Utterance], FilterReport]:
    """Drop (and count) what Whisper cannot train on, before the first step rather than mid-run."""
    report = FilterReport()
    kept = []
    for utterance, ids in zip(
        utterances, processor.tokenizer([u.sentence for u in utterances]).input_ids, strict=True
    ):
        duration = utterance.duration
        if duration is None:
            try:
                duration = probe_audio(utterance.path).duration_s
            except DataError as exc:
                logger.warning("%s", exc)
                report.unreadable_audio += 1
                continue
        if duration > max_duration_s:
            report.too_long_audio += 1
            continue
        if len(ids) > max_label_tokens:
            report.too_long_labels += 1
            continue
        kept.append(utterance)
    report.kept = len(kept)
    return kept, report


class SpeechDataset(torch.utils.data.Dataset):
    """Decodes audio and tokenizes the transcript per item, inside the loader's workers."""

    def __init__(self, utterances: Sequence[Utterance], processor: WhisperProcessor) -> None:
        self.utterances = list(utterances)
        self.processor = processor

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def durations(self) -> list[float]:
        """Seconds per utterance (from the manifest), for batching by length."""
        return [u.duration or 0.0 for u in self.utterances]

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        utterance = self.utterances[index]
        try:
            audio = load_audio(utterance.path)
        except DataError as exc:
            # A file that went bad after `prepare`: skip it in the collator, do not kill the round.
            logger.warning("skipping unreadable audio: %s", exc)
            return None
        return {"audio": audio, "labels": label_ids(self.processor, utterance.sentence)}


def log_mel(
    feature_extractor: WhisperFeatureExtractor, audios: Sequence[np.ndarray], samples: int
) -> np.ndarray:
    """Whisper's log-mel features of a batch, each waveform zero-padded to `samples`.

    Padding the waveform (not the spectrogram) gives exactly the features Whisper's own
    extractor gives at 30 s, only shorter: its normalization floor follows each utterance's
    loudest frame, so padded frames take each utterance's own floor value.
    """
    return feature_extractor(
        list(audios),
        sampling_rate=SAMPLE_RATE,
        padding="max_length",
        max_length=samples,
        return_tensors="np",
    ).input_features.astype(np.float32, copy=False)


def batch_features(
    feature_extractor: WhisperFeatureExtractor,
    audios: Sequence[np.ndarray],
    context: ContextMode,
    context_step_s: float,
) -> np.ndarray:
    """A batch's log-mel features at its context (context.py decides how long), for training
    and decoding alike."""
    samples = context_samples(
        max(len(a) for a in audios),
        context,
        context_step_s,
        full=int(feature_extractor.n_samples),
    )
    return log_mel(feature_extractor, audios, samples)


@dataclass
class SpeechCollator:
    """Computes a batch's features at its context and builds decoder inputs and labels.

    decoder_input_ids = ids[:-1] and labels = ids[1:]: the same shift the model would do itself,
    done here because the loss is computed outside the model (see train.token_mean_loss).
    """

    feature_extractor: WhisperFeatureExtractor
    pad_token_id: int
    context: ContextMode
    context_step_s: float

    def __call__(self, items: list[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        items = [item for item in items if item is not None]
        if not items:
            raise DataError(
                "a whole batch of audio files was unreadable; run `pefty prepare` again"
            )
        audios = [item["audio"] for item in items]
        features = torch.from_numpy(
            batch_features(self.feature_extractor, audios, self.context, self.context_step_s)
        )
        longest = max(len(item["labels"]) for item in items) - 1
        decoder_input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), longest), -100, dtype=torch.long)
        for row, item in enumerate(items):
            ids = torch.tensor(item["labels"], dtype=torch.long)
            decoder_input_ids[row, : len(ids) - 1] = ids[:-1]
            labels[row, : len(ids) - 1] = ids[1:]
        return {
            "input_features": features,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
        }
