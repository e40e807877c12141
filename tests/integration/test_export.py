"""CTranslate2 and ONNX exports of tiny random Whispers, checked against PyTorch.

A random model talks until its length limit, so every decode here is capped at a few new tokens;
the exports must still produce the PyTorch tokens one for one (float32), load in faster-whisper
and onnxruntime, and record their agreement in export.json.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile
from fixtures import clip, save_tiny_whisper

from pefty_whisper.errors import ConfigError, ModelError
from pefty_whisper.export import (
    default_export_name,
    export_ct2,
    export_onnx,
)
from pefty_whisper.files import weights_hash
from pefty_whisper.inference import Transcriber, TranscriberOptions
from pefty_whisper.whisper.ct2_file import Ct2ModelFile
from pefty_whisper.workspace import ExportRecord

EXTRA = "pip install 'pefty-whisper[export]'"
pytest.importorskip("ctranslate2", reason=EXTRA)
onnx = pytest.importorskip("onnx", reason=EXTRA)
onnxruntime = pytest.importorskip("onnxruntime", reason=EXTRA)

RATE = 16_000
MAX_NEW_TOKENS = 12
# One thread: the models are tiny, and on a shared test machine threads only contend.
OPTIONS = TranscriberOptions(
    max_new_tokens=MAX_NEW_TOKENS, batch_size=4, device="cpu", num_threads=1
)
ONNX_FILES = ("encoder_model.onnx", "decoder_model.onnx", "decoder_with_past_model.onnx")


pytestmark = pytest.mark.usefixtures("restore_torch_threads")


@pytest.fixture(scope="module")
def probe() -> list[np.ndarray]:
    return [clip(1.0, 150, 0), clip(2.5, 220, 1), clip(4.0, 330, 2)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("merged") / "round5", seed=3)


@pytest.fixture(scope="module")
def ct2_float32(tiny: Path, probe: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("exports") / "round5-ct2-float32"
    return export_ct2(tiny, out, "float32", probe_audio=probe, probe_options=OPTIONS)


@pytest.fixture(scope="module")
def onnx_float32(tiny: Path, probe: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("exports") / "round5-onnx"
    return export_onnx(tiny, out, probe_audio=probe, probe_options=OPTIONS)


def record(export_dir: Path) -> dict:
    return ExportRecord.read(export_dir).to_dict()


def test_ct2_float32_export_decodes_exactly_like_torch(
    tiny: Path, ct2_float32, probe: list[np.ndarray]
) -> None:
    report = ct2_float32
    assert (report.format, report.quantization) == ("ct2", "float32")
    assert report.probe_utterances == report.identical_transcripts == len(probe)
    assert report.cer_difference == 0.0
    # Token level, and with the same length limit: CTranslate2 counts max_length differently
    # (it generates max_length // 2), which the Transcriber hides.
    torch_tokens = Transcriber(tiny, replace(OPTIONS, backend="torch")).transcribe_tokens(probe)
    exported = Transcriber(report.out_dir, replace(OPTIONS, compute_type="float32"))
    assert exported.backend == "ct2"
    assert exported.transcribe_tokens(probe) == torch_tokens
    assert max(len(tokens) for tokens in torch_tokens) == MAX_NEW_TOKENS


def test_ct2_export_loads_in_faster_whisper(ct2_float32, tmp_path: Path) -> None:
    WhisperModel = pytest.importorskip("faster_whisper", reason=EXTRA).WhisperModel

    wav = tmp_path / "probe.wav"
    soundfile.write(wav, clip(3.0, 200, 5), RATE, subtype="PCM_16")
    model = WhisperModel(str(ct2_float32.out_dir), device="cpu", compute_type="float32")
    segments, info = model.transcribe(
        str(wav),
        language="ko",
        beam_size=1,
        temperature=0.0,
        max_new_tokens=MAX_NEW_TOKENS,
        without_timestamps=True,
        condition_on_previous_text=False,
        compression_ratio_threshold=None,
        log_prob_threshold=None,
        no_speech_threshold=None,
    )
    texts = [segment.text for segment in segments]  # decoding happens while iterating
    assert info.language == "ko"
    assert texts and all(isinstance(text, str) for text in texts)


def test_export_json_records_lineage_and_agreement(tiny: Path, ct2_float32) -> None:
    data = record(ct2_float32.out_dir)
    assert data["format"] == "ct2" and data["quantization"] == "float32"
    assert data["source"] == str(tiny.resolve())
    assert data["source_weights"] == weights_hash(tiny)
    assert (data["language"], data["task"], data["n_mels"]) == ("ko", "transcribe", 80)
    probe = data["probe"]
    assert probe["utterances"] == 3 and probe["identical_transcripts"] == 3
    assert probe["identical_tokens"] == 3 and probe["cer_difference"] == 0.0
    assert probe["torch"] == probe["exported"]
    assert probe["max_new_tokens"] == MAX_NEW_TOKENS and probe["kind"] == "given"
    for name in ("model.bin", "tokenizer.json", "preprocessor_config.json", "export.json"):
        assert name in data["files"] and (ct2_float32.out_dir / name).is_file()
    # The language the Transcriber prompts with travels in the export's generation config.
    generation = json.loads((ct2_float32.out_dir / "generation_config.json").read_text())
    assert (generation["language"], generation["task"]) == ("ko", "transcribe")
    assert data["packages"]["ctranslate2"]
    # No temporary directory is left beside the export.
    assert [p.name for p in ct2_float32.out_dir.parent.iterdir()] == [ct2_float32.out_dir.name]


def test_ct2_int8_export_records_a_cer_difference_and_force_replaces(
    tiny: Path, probe: list[np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "round5-ct2-int8"
    out.mkdir()
    (out / "stale.txt").write_text("an older export")
    report = export_ct2(tiny, out, "int8", probe_audio=probe, force=True, probe_options=OPTIONS)
    assert not (out / "stale.txt").exists()
    assert report.quantization == "int8"
    assert report.cer_difference is not None and report.cer_difference >= 0.0
    assert Ct2ModelFile(report.out_dir / "model.bin").weight_dtype() == "int8"
    data = record(report.out_dir)
    assert data["probe"]["cer_difference"] == report.cer_difference
    assert data["probe"]["compute_type"] == "int8"
    assert len(data["probe"]["exported"]) == len(probe)


def test_onnx_float32_export_has_optimum_layout_and_matches_torch(
    onnx_float32, probe: list[np.ndarray]
) -> None:
    report = onnx_float32
    out = report.out_dir
    for name in (*ONNX_FILES, "config.json", "generation_config.json", "tokenizer.json"):
        assert (out / name).is_file(), name
    assert (out / "preprocessor_config.json").is_file()
    encoder = onnx.load(str(out / "encoder_model.onnx"), load_external_data=False)
    decoder = onnx.load(str(out / "decoder_model.onnx"), load_external_data=False)
    with_past = onnx.load(str(out / "decoder_with_past_model.onnx"), load_external_data=False)
    names = lambda values: [v.name for v in values]  # noqa: E731
    assert names(encoder.graph.input) == ["input_features"]
    assert names(encoder.graph.output) == ["last_hidden_state"]
    assert names(decoder.graph.input) == ["input_ids", "encoder_hidden_states"]
    assert names(decoder.graph.output)[:5] == [
        "logits",
        "present.0.decoder.key",
        "present.0.decoder.value",
        "present.0.encoder.key",
        "present.0.encoder.value",
    ]
    assert len(decoder.graph.output) == 1 + 4 * 2  # two decoder layers
    assert names(with_past.graph.input)[:3] == [
        "input_ids",
        "past_key_values.0.decoder.key",
        "past_key_values.0.decoder.value",
    ]
    assert "past_key_values.1.encoder.value" in names(with_past.graph.input)
    assert names(with_past.graph.output) == [
        "logits",
        "present.0.decoder.key",
        "present.0.decoder.value",
        "present.1.decoder.key",
        "present.1.decoder.value",
    ]
    # onnxruntime's greedy loop gives PyTorch's transcripts; the graphs agree to float precision.
    assert report.identical_transcripts == len(probe) and report.cer_difference == 0.0
    assert report.max_abs_encoder_diff is not None and report.max_abs_encoder_diff < 1e-4
    assert report.max_abs_logit_diff is not None and report.max_abs_logit_diff < 1e-4
    data = record(out)
    assert data["probe"]["identical_tokens"] == len(probe)
    assert data["parity"]["encoder_max_abs_diff"] == report.max_abs_encoder_diff
    assert data["exporter"] == "dynamo"


def test_onnx_int8_quantization_writes_loadable_graphs(
    tiny: Path, probe: list[np.ndarray], tmp_path: Path
) -> None:
    report = export_onnx(
        tiny,
        tmp_path / "int8",
        quantize_int8=True,
        probe_audio=probe[:1],
        probe_options=OPTIONS,
        exporter="torchscript",  # the fast exporter; the dynamo one is covered above
    )
    assert report.quantization == "int8" and report.cer_difference is not None
    assert not (report.out_dir / ".float32").exists()
    for name in ONNX_FILES:
        session = onnxruntime.InferenceSession(
            str(report.out_dir / name), providers=["CPUExecutionProvider"]
        )
        assert session.get_outputs()[0].name in ("last_hidden_state", "logits")
        ops = {n.op_type for n in onnx.load(str(report.out_dir / name)).graph.node}
        assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, name
    texts = Transcriber(report.out_dir, OPTIONS).transcribe_batch(probe[:1])
    assert len(texts) == 1 and isinstance(texts[0], str)
    assert record(report.out_dir)["quantization"] == "int8"


def test_128_mel_model_exports_to_ct2_and_decodes(tmp_path: Path) -> None:
    source = save_tiny_whisper(tmp_path / "large-v3-like", seed=4, n_mels=128)
    # A stale 80-mel preprocessor file (as an old processor would leave): the export must
    # follow the model's 128 mel bins, not the file.
    stale = json.loads((source / "preprocessor_config.json").read_text())
    stale["feature_size"] = 80
    (source / "preprocessor_config.json").write_text(json.dumps(stale))
    probe = [clip(2.0, 180, 7)]
    report = export_ct2(source, tmp_path / "ct2", "float32", probe, probe_options=OPTIONS)
    extractor = json.loads((report.out_dir / "preprocessor_config.json").read_text())
    assert extractor["feature_size"] == 128
    assert report.identical_transcripts == 1
    assert record(report.out_dir)["n_mels"] == 128
    assert Transcriber(report.out_dir, OPTIONS).feature_extractor.feature_size == 128


def test_refusals_name_the_problem_and_the_way_out(tiny: Path, ct2_float32, tmp_path: Path) -> None:
    adapter = tmp_path / "adapters" / "round5"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelError, match=r"LoRA adapter, not a model: run `pefty merge` first"):
        export_ct2(adapter, tmp_path / "out")
    with pytest.raises(ModelError, match=r"LoRA adapter.*pefty merge"):
        export_onnx(adapter, tmp_path / "out")

    random_dir = tmp_path / "notes"
    random_dir.mkdir()
    (random_dir / "readme.txt").write_text("not a model")
    with pytest.raises(ModelError, match=r"notes is not a Whisper model directory.*config\.json"):
        export_ct2(random_dir, tmp_path / "out")

    with pytest.raises(ModelError, match=r"already a ct2 export"):
        export_onnx(ct2_float32.out_dir, tmp_path / "out")

    bert = tmp_path / "bert"
    shutil.copytree(tiny, bert)
    config = json.loads((bert / "config.json").read_text())
    (bert / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelError, match=r"'bert' model, not Whisper"):
        export_ct2(bert, tmp_path / "out")

    with pytest.raises(ConfigError, match=r"unknown CTranslate2 quantization 'int4'.*int8"):
        export_ct2(tiny, tmp_path / "out", "int4")
    with pytest.raises(ModelError, match=r"already exists: pass --force"):
        export_ct2(tiny, ct2_float32.out_dir, "float32")
    assert not (tmp_path / "out").exists()


def test_default_export_name() -> None:
    assert default_export_name(Path("merged/round5"), "ct2", "int8") == "round5-ct2-int8"
    assert default_export_name(Path("merged/round5"), "onnx", None) == "round5-onnx"
    assert default_export_name(Path("merged/round2/"), "onnx", "int8") == "round2-onnx-int8"
