"""Training examples: audio decoded and log-mel features computed on the fly, labels, batches.

Features are never cached: an 80x3000 float array is about 1 MB per utterance, over 100 GB for
one KsponSpeech part. The loader's workers decode audio and the collator (which runs in those
workers too) computes a whole batch's features at the batch's context (see context.py). Where a
GPU trains, the collator sends the padded waveforms instead and the trainer computes the log-mel
on the GPU (`features_on_device`): forked workers cannot use CUDA, and the GPU does in
microseconds what costs a worker most of its time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pefty_whisper.data.audio import SAMPLE_RATE, load_audio, probe_audio
from pefty_whisper.data.table import Utterance, UtteranceTable
from pefty_whisper.errors import DataError
from pefty_whisper.whisper.context import ContextMode, context_samples

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor, WhisperProcessor

    from pefty_whisper.data.augment import LoaderAugment

logger = logging.getLogger(__name__)

FILTER_CHUNK = 4096  # sentences tokenized at once
MAX_DEFAULT_WORKERS = 8


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
) -> tuple[UtteranceTable, FilterReport]:
    """Drop (and count) what Whisper cannot train on, before the first step rather than mid-run.

    Tokenizes a chunk at a time, so a 124,000-row set never holds every label list at once.
    """
    table = UtteranceTable.from_utterances(utterances)
    report = FilterReport()
    keep = np.zeros(len(table), dtype=bool)
    durations = table.durations.tolist()  # NaN where the manifest has none
    for start in range(0, len(table), FILTER_CHUNK):
        stop = min(start + FILTER_CHUNK, len(table))
        label_lists = processor.tokenizer(table.sentences.slice(start, stop)).input_ids
        for index, ids in zip(range(start, stop), label_lists, strict=True):
            duration = durations[index]
            if duration != duration:  # NaN: probe the file
                try:
                    duration = probe_audio(table.path(index)).duration_s
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
            keep[index] = True
    kept = table if keep.all() else table.take(np.flatnonzero(keep))
    report.kept = len(kept)
    return kept, report


def default_num_workers(cpus: int | None = None, processes_per_node: int | None = None) -> int:
    """Loader workers per training process when `data.num_workers` is not set.

    The CPUs but one per training process (its own loop), shared among the node's training
    processes, at most 8 each (docs/benchmarks.md: what one worker feeds).
    """
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if processes_per_node is None:
        # torchrun sets LOCAL_WORLD_SIZE, the deepspeed launcher LOCAL_SIZE
        local = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or "1"
        processes_per_node = int(local)
    processes = max(1, processes_per_node)
    spare = max(0, (cpus or 1) - processes)
    return max(1, min(MAX_DEFAULT_WORKERS, spare // processes))


def resolve_num_workers(configured: int | None) -> int:
    """`data.num_workers` as the loader takes it: the configured count, or the CPU-based one."""
    return default_num_workers() if configured is None else configured


class SpeechDataset(torch.utils.data.Dataset):
    """Decodes audio and tokenizes the transcript per item, inside the loader's workers.

    The utterances are held as an UtteranceTable, so forked workers share them (table.py).
    """

    def __init__(self, utterances: Sequence[Utterance], processor: WhisperProcessor) -> None:
        self.utterances = UtteranceTable.from_utterances(utterances)
        self.processor = processor
        # A training set's waveform augmentation (train/augmentation.py attaches it), per row.
        self.augment: LoaderAugment | None = None

    def __len__(self) -> int:
        return len(self.utterances)

    @property
    def durations(self) -> list[float]:
        """Seconds per utterance (from the manifest), for batching by length."""
        return self.utterances.durations_or_zero().tolist()

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            audio = load_audio(self.utterances.path(index), *self.utterances.span(index))
        except DataError as exc:
            # A file that went bad after `prepare`: skip it in the collator, do not kill the round.
            logger.warning("skipping unreadable audio: %s", exc)
            return None
        if self.augment is not None:
            audio = self.augment(audio, index).audio
        sentence = self.utterances.sentence(index)
        return {"audio": audio, "labels": label_ids(self.processor, sentence)}


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


def padded_waveforms(
    feature_extractor: WhisperFeatureExtractor,
    audios: Sequence[np.ndarray],
    context: ContextMode,
    context_step_s: float,
) -> torch.Tensor:
    """A batch's waveforms zero-padded to its context, as `batch_features` pads them."""
    samples = context_samples(
        max(len(a) for a in audios), context, context_step_s, full=int(feature_extractor.n_samples)
    )
    batch = torch.zeros(len(audios), samples, dtype=torch.float32)
    for row, audio in enumerate(audios):
        length = min(len(audio), samples)
        batch[row, :length] = torch.from_numpy(np.asarray(audio[:length], dtype=np.float32))
    return batch


