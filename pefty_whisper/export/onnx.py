"""ONNX export: encoder and decoder graphs in Optimum's layout, float32 or int8, for onnxruntime,
with the graphs' own parity figures (encoder output and decoder logits against PyTorch)."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.errors import ConfigError, ModelError
from pefty_whisper.export.common import check_source, require_export_extra, write_processor_files
from pefty_whisper.export.parity import (
    ExportReport,
    compare_with_torch,
    probe_or_default,
    write_export_record,
)
from pefty_whisper.files import atomic_directory
from pefty_whisper.inference import TranscriberOptions
from pefty_whisper.whisper.model_dir import ONNX_DECODER, ONNX_DECODER_WITH_PAST, ONNX_ENCODER
from pefty_whisper.whisper.processor import load_feature_extractor

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

__all__ = ["OnnxExporter", "export_onnx", "export_onnx_graphs", "quantize_onnx_graphs"]

logger = logging.getLogger(__name__)

OnnxExporter = Literal["dynamo", "torchscript"]


def export_onnx(
    model_dir: Path,
    out_dir: Path,
    quantize_int8: bool = False,
    probe_audio: Sequence[np.ndarray] | None = None,
    force: bool = False,
    probe_options: TranscriberOptions | None = None,
    exporter: OnnxExporter = "dynamo",
) -> ExportReport:
    """Optimum-named encoder_model.onnx, decoder_model.onnx and decoder_with_past_model.onnx.

    optimum-onnx pins transformers < 4.58, so the graphs are exported here with torch.onnx through
    small wrappers that take and return the key/value cache as plain tensors (transformers 5
    passes cache objects). `exporter="dynamo"` (torch.export, the supported exporter) writes
    tied weights once; "torchscript" (the legacy tracer) exports about ten times faster.
    With `quantize_int8`, the same file names hold dynamically quantized (int8) graphs.
    """
    from transformers import WhisperForConditionalGeneration

    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if exporter not in ("dynamo", "torchscript"):
        raise ConfigError(f"unknown ONNX exporter {exporter!r}: use dynamo or torchscript")
    needed = (
        ("onnx", "onnxruntime", "onnxscript") if exporter == "dynamo" else ("onnx", "onnxruntime")
    )
    require_export_extra(*needed, purpose="an ONNX export")
    config = check_source(model_dir, out_dir, force)
    probe, probe_kind = probe_or_default(probe_audio)
    # The ONNX encoder takes 30 s inputs only, so PyTorch is probed at the full context too:
    # otherwise the check would compare two different inputs.
    # The ONNX engine decodes greedily and has no timestamp path: probe both sides that way.
    options = replace(
        probe_options or TranscriberOptions(), context="full", beam_size=1, longform="chunked"
    )
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    feature_extractor = load_feature_extractor(model_dir)
    frames = int(feature_extractor.nb_max_frames)
    if frames != 2 * model.config.max_source_positions:
        raise ModelError(
            f"{model_dir}: the feature extractor makes {frames} frames but the encoder takes "
            f"{2 * model.config.max_source_positions}: preprocessor_config.json does not belong "
            "to this model"
        )
    quantization = "int8" if quantize_int8 else None
    with atomic_directory(out_dir, force=force) as tmp:
        graphs = tmp / ".float32" if quantize_int8 else tmp
        graphs.mkdir(exist_ok=True)
        logger.info("exporting %s to ONNX (%s exporter)", model_dir, exporter)
        export_onnx_graphs(model, graphs, frames, exporter)
        if quantize_int8:
            quantize_onnx_graphs(graphs, tmp)
            shutil.rmtree(graphs)
        write_processor_files(model_dir, tmp, copy_model_config=True)
        exported = replace(options, backend="onnx", compute_type="auto")
        check = compare_with_torch(model_dir, tmp, probe, options, exported, not quantize_int8)
        check.update(_onnx_logit_parity(model, tmp, probe, check, feature_extractor))
        check["exporter"] = exporter
        report = write_export_record(
            tmp, out_dir, "onnx", quantization, model_dir, config, check, probe_kind, started
        )
    logger.info("ONNX export written to %s", out_dir)
    return report


def export_onnx_graphs(
    model: WhisperForConditionalGeneration,
    out_dir: Path,
    frames: int,
    exporter: OnnxExporter = "dynamo",
) -> list[Path]:
    """The three Optimum-layout graphs of `model`, in float32, written into `out_dir`."""
    layers = model.config.decoder_layers
    batch = 2  # not 1: tracing must not mistake the batch dimension for a constant
    # Seeded, and not from the global generator: exporting must not shift anyone's random state.
    features = torch.randn(
        batch, model.config.num_mel_bins, frames, generator=torch.Generator().manual_seed(0)
    )
    start = model.generation_config.decoder_start_token_id
    prompt = torch.full((batch, 4), start, dtype=torch.long)
    encoder, decoder = _EncoderExport(model).eval(), _DecoderExport(model).eval()
    with_past = _DecoderWithPastExport(model).eval()
    with torch.no_grad():
        hidden = encoder(features)
        past = decoder(prompt, hidden)[1:]
    past_names = _past_input_names(layers)
    graphs = [
        _Graph(
            ONNX_ENCODER,
            encoder,
            (features,),
            ["input_features"],
            ["last_hidden_state"],
            {"input_features": {0: "batch_size"}, "last_hidden_state": {0: "batch_size"}},
        ),
        _Graph(
            ONNX_DECODER,
            decoder,
            (prompt, hidden),
            ["input_ids", "encoder_hidden_states"],
            ["logits", *_present_names(layers, encoder_too=True)],
            {
                "input_ids": {0: "batch_size", 1: "decoder_sequence_length"},
                "encoder_hidden_states": {0: "batch_size"},
            },
        ),
        _Graph(
            ONNX_DECODER_WITH_PAST,
            with_past,
            (prompt[:, :1], *past),
            ["input_ids", *past_names],
            ["logits", *_present_names(layers, encoder_too=False)],
            {
                "input_ids": {0: "batch_size"},
                **{
                    name: {0: "batch_size", 2: "past_decoder_sequence_length"}
                    if ".decoder." in name
                    else {0: "batch_size"}
                    for name in past_names
                },
            },
        ),
    ]
    paths = []
    for graph in graphs:
        started = time.perf_counter()
        path = out_dir / graph.file_name
        _export_graph(graph, path, exporter, model.config.max_target_positions)
        logger.info("  %s in %.1f s", graph.file_name, time.perf_counter() - started)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class _Graph:
    file_name: str
    module: Any
    args: tuple[Any, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic_axes: dict[str, dict[int, str]]  # axis names as Optimum uses them


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' chatter: per-node INFO logs and warnings that need no action.

    torch.export's ONNX passes and onnxruntime's quantizer log hundreds of INFO lines (the
    quantizer on the root logger, with a pre-processing hint at WARNING), and the tracer warns
    about every shape check it freezes (the input length check, the cache's emptiness test).
    Failures still raise; the exports are checked by decoding afterwards.
    """
    previous = logging.root.manager.disable
    # WARNING too: torch.export's registry warns on every export that torchvision is missing.
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def _export_graph(graph: _Graph, path: Path, exporter: OnnxExporter, max_positions: int) -> None:
    with _quiet_exporters(), torch.no_grad():
        if exporter == "torchscript":
            output_axes = _output_axes(graph)
            torch.onnx.export(
                graph.module,
                graph.args,
                str(path),
                input_names=graph.input_names,
                output_names=graph.output_names,
                dynamic_axes={**graph.dynamic_axes, **output_axes},
                opset_version=17,
                dynamo=False,
            )
            return
        torch.onnx.export(
            graph.module,
            graph.args,
            str(path),
            input_names=graph.input_names,
            output_names=graph.output_names,
            dynamic_shapes=_dynamic_shapes(graph, max_positions),
            dynamo=True,
            external_data=True,
            verbose=False,
        )


