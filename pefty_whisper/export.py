"""Deployment exports of a merged Whisper: CTranslate2 (faster-whisper) and ONNX (Optimum's layout).

Every export is checked before it is published: a probe set is decoded by the export and by the
PyTorch model it came from, through the same `Transcriber`, and the agreement is written into
`export.json` beside the model. Outputs are written to a temporary directory and renamed into
place, so a killed export never leaves a directory that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from pefty_whisper.data.audio import SAMPLE_RATE
from pefty_whisper.errors import ConfigError, DataError, ModelError
from pefty_whisper.files import atomic_directory, atomic_write_text, package_versions, weights_hash
from pefty_whisper.import_ct2 import write_preprocessor_config
from pefty_whisper.metrics import score_corpus
from pefty_whisper.transcribe import (
    ONNX_DECODER,
    ONNX_DECODER_WITH_PAST,
    ONNX_ENCODER,
    Transcriber,
    TranscriberOptions,
    detect_backend,
    load_feature_extractor,
)
from pefty_whisper.workspace import read_round_record

if TYPE_CHECKING:
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

logger = logging.getLogger(__name__)

EXPORT_RECORD = "export.json"
CT2_QUANTIZATIONS = (
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)
OnnxExporter = Literal["dynamo", "torchscript"]
# Short, fixed Korean sentences for the probe when espeak-ng is installed.
PROBE_SENTENCES = (
    "안녕하세요 오늘 날씨가 정말 좋네요",
    "내일 오후 세 시에 회의가 있습니다",
    "이 모델은 한국어 음성을 받아 적습니다",
)


@dataclass(frozen=True)
class ExportReport:
    """What an export wrote and how closely it agrees with PyTorch on the probe."""

    out_dir: Path
    format: str  # "ct2" or "onnx"
    quantization: str | None  # ct2: its quantization; onnx: "int8" or None (float32)
    probe_utterances: int
    identical_transcripts: int
    # CER in points of the exported transcripts scored against the PyTorch transcripts:
    # 0.0 when every transcript is the same.
    cer_difference: float | None
    max_abs_logit_diff: float | None  # onnx decoder logits vs PyTorch, where measured
    seconds: float
    max_abs_encoder_diff: float | None = None  # onnx encoder output vs PyTorch


def default_export_name(model_dir: Path, fmt: str, quantization: str | None) -> str:
    """`merged/round5` + ct2 + int8 -> `round5-ct2-int8`: the folder under exports/."""
    stem = Path(model_dir).resolve().name or "model"
    parts = [stem, fmt] + ([quantization] if quantization else [])
    return re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))


# --------------------------------------------------------------------------------------------
# CTranslate2
# --------------------------------------------------------------------------------------------


def export_ct2(
    model_dir: Path,
    out_dir: Path,
    quantization: str = "int8",
    probe_audio: Sequence[np.ndarray] | None = None,
    force: bool = False,
    probe_options: TranscriberOptions | None = None,
) -> ExportReport:
    """A CTranslate2 model directory that faster-whisper and `ctranslate2.models.Whisper` load.

    Beside model.bin it holds the tokenizer, preprocessor_config.json (which CTranslate2 and
    faster-whisper read; transformers 5 no longer writes it) and the generation config, whose
    language and task the Transcriber uses for the prompt.
    """
    import ctranslate2

    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if quantization not in CT2_QUANTIZATIONS:
        raise ConfigError(
            f"unknown CTranslate2 quantization {quantization!r}: use one of "
            f"{', '.join(CT2_QUANTIZATIONS)}"
        )
    config = _check_source(model_dir, out_dir, force)
    probe, probe_kind = _probe_or_default(probe_audio)
    options = probe_options or TranscriberOptions()
    with atomic_directory(out_dir, force=force) as tmp:
        logger.info("converting %s to CTranslate2 (%s)", model_dir, quantization)
        converter = ctranslate2.converters.TransformersConverter(str(model_dir))
        converter.convert(str(tmp), quantization=quantization, force=True)
        _write_processor_files(model_dir, tmp)
        exported = replace(
            options,
            backend="ct2",
            compute_type=_probe_compute_type(quantization, options.device),
        )
        lossless = exported.compute_type == "float32"
        check = _compare_with_torch(model_dir, tmp, probe, options, exported, lossless)
        report = _finish(
            tmp, out_dir, "ct2", quantization, model_dir, config, check, probe_kind, started
        )
    logger.info("CTranslate2 export written to %s", out_dir)
    return report


def _probe_compute_type(quantization: str, device: str) -> str:
    """The compute type the probe decodes an export with: its own, where the device has it.

    On the CPU, CTranslate2 has no float16/bfloat16 kernels: those exports are probed in float32,
    int8 mixtures in plain int8.
    """
    on_cpu = device == "cpu" or (device == "auto" and not _ct2_has_cuda())
    if not on_cpu:
        return quantization
    if quantization.startswith("int8"):
        return "int8"
    if quantization in ("float16", "bfloat16"):
        return "float32"
    return quantization


def _ct2_has_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


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
    config = _check_source(model_dir, out_dir, force)
    probe, probe_kind = _probe_or_default(probe_audio)
    options = probe_options or TranscriberOptions()
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
        _write_processor_files(model_dir, tmp, copy_model_config=True)
        exported = replace(options, backend="onnx", compute_type="auto")
        check = _compare_with_torch(model_dir, tmp, probe, options, exported, not quantize_int8)
        check.update(_onnx_logit_parity(model, tmp, probe, check, feature_extractor))
        check["exporter"] = exporter
        report = _finish(
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


# --------------------------------------------------------------------------------------------
# Shared: source checks, processor files, probe, parity record
# --------------------------------------------------------------------------------------------


def _check_source(model_dir: Path, out_dir: Path, force: bool) -> dict[str, Any]:
    """Refuse what cannot be exported, before any work; returns the model's config.json."""
    backend = detect_backend(model_dir)  # adapter and non-model dirs fail here, with the way out
    if backend != "torch":
        raise ModelError(
            f"{model_dir} is already a {backend} export: export from the merged transformers "
            "model it came from (merged/roundN)"
        )
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "whisper":
        raise ModelError(
            f"{model_dir} holds a {config.get('model_type', 'unknown')!r} model, not Whisper"
        )
    if out_dir.exists() and not force:  # say so before minutes of work, not after
        raise ModelError(f"{out_dir} already exists: pass --force to replace it")
    if out_dir.resolve() == model_dir.resolve():
        raise ModelError(f"{out_dir}: an export cannot replace the model it is made from")
    return config