def log_mel_torch(
    feature_extractor: WhisperFeatureExtractor, waveforms: torch.Tensor
) -> torch.Tensor:
    """Whisper's log-mel of padded waveforms (batch, samples) on their own device (a GPU).

    The extractor's own torch computation, batched, with each utterance's floor at its loudest
    frame minus 8 as in `log_mel`; on the CPU it equals `batch_features` (a test checks it).
    """
    fe = feature_extractor
    device = waveforms.device
    waveforms = waveforms.to(torch.float32)
    if fe.dither:
        waveforms = waveforms + fe.dither * torch.randn_like(waveforms)
    window = torch.hann_window(fe.n_fft, device=device)
    stft = torch.stft(waveforms, fe.n_fft, fe.hop_length, window=window, return_complex=True)
    magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
    mel_filters = torch.from_numpy(fe.mel_filters).to(device, torch.float32)
    log_spec = torch.clamp(mel_filters.T @ magnitudes, min=1e-10).log10()
    floor = log_spec.amax(dim=(1, 2), keepdim=True) - 8.0
    return (torch.maximum(log_spec, floor) + 4.0) / 4.0


def features_on_device(
    inputs: dict[str, Any], feature_extractor: WhisperFeatureExtractor, device: torch.device
) -> dict[str, Any]:
    """Turn a batch's `input_audio` (from a collator with `waveforms=True`) into
    `input_features` computed on `device`; a batch that has features passes unchanged.

    Called by the trainer in the training process, where the GPU is (forked loader workers
    cannot use CUDA), before inputs are cast to the training dtype.
    """
    if "input_audio" not in inputs:
        return inputs
    inputs = dict(inputs)
    audio = inputs.pop("input_audio").to(device, non_blocking=True)
    inputs["input_features"] = log_mel_torch(feature_extractor, audio)
    return inputs


def log_mel_on_gpu() -> bool:
    """Where a GPU trains, it computes the log-mel too: the workers then only decode audio."""
    return torch.cuda.is_available()


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
    # True: send padded waveforms (`input_audio`); the trainer computes the features on the GPU
    waveforms: bool = False

    def __call__(self, items: list[dict[str, Any] | None]) -> dict[str, torch.Tensor]:
        items = [item for item in items if item is not None]
        if not items:
            raise DataError(
                "a whole batch of audio files was unreadable; run `pefty prepare` again"
            )
        audios = [item["audio"] for item in items]
        args = (self.feature_extractor, audios, self.context, self.context_step_s)
        if self.waveforms:
            inputs = {"input_audio": padded_waveforms(*args)}
        else:
            inputs = {"input_features": torch.from_numpy(batch_features(*args))}
        pairs = [_decoder_pair(item) for item in items]
        longest = max(len(targets) for _, targets in pairs)
        decoder_input_ids = torch.full((len(items), longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), longest), -100, dtype=torch.long)
        for row, (reads, targets) in enumerate(pairs):
            decoder_input_ids[row, : len(reads)] = torch.tensor(reads, dtype=torch.long)
            labels[row, : len(targets)] = torch.tensor(targets, dtype=torch.long)
        return {
            **inputs,
            "decoder_input_ids": decoder_input_ids,
            "labels": labels,
        }


def _decoder_pair(item: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(decoder inputs, targets) of one example: the usual shift of its label ids, or the pair
    a packed window brings (a no-speech window reads the forced prompt but is taught the
    no-speech token after <|startoftranscript|>, data/packing.py)."""
    if "decoder_input_ids" in item:
        return item["decoder_input_ids"], item["labels"]
    ids = item["labels"]
    return ids[:-1], ids[1:]