def _output_axes(graph: _Graph) -> dict[str, dict[int, str]]:
    """Output axis names for the tracer (torch.export infers them from the inputs)."""
    axes: dict[str, dict[int, str]] = {}
    for name in graph.output_names:
        if name == "last_hidden_state":
            axes[name] = {0: "batch_size"}
        elif name == "logits":
            axes[name] = {0: "batch_size", 1: "decoder_sequence_length"}
        elif ".decoder." in name and graph.file_name == ONNX_DECODER_WITH_PAST:
            axes[name] = {0: "batch_size", 2: "past_decoder_sequence_length + 1"}
        elif ".decoder." in name:
            axes[name] = {0: "batch_size", 2: "decoder_sequence_length"}
        else:
            axes[name] = {0: "batch_size"}
    return axes


def _dynamic_shapes(graph: _Graph, max_positions: int) -> tuple[Any, ...]:
    dims = {
        "batch_size": torch.export.Dim("batch_size"),
        "decoder_sequence_length": torch.export.Dim(
            "decoder_sequence_length", min=1, max=max_positions
        ),
        "past_decoder_sequence_length": torch.export.Dim(
            "past_decoder_sequence_length", min=1, max=max_positions - 1
        ),
    }
    shapes = [
        {axis: dims[label] for axis, label in graph.dynamic_axes.get(name, {}).items()}
        for name in graph.input_names
    ]
    if graph.file_name == ONNX_DECODER_WITH_PAST:
        # forward(input_ids, *past): the past tensors are one (variadic) argument to torch.export.
        return (shapes[0], tuple(shapes[1:]))
    return tuple(shapes)


