"""The Seq2SeqTrainer a round runs and what pefty changes in it.

Validation decodes the way the Transcriber does (the encoder at the batch's context, its output
handed to `generate`), adapters are saved from DeepSpeed's fp32 master weights, the loss is the
token mean of the whole step, and training batches can be grouped by duration. transformers is
imported only when the class is built.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pefty_whisper.data.features import features_on_device

if TYPE_CHECKING:
    from transformers import Seq2SeqTrainer

logger = logging.getLogger(__name__)


@functools.cache
def round_trainer_class() -> type:
    """The Seq2SeqTrainer subclass of a round (built once: transformers is a heavy import)."""
    from transformers import Seq2SeqTrainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class RoundSeq2SeqTrainer(Seq2SeqTrainer):
        def __init__(self, *args: Any, group_by_duration: bool = False, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.group_by_duration = group_by_duration

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            # Batches of similar duration, so `model.context: auto` pads little. The Trainer's
            # own `group_by_length` would decode every utterance's audio once just to measure
            # it; the manifests already hold the durations.
            if not self.group_by_duration:
                return super()._get_train_sampler(train_dataset)
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=dataset.durations,
            )

        def _prepare_inputs(self, inputs: dict[str, Any]) -> dict[str, Any]:
            # A collator with `waveforms=True` (a GPU trains) sends audio: its log-mel is
            # computed here on the device, before inputs are cast to the training dtype.
            inputs = features_on_device(inputs, self.processing_class, self.args.device)
            return super()._prepare_inputs(inputs)

        def prediction_step(
            self,
            model: torch.nn.Module,
            inputs: dict[str, Any],
            prediction_loss_only: bool,
            ignore_keys: list[str] | None = None,
            **gen_kwargs: Any,
        ) -> Any:
            with generate_from_encoder_outputs(self.model):
                return super().prediction_step(
                    model, inputs, prediction_loss_only, ignore_keys=ignore_keys, **gen_kwargs
                )

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            """Under DeepSpeed, write the adapter from the fp32 masters, not the 16-bit copy.

            DeepSpeed trains a 16-bit copy of every parameter (LoRA included) and keeps the fp32
            masters in the optimizer; the Trainer would save the 16-bit copy, rounding every
            update smaller than bf16's 8 bits of mantissa away from the adapter that is merged.
            Gathering the masters is a collective: the Trainer's checkpoint saves call this on
            every rank; a save called on one rank of several keeps the 16-bit copy.
            """
            if not self.is_deepspeed_enabled:
                return super().save_model(output_dir, _internal_call)
            if not _internal_call and self.args.world_size > 1:
                logger.warning(
                    "adapter saved outside a checkpoint under %d processes: 16-bit weights",
                    self.args.world_size,
                )
                return super().save_model(output_dir, _internal_call)
            state = fp32_trainable_state(self.model)
            self._save(output_dir or self.args.output_dir, state_dict=state)

    return RoundSeq2SeqTrainer


def token_mean_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross-entropy summed over label tokens, divided by the tokens of the whole step.

    Whisper's own loss is a per-batch mean that ignores `num_items_in_batch`, while the Trainer
    believes the model normalized by it and multiplies by the process count; the logged loss and
    the gradients then grow with the number of processes (exactly 2x at two). Normalizing here
    by the step's token count (across processes and accumulation steps) makes the loss mean the
    same at any process count.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    total = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.to(logits.device).reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    if num_items_in_batch is None:
        num_items_in_batch = labels.ne(-100).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


def fp32_trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter at fp32, from DeepSpeed's masters where it has them.

    A collective under ZeRO (each rank holds a slice of the masters): call on every rank.
    """
    from deepspeed.utils import safe_get_full_fp32_param

    state = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        master = safe_get_full_fp32_param(param)
        state[name] = (master if master is not None else param.detach()).float().cpu()
    return state


@contextlib.contextmanager
def generate_from_encoder_outputs(model: Any) -> Iterator[None]:
    """For its duration, `model.generate(input_features=...)` runs the encoder first.

    Whisper's `generate` zero-pads features shorter than 30 s back to 3000 frames, so at
    `model.context: auto` validation would score the model on inputs unlike training's (zeros
    are far above the log-mel floor that waveform padding gives) at the full 30 s cost. Given
    `encoder_outputs` instead, it decodes at the batch's context, as the Transcriber does. The
    features are cast to the encoder's dtype: `generate` runs without the training autocast.
    """
    generate = model.generate

    def encoded_generate(*args: Any, input_features: Any = None, **kwargs: Any) -> Any:
        if input_features is not None:
            kwargs["encoder_outputs"] = encode(model, input_features)
        return generate(*args, **kwargs)

    model.generate = encoded_generate
    try:
        yield
    finally:
        del model.generate


def encode(model: Any, input_features: torch.Tensor) -> Any:
    """The encoder's output for a batch of features, at their own length and in its dtype."""
    encoder = model.get_encoder()
    with torch.no_grad():
        return encoder(input_features.to(encoder.conv1.weight.dtype))


def best_of(trainer: Seq2SeqTrainer) -> tuple[float | None, int | None, Path | None]:
    """(best CER, its step, its checkpoint); no checkpoint means keep the final weights."""
    state = trainer.state
    if not state.best_model_checkpoint:
        return None, None, None
    best_checkpoint = Path(state.best_model_checkpoint)
    return state.best_metric, int(best_checkpoint.name.split("-")[-1]), best_checkpoint


def examples_seen(trainer: Seq2SeqTrainer) -> int:
    """Training examples (windows, when packed) the round has seen, over every rank."""
    args = trainer.args
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    return trainer.state.global_step * per_step * max(1, args.world_size)


def last_logged(trainer: Seq2SeqTrainer, key: str) -> float | None:
    """The last value of `key` the trainer logged (train_loss is logged once, at the end)."""
    values = [e[key] for e in trainer.state.log_history if key in e]
    return values[-1] if values else None