def _write_processor_files(model_dir: Path, out_dir: Path, copy_model_config: bool = False) -> None:
    """Tokenizer, processor and generation config beside the exported weights.

    preprocessor_config.json is what CTranslate2 and faster-whisper read; generation_config.json
    carries the language and task the Transcriber puts in the prompt. A CTranslate2 directory
    keeps its own config.json, so the transformers one is copied for ONNX only.
    """
    from transformers import WhisperProcessor, WhisperTokenizer

    extractor = load_feature_extractor(model_dir)
    tokenizer = WhisperTokenizer.from_pretrained(model_dir)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    write_preprocessor_config(out_dir, extractor)
    names = ["generation_config.json"] + (["config.json"] if copy_model_config else [])
    for name in names:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)


def _probe_or_default(
    probe_audio: Sequence[np.ndarray] | None,
) -> tuple[list[np.ndarray], str]:
    if probe_audio is not None:
        probe = [np.asarray(a, dtype=np.float32) for a in probe_audio]
        if not probe:
            raise DataError("probe_audio is empty: pass at least one waveform, or None")
        return probe, "given"
    return synthesize_probe()


def synthesize_probe() -> tuple[list[np.ndarray], str]:
    """A small deterministic probe: espeak-ng Korean sentences if installed, else tones."""
    if shutil.which("espeak-ng"):
        from pefty_whisper.data.sample_corpus import Voice, synthesize

        try:
            return [synthesize(s, Voice("ko", 150, 50)) for s in PROBE_SENTENCES], "espeak-ng"
        except DataError as exc:
            logger.warning("espeak-ng probe failed (%s); probing with tones", exc)
    return _tone_probe(), "tones"


def _tone_probe() -> list[np.ndarray]:
    # Vowel-like harmonic tones with a gliding pitch and a little noise, 1.5 to 4.5 s long.
    rng = np.random.default_rng(0)
    clips = []
    for seconds, pitch in ((1.5, 120.0), (3.0, 180.0), (4.5, 240.0)):
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        phase = 2 * np.pi * np.cumsum(pitch * (1 + 0.1 * np.sin(2 * np.pi * 2 * t))) / SAMPLE_RATE
        voice = sum(np.sin(k * phase) / k for k in range(1, 6))
        clip = 0.1 * voice * np.hanning(len(t)) + 0.005 * rng.standard_normal(len(t))
        clips.append(clip.astype(np.float32))
    return clips