def _past_input_names(layers: int) -> list[str]:
    return [
        f"past_key_values.{i}.{side}.{kind}"
        for i in range(layers)
        for side in ("decoder", "encoder")
        for kind in ("key", "value")
    ]


def _present_names(layers: int, encoder_too: bool) -> list[str]:
    sides = ("decoder", "encoder") if encoder_too else ("decoder",)
    return [
        f"present.{i}.{side}.{kind}"
        for i in range(layers)
        for side in sides
        for kind in ("key", "value")
    ]


class _EncoderExport(torch.nn.Module):
    """input_features -> last_hidden_state."""

    def __init__(self, model: WhisperForConditionalGeneration) -> None:
        super().__init__()
        self.encoder = model.model.encoder

    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_features).last_hidden_state


class _DecoderExport(torch.nn.Module):
    """input_ids, encoder_hidden_states -> logits and every layer's self/cross keys and values."""

    def __init__(self, model: WhisperForConditionalGeneration) -> None:
        super().__init__()
        self.decoder = model.model.decoder
        self.proj_out = model.proj_out

    def forward(
        self, input_ids: torch.Tensor, encoder_hidden_states: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        out = self.decoder(
            input_ids=input_ids, encoder_hidden_states=encoder_hidden_states, use_cache=True
        )
        cache = _returned_cache(out)
        outputs = [self.proj_out(out.last_hidden_state)]
        for own, cross in zip(
            cache.self_attention_cache.layers, cache.cross_attention_cache.layers, strict=True
        ):
            outputs += [own.keys, own.values, cross.keys, cross.values]
        return tuple(outputs)


class _DecoderWithPastExport(torch.nn.Module):
    """input_ids (one token), past keys/values -> logits, the grown self-attention keys/values.

    The cross-attention keys/values never change after the first step, so (as in Optimum) they
    are inputs only, and encoder_hidden_states is not an input at all.
    """

    def __init__(self, model: WhisperForConditionalGeneration) -> None:
        super().__init__()
        self.decoder = model.model.decoder
        self.proj_out = model.proj_out
        self.d_model = model.config.d_model

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        own = [(past[i], past[i + 1]) for i in range(0, len(past), 4)]
        cross = [(past[i + 2], past[i + 3]) for i in range(0, len(past), 4)]
        cache = EncoderDecoderCache(DynamicCache(own), DynamicCache(cross))
        # Cross attention reads its keys/values from the filled cache; the decoder only needs
        # a non-None encoder_hidden_states to run it, so this placeholder is never read.
        placeholder = torch.zeros(
            input_ids.shape[0], 1, self.d_model, dtype=past[0].dtype, device=past[0].device
        )
        out = self.decoder(
            input_ids=input_ids, encoder_hidden_states=placeholder, cache=cache, use_cache=True
        )
        outputs = [self.proj_out(out.last_hidden_state)]
        for layer in _returned_cache(out).self_attention_cache.layers:
            outputs += [layer.keys, layer.values]
        return tuple(outputs)


def _returned_cache(output: Any) -> Any:
    # transformers 5.2x renamed the output's `past_key_values` to `cache` (the old name warns).
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def quantize_onnx_graphs(src_dir: Path, out_dir: Path) -> list[Path]:
    """Dynamic int8 quantization of the three graphs, keeping their file names.

    Only MatMul/Gemm weights are quantized: onnxruntime's CPU provider has no int8 ConvInteger,
    and the encoder's two convolutions are a small share of the work.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    paths = []
    for name in (ONNX_ENCODER, ONNX_DECODER, ONNX_DECODER_WITH_PAST):
        started = time.perf_counter()
        with _quiet_exporters():
            quantize_dynamic(
                src_dir / name,
                out_dir / name,
                weight_type=QuantType.QInt8,
                op_types_to_quantize=["MatMul", "Gemm"],
                # Per-tensor scales, Optimum's default: per-channel quantizes 4-30x slower
                # (51,865 output channels in the vocabulary projection) and was no closer to
                # float32 on whisper-base's encoder (relative error 0.20 vs 0.14).
                per_channel=False,
                # Models over 2 GB (large-v3's encoder) cannot be one protobuf file.
                use_external_data_format=_onnx_size(src_dir, name) > 1_800_000_000,
            )
        logger.info("  quantized %s in %.1f s", name, time.perf_counter() - started)
        paths.append(out_dir / name)
    return paths


def _onnx_size(directory: Path, name: str) -> int:
    return sum(p.stat().st_size for p in directory.glob(f"{name}*"))


def _onnx_logit_parity(
    model: WhisperForConditionalGeneration,
    export_dir: Path,
    probe: Sequence[np.ndarray],
    check: dict[str, Any],
    feature_extractor: WhisperFeatureExtractor,
) -> dict[str, float]:
    """Max |ONNX - PyTorch| of the encoder output and the decoder logits on a probe utterance.

    The decoder is fed the prompt plus the first PyTorch tokens (teacher forcing), so the
    figure measures the graphs, not where two greedy searches part.
    """
    import onnxruntime

    encoder = onnxruntime.InferenceSession(
        str(export_dir / ONNX_ENCODER), providers=["CPUExecutionProvider"]
    )
    decoder = onnxruntime.InferenceSession(
        str(export_dir / ONNX_DECODER), providers=["CPUExecutionProvider"]
    )
    encoder_diff = logit_diff = 0.0
    # The first utterance is enough to check the graphs, and each costs two encoder passes.
    for audio, tokens in zip(probe[:1], check["torch_tokens"][:1], strict=True):
        features = feature_extractor(
            [audio], sampling_rate=SAMPLE_RATE, return_tensors="np"
        ).input_features.astype(np.float32)
        ids = np.asarray([check["prompt"] + tokens[:8]], dtype=np.int64)
        hidden = encoder.run(None, {"input_features": features})[0]
        logits = decoder.run(["logits"], {"input_ids": ids, "encoder_hidden_states": hidden})[0]
        with torch.inference_mode():
            expected_hidden = model.model.encoder(torch.from_numpy(features)).last_hidden_state
            expected = model(
                encoder_outputs=(expected_hidden,), decoder_input_ids=torch.from_numpy(ids)
            ).logits
        encoder_diff = max(encoder_diff, float(np.abs(hidden - expected_hidden.numpy()).max()))
        logit_diff = max(logit_diff, float(np.abs(logits - expected.numpy()).max()))
    return {"encoder_max_abs_diff": encoder_diff, "decoder_max_abs_logit_diff": logit_diff}
