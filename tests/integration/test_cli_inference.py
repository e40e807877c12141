"""`pefty export`, `transcribe` and `import-ct2` through the real CLI on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile
import torch
from click.testing import CliRunner
from fixtures import clip, save_tiny_whisper
from safetensors.torch import load_file

from pefty_whisper.cli import main

pytest.importorskip("ctranslate2", reason="pip install 'pefty-whisper[export]'")

pytestmark = pytest.mark.usefixtures("restore_torch_threads")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cli_inference")
    save_tiny_whisper(work / "merged" / "round1")
    soundfile.write(work / "a.wav", clip(3.0, 200, 1), 16_000, subtype="PCM_16")
    (work / "b.pcm").write_bytes((clip(2.0, 300, 2) * 32767).astype("<i2").tobytes())
    return work


@pytest.fixture(scope="module")
def exported(workspace: Path) -> tuple[Path, str]:
    """The float32 CTranslate2 export of merged/round1, made once through the CLI for every test
    that needs it, in whatever order they run; with what `pefty export` printed."""
    result = invoke(
        "export", "--model", "merged/round1", "--format", "ct2", "--quantization", "float32",
        "--workdir", str(workspace),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return workspace / "exports" / "round1-ct2-float32", result.output


def test_export_then_transcribe_with_both_backends(workspace: Path, exported: tuple[Path, str]):
    ws = ["--workdir", str(workspace)]
    export_dir, output = exported
    assert (export_dir / "model.bin").is_file() and (export_dir / "export.json").is_file()
    assert "identical transcripts" in output

    texts = {}
    for model in ("merged/round1", str(export_dir)):
        audio = [str(workspace / "a.wav"), str(workspace / "b.pcm")]
        # One window per file, as evaluation decodes: float32 ct2 and torch agree token for token.
        fixed = ["--longform", "chunked", "--vad", "never"]
        result = invoke("transcribe", *audio, "--model", model, "--format", "json", *fixed, *ws)
        assert result.exit_code == 0, result.output
        texts[model] = [item["text"] for item in json.loads(result.stdout)]
        assert "real-time factor" in result.output
    # float32 CTranslate2 decodes exactly like PyTorch.
    assert texts["merged/round1"] == texts[str(export_dir)]

    srt = invoke(
        "transcribe",
        str(workspace / "a.wav"),
        "--model",
        str(export_dir),
        "--format",
        "srt",
        *fixed,
        *ws,
    )
    assert srt.exit_code == 0
    assert srt.stdout.startswith("1\n00:00:00,000 --> 00:00:03,000\n")


def test_import_ct2_round_trip_gives_identical_tensors(
    workspace: Path, exported: tuple[Path, str], tmp_path: Path
):
    export_dir, _ = exported
    result = invoke("import-ct2", str(export_dir), str(tmp_path / "imported"))
    assert result.exit_code == 0, result.output
    original = load_file(workspace / "merged" / "round1" / "model.safetensors")
    imported = load_file(tmp_path / "imported" / "model.safetensors")
    shared = set(original) & set(imported)
    assert len(shared) >= len(original) - 1  # proj_out may be stored tied
    assert all(torch.equal(original[k], imported[k]) for k in shared)


def test_adapter_or_foreign_directory_is_a_clear_error(workspace: Path, tmp_path: Path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    for command in (
        ["transcribe", str(workspace / "a.wav"), "--model", str(adapter)],
        ["export", "--model", str(adapter), "--workdir", str(workspace)],
    ):
        result = invoke(*command)
        assert result.exit_code == 1
        assert "holds a LoRA adapter, not a model: run `pefty merge` first" in result.output
        assert "Traceback" not in result.output
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    result = invoke("transcribe", str(workspace / "a.wav"), "--model", str(foreign))
    assert result.exit_code == 1 and str(foreign) in result.output


def test_one_bad_file_among_many_is_reported_and_the_others_transcribed(workspace: Path):
    bad = workspace / "notes.mp3"
    bad.write_text("not audio, only named like it", encoding="utf-8")
    audio = [str(workspace / "a.wav"), str(bad), str(workspace / "b.pcm")]
    fixed = ["--longform", "chunked", "--vad", "never"]
    result = invoke(
        "transcribe", *audio, "--model", "merged/round1", "--format", "json", *fixed,
        "--workdir", str(workspace),
    )  # fmt: skip
    assert result.exit_code != 0
    assert [Path(item["path"]).name for item in json.loads(result.stdout)] == ["a.wav", "b.pcm"]
    assert f"not transcribed: {bad}: unreadable audio file" in result.output
    assert "1 of 3 file(s) could not be read" in result.output
