"""Whisper loading: processor, base model at the chosen precision, language and task, LoRA.

Whisper's quirks live here, each with a one-line why, so train, merge, evaluate and export all
load models the same way.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pefty_whisper.config import LoraSection, ModelSection, Precision, QuantMode

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import (
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

logger = logging.getLogger(__name__)


def training_device() -> torch.device:
    """This process's device: its own GPU under a launcher, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def compute_dtype(precision: Precision) -> torch.dtype:
    """fp32 on the CPU (no fast half kernels there); bf16 on GPUs that have it, else fp16."""
    if precision == "fp32" or (precision == "auto" and not torch.cuda.is_available()):
        return torch.float32
    if precision == "bf16" or (precision == "auto" and has_native_bf16()):
        return torch.bfloat16
    return torch.float16


def has_native_bf16() -> bool:
    """bf16 in hardware: Ampere (sm80) and later, or ROCm.

    `torch.cuda.is_bf16_supported()` also says yes on T4, V100 and RTX 20xx, which only emulate
    bf16 (and cuDNN has no bf16 convolutions below sm80): slow, so `auto` gives them fp16.
    """
    if torch.version.hip:
        return True
    major, _ = torch.cuda.get_device_capability(training_device())
    return major >= 8


def load_base_model(
    model_dir: Path, quant: QuantMode, precision: Precision
) -> WhisperForConditionalGeneration:
    """The frozen base of a round: LLM.int8, nf4 or plain, placed on this process's device."""
    from transformers import BitsAndBytesConfig, WhisperForConditionalGeneration

    dtype = compute_dtype(precision)
    device = training_device()
    if device.type == "cuda":
        # Each rank's CUDA context, bitsandbytes' quantization and NCCL use the current device,
        # which is GPU 0 until set: every rank would put a context (and work) on GPU 0.
        torch.cuda.set_device(device)
    kwargs: dict = {"dtype": dtype}
    if quant == "8bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    elif quant == "4bit":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
            # Storing nf4 in the compute dtype lets ZeRO-3 shard the packed weights.
            bnb_4bit_quant_storage=dtype,
        )
    if quant == "8bit":
        # LLM.int8 quantizes activations in fp16; on the CPU (fp32 compute) bitsandbytes logs
        # that cast on every matmul, which would bury the training log.
        logging.getLogger("bitsandbytes.autograd._functions").addFilter(_drop_int8_cast_notice)
        free_unused_int8_inputs()
    if quant != "none":
        # One full copy per process, on that process's device (also under a launcher).
        kwargs["device_map"] = {"": device}
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, **kwargs)
    if quant == "none":
        model.to(device)
    logger.info(
        "loaded %s (%s, %s) on %s", model_dir, quant, str(dtype).removeprefix("torch."), device
    )
    return model


def _drop_int8_cast_notice(record: logging.LogRecord) -> bool:
    return "inputs will be cast from" not in record.getMessage()


def free_unused_int8_inputs() -> None:
    """Stop bitsandbytes' int8 matmuls from holding every 8-bit linear's input until backward.

    `MatMul8bitLt` (GPU) and `MatMul8bitFp` (CPU training) keep their input, and its outlier
    columns, as attributes of the autograd context, where gradient checkpointing cannot reach
    them; only the weight's gradient reads them, and int8 weights have none. So checkpointing
    freed nothing for 8-bit layers (about 14 bytes per frame and d_model per encoder layer at
    16 bits). Dropping them after the forward leaves backward bit-identical. Process-wide and
    idempotent: bitsandbytes' `matmul` looks both classes up in its module at every call.
    """
    from bitsandbytes.autograd import _functions as functions

    if getattr(functions, "_pefty_frees_unused_inputs", False):
        return
    lt, fp = functions.MatMul8bitLt, functions.MatMul8bitFp

    class MatMul8bitLtFreeingInput(lt):
        @staticmethod
        def forward(ctx, A, B, out=None, bias=None, state=None):  # noqa: N803 - upstream names
            output = lt.forward(ctx, A, B, out, bias, state)
            if not ctx.needs_input_grad[1] and not ctx.is_empty:
                ctx.tensors = (ctx.tensors[0], None, None)  # (CAt, subA, A): subA, A unread
            return output

    class MatMul8bitFpFreeingInput(fp):
        @staticmethod
        def forward(ctx, A, B, out=None, bias=None, state=None):  # noqa: N803 - upstream names
            output = fp.forward(ctx, A, B, out, bias, state)
            if not ctx.needs_input_grad[1]:
                ctx.A = None
            return output

    functions.MatMul8bitLt = MatMul8bitLtFreeingInput
    functions.MatMul8bitFp = MatMul8bitFpFreeingInput
    functions._pefty_frees_unused_inputs = True


def enforce_language(
    model: WhisperForConditionalGeneration, processor: WhisperProcessor, model_section: ModelSection
) -> None:
    """Decode Korean transcription without being told, now and after any later load.

    The generation config's `language`/`task` replace the deprecated `forced_decoder_ids`, which
    would otherwise fight them; the tokenizer writes the same prefix into the labels.
    """
    generation = model.generation_config
    generation.language = model_section.language
    generation.task = model_section.task
    generation.forced_decoder_ids = None
    model.config.forced_decoder_ids = None
    processor.tokenizer.set_prefix_tokens(
        language=model_section.language, task=model_section.task, predict_timestamps=False
    )


def attach_lora(
    model: WhisperForConditionalGeneration, lora: LoraSection, gradient_checkpointing: bool
) -> PeftModel:
    """Wrap the frozen base with trainable LoRA matrices (kept in fp32 for stable updates)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    # Non-reentrant checkpointing: the reentrant kind fails under DDP ("mark a variable ready
    # only once") and needs every checkpointed input to require grad.
    checkpointing_kwargs = {"use_reentrant": False}
    # peft and transformers 5 still call the renamed gradient_checkpointing_* methods themselves.
    warnings.filterwarnings(
        "ignore", message=".*gradient_checkpointing.*deprecated", category=FutureWarning
    )
    if getattr(model, "is_loaded_in_8bit", False) or getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=checkpointing_kwargs,
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing_kwargs)
    if gradient_checkpointing:
        # The encoder's input is the mel spectrogram, which never requires grad; without this
        # hook a checkpointed encoder with frozen conv layers gives LoRA no gradient.
        model.model.encoder.conv1.register_forward_hook(_make_output_require_grad)
        model.config.use_cache = False
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    peft_model.register_state_dict_post_hook(_drop_frozen_tied_aliases)
    return peft_model


def _drop_frozen_tied_aliases(
    module: torch.nn.Module, state_dict: dict, prefix: str, local_metadata: object
) -> None:
    """Keep the frozen vocabulary matrix out of every DeepSpeed checkpoint.

    DeepSpeed leaves frozen parameters out of its checkpoints by name, but Whisper's output
    projection is tied to the token embedding: the same frozen 51865 x d_model matrix also
    appears as `proj_out.weight`, a name `named_parameters()` never lists, and would be saved
    at every checkpoint (265 MB for large-v3). Drop such aliases; the base model has them.
    """
    named = {prefix + name for name, _ in module.named_parameters()}
    frozen = {p.data_ptr() for p in module.parameters() if not p.requires_grad}
    for key in [k for k, v in state_dict.items() if k not in named and torch.is_tensor(v)]:
        if state_dict[key].data_ptr() in frozen:
            del state_dict[key]


def _make_output_require_grad(
    module: torch.nn.Module, inputs: object, output: torch.Tensor
) -> None:
    output.requires_grad_(True)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; int8 weights count as one parameter each."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
