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
from pefty_whisper.errors import ModelError

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import (
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

logger = logging.getLogger(__name__)

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken"]


def resolve_model_dir(name_or_path: str | Path, root: Path | None = None) -> Path:
    """A local model directory for `name_or_path`: itself, or the hub snapshot of a model id.

    Every later step (hashing, merging, exporting) works on files, so hub ids are resolved once
    here; offline, a model id works only if it is already in the Hugging Face cache.
    """
    candidate = Path(name_or_path)
    if not candidate.is_absolute() and root is not None:
        candidate = root / candidate
    if candidate.exists():
        return check_model_dir(candidate)
    text = str(name_or_path)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise ModelError(f"{candidate}: model directory not found")
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(text, allow_patterns=HUB_FILES)
    except Exception as exc:  # the hub raises many types: offline, gated, missing
        raise ModelError(
            f"{text}: not a local directory and not downloadable from the Hugging Face hub "
            f"({type(exc).__name__}); pass a local model directory"
        ) from exc
    return check_model_dir(Path(snapshot))


def check_model_dir(path: Path) -> Path:
    """Fail early, with the way out, on directories that are not a Whisper checkpoint."""
    if (path / "adapter_config.json").is_file():
        raise ModelError(f"{path} holds a LoRA adapter, not a model: run `pefty merge` first")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path}: no config.json, so not a transformers model directory")
    if not any(path.glob(pattern) for pattern in WEIGHT_PATTERNS):
        raise ModelError(f"{path}: config.json but no weights (*.safetensors)")
    return path


def load_processor(model_dir: Path, language: str, task: str) -> WhisperProcessor:
    """Processor whose tokenizer writes the `<|ko|><|transcribe|><|notimestamps|>` prefix."""
    from transformers import WhisperConfig, WhisperProcessor

    processor = WhisperProcessor.from_pretrained(model_dir)
    n_mels = WhisperConfig.from_pretrained(model_dir).num_mel_bins
    processor.feature_extractor = with_mel_bins(processor.feature_extractor, n_mels, model_dir)
    processor.tokenizer.set_prefix_tokens(language=language, task=task, predict_timestamps=False)
    return processor


def with_mel_bins(
    extractor: WhisperFeatureExtractor, n_mels: int | None, model_dir: Path
) -> WhisperFeatureExtractor:
    """The feature extractor at the model's mel bins (80, or 128 for large-v3 and turbo).

    A processor saved from another size would feed 80 bins to a 128-bin model (a shape error
    deep in the encoder) or the reverse; the filters depend only on the bin count, so rebuild.
    """
    from transformers import WhisperFeatureExtractor

    if n_mels is None or extractor.feature_size == n_mels:
        return extractor
    logger.warning(
        "%s: the feature extractor has %d mel bins but the model takes %d; using %d",
        model_dir,
        extractor.feature_size,
        n_mels,
        n_mels,
    )
    return WhisperFeatureExtractor(
        feature_size=n_mels,
        sampling_rate=extractor.sampling_rate,
        hop_length=extractor.hop_length,
        chunk_length=extractor.chunk_length,
        n_fft=extractor.n_fft,
    )


def training_device() -> torch.device:
    """This process's device: its own GPU under a launcher, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def compute_dtype(precision: Precision) -> torch.dtype:
    """fp32 on the CPU (no fast half kernels there); bf16 on GPUs that have it, else fp16."""
    if precision == "fp32" or (precision == "auto" and not torch.cuda.is_available()):
        return torch.float32
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def load_base_model(
    model_dir: Path, quant: QuantMode, precision: Precision
) -> WhisperForConditionalGeneration:
    """The frozen base of a round: LLM.int8, nf4 or plain, placed on this process's device."""
    from transformers import BitsAndBytesConfig, WhisperForConditionalGeneration

    dtype = compute_dtype(precision)
    device = training_device()
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