def _compare_with_torch(
    model_dir: Path,
    export_dir: Path,
    probe: list[np.ndarray],
    torch_options: TranscriberOptions,
    export_options: TranscriberOptions,
    lossless: bool,
) -> dict[str, Any]:
    """Decode the probe with PyTorch and with the export, through the same Transcriber code."""
    reference = Transcriber(model_dir, replace(torch_options, backend="torch", compute_type="auto"))
    torch_tokens = reference.transcribe_tokens(probe)
    torch_texts = [reference.detokenize(t) for t in torch_tokens]
    # Without a configured language the prompt is only for the logit check: any language will do.
    prompt = reference.prompt_ids(reference.language or "en")
    del reference
    exported = Transcriber(export_dir, export_options)
    export_tokens = exported.transcribe_tokens(probe)
    export_texts = [exported.detokenize(t) for t in export_tokens]
    identical = sum(a == b for a, b in zip(torch_texts, export_texts, strict=True))
    cer = score_corpus(torch_texts, export_texts).cer
    if identical < len(probe):
        # Expected of a quantized export; a float32 export should match PyTorch exactly.
        (logger.warning if lossless else logger.info)(
            "export differs from PyTorch on %d of %d probe utterances (CER %.2f vs PyTorch)",
            len(probe) - identical,
            len(probe),
            cer,
        )
    return {
        "prompt": prompt,
        "language": exported.language,
        "compute_type": export_options.compute_type,
        "max_new_tokens": torch_options.max_new_tokens,
        "torch_tokens": torch_tokens,
        "torch": torch_texts,
        "exported": export_texts,
        "identical_transcripts": identical,
        "identical_tokens": sum(a == b for a, b in zip(torch_tokens, export_tokens, strict=True)),
        "cer_difference": cer,
    }


def _finish(
    tmp: Path,
    out_dir: Path,
    fmt: str,
    quantization: str | None,
    model_dir: Path,
    config: dict[str, Any],
    check: dict[str, Any],
    probe_kind: str,
    started: float,
) -> ExportReport:
    """Write export.json (the parity record) into the export and build the report."""
    seconds = time.perf_counter() - started
    lineage = read_round_record(model_dir) or {}
    record = {
        "format": fmt,
        "quantization": quantization,
        "source": str(model_dir.resolve()),
        "source_weights": weights_hash(model_dir),
        "source_round": lineage.get("round"),
        "language": check["language"],
        "task": _generation_task(model_dir),
        "n_mels": config.get("num_mel_bins"),
        "probe": {
            "kind": probe_kind,
            "utterances": len(check["torch"]),
            "max_new_tokens": check["max_new_tokens"],
            "compute_type": check["compute_type"],
            "identical_transcripts": check["identical_transcripts"],
            "identical_tokens": check["identical_tokens"],
            "cer_difference": check["cer_difference"],
            "torch": check["torch"],
            "exported": check["exported"],
        },
        "parity": {
            "encoder_max_abs_diff": check.get("encoder_max_abs_diff"),
            "decoder_max_abs_logit_diff": check.get("decoder_max_abs_logit_diff"),
        },
        "exporter": check.get("exporter", "ctranslate2" if fmt == "ct2" else None),
        "files": sorted(p.name for p in tmp.iterdir()) + [EXPORT_RECORD],
        "packages": package_versions("ctranslate2", "onnx", "onnxruntime", "onnxscript"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 2),
    }
    atomic_write_text(tmp / EXPORT_RECORD, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return ExportReport(
        out_dir=out_dir,
        format=fmt,
        quantization=quantization,
        probe_utterances=len(check["torch"]),
        identical_transcripts=check["identical_transcripts"],
        cer_difference=check["cer_difference"],
        max_abs_logit_diff=check.get("decoder_max_abs_logit_diff"),
        seconds=seconds,
        max_abs_encoder_diff=check.get("encoder_max_abs_diff"),
    )


def _generation_task(model_dir: Path) -> str | None:
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8")).get("task")


def read_export_record(export_dir: Path) -> dict[str, Any] | None:
    """export.json of an export directory, or None (an export made elsewhere)."""
    path = Path(export_dir) / EXPORT_RECORD
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))
