"""Beyond one process, through real launchers on the CPU (gloo): `pefty evaluate` in two ranks
gives the one-process result, `pefty train` runs across two "nodes" of torchrun (two agents
meeting at a c10d rendezvous on this machine), and a node that sees another workspace stops at
once with the reason."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fixtures import save_tiny_whisper
from workspaces import SENTENCES, make_workspace, subprocess_env, write_audio, write_manifest

from pefty_whisper.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("restore_torch_threads")]

REPO = Path(__file__).resolve().parents[2]
# Figures of an evaluation that are clocks, not results.
TIMINGS = {"seconds", "real_time_factor", "utterances_per_second", "evaluated"}
SHORT_ROUND = [
    "-o", "train.max_steps=2", "-o", "train.eval_steps=2",
    "-o", "train.batch_size=2", "-o", "decode.batch_size=2",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return save_tiny_whisper(tmp_path_factory.mktemp("base") / "tiny")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launcher_env() -> dict[str, str]:
    """A launcher's environment: offline, no outer launcher's variables, and this checkout's
    package first (the ranks are new interpreters)."""
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args, "-m", "pefty_whisper.cli"]


def run_nodes(commands: list[list[str]], logs: Path, timeout: int = 600) -> list[tuple[int, str]]:
    """Start one torchrun agent per "node" (node 0 first: it hosts the rendezvous) and wait for
    all of them; each one's exit code and output."""
    logs.mkdir(parents=True, exist_ok=True)
    running = []
    for node, command in enumerate(commands):
        log = (logs / f"node{node}.log").open("w")
        process = subprocess.Popen(
            command, env=launcher_env(), stdout=log, stderr=subprocess.STDOUT, text=True
        )
        running.append((process, log))
    try:
        for process, _ in running:
            process.wait(timeout=timeout)
    finally:
        for process, log in running:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    return [
        (process.returncode, (logs / f"node{node}.log").read_text())
        for node, (process, _) in enumerate(running)
    ]


def two_node_commands(port: int, args: list[str], workdirs: list[Path]) -> list[list[str]]:
    """torchrun on two "nodes" of this machine, one process each, meeting at a c10d rendezvous."""
    return [
        [
            *torchrun(
                "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(node),
                "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                "--rdzv-id", f"pefty-test-{port}",
                # node 0 hosts the rendezvous store; both resolve to this machine's loopback
                "--rdzv-conf", f"is_host={int(node == 0)}", "--local-addr", "127.0.0.1",
            ),
            *args,
            "--workdir",
            str(workdir),
        ]
        for node, workdir in enumerate(workdirs)
    ]  # fmt: skip


# -- evaluate in two ranks ------------------------------------------------------------------


def eval_workspace(root: Path) -> Path:
    """Five utterances of different lengths: with batches of two, rank 0 decodes the first and
    third batch of the one-process order and rank 1 the second."""
    rows = []
    for i, sentence in enumerate([*SENTENCES, "감사합니다"]):
        path = root / "audio" / f"e{i}.pcm"
        write_audio(path, seed=i, seconds=0.6 + 0.25 * ((3 * i) % 5))
        rows.append((str(path), sentence))
    write_manifest(root / "data" / "eval_clean.csv", rows)
    # context auto: each batch's encoder runs at its own length, not 30 s (a quicker test)
    settings = {"decode": {"batch_size": 2, "max_new_tokens": 12}, "model": {"context": "auto"}}
    (root / "pefty.yaml").write_text(yaml.safe_dump(settings), encoding="utf-8")
    return root


def read_evaluation(work: Path) -> tuple[str, dict]:
    folder = work / "eval" / "round0"
    record = json.loads((folder / "eval_clean.json").read_text())
    return (folder / "eval_clean.tsv").read_text(), record


def without_timings(value: object) -> object:
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    return value


def deepspeed_launcher(*args: str) -> list[str]:
    """The DeepSpeed launcher (`deepspeed` on PATH is this runner): --module, never -m."""
    runner = [sys.executable, "-c", "from deepspeed.launcher.runner import main; main()"]
    return [*runner, *args, "--module", "pefty_whisper.cli"]


@pytest.mark.parametrize(
    ("launcher", "extra"),
    [
        # torchrun also decodes the long-form recordings and the silence clips in its ranks
        (lambda port: torchrun("--nproc_per_node", "2", "--master_port", str(port)), []),
        # DeepSpeed's launcher adds --local_rank=N (kept short: the same path after the flag)
        (
            lambda port: deepspeed_launcher("--num_gpus", "2", "--master_port", str(port)),
            ["--no-longform"],
        ),
    ],
    ids=["torchrun", "deepspeed"],
)
def test_two_ranks_evaluate_to_the_one_process_result(tiny_base, tmp_path, launcher, extra):
    work = eval_workspace(tmp_path / "work")
    args = [
        "evaluate", "--set", "eval_clean", "--model", str(tiny_base),
        "--workdir", str(work), "-o", f"model.base={tiny_base}", *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    one_tsv, one_record = read_evaluation(work)
    shutil.rmtree(work / "eval")

    process = subprocess.run(
        [*launcher(free_port()), *args],
        env=dict(launcher_env(), DS_ACCELERATOR="cpu"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-4000:]
    two_tsv, two_record = read_evaluation(work)
    assert two_tsv == one_tsv  # every utterance's hypothesis and counts
    assert without_timings(two_record) == without_timings(one_record)
    assert two_record["num_utterances"] == 5
    # Rank 0 alone reported and wrote: one summary, no stray files.
    assert process.stdout.count("round0 on eval_clean (") == 1, process.stdout
    assert sorted(p.name for p in (work / "eval" / "round0").iterdir()) == [
        "eval_clean.json",
        "eval_clean.tsv",
    ]
    assert not list(work.glob(".pefty-node-check-*"))


# -- training across nodes ------------------------------------------------------------------


def test_a_round_trains_across_two_torchrun_nodes(tiny_base, tmp_path):
    work = make_workspace(tmp_path / "work")
    args = ["train", "--round", "1", "--base", str(tiny_base), *SHORT_ROUND]
    results = run_nodes(two_node_commands(free_port(), args, [work, work]), tmp_path / "logs")
    for code, output in results:
        assert code == 0, output[-4000:]
        assert "terminate called" not in output
    adapter = work / "adapters" / "round1"
    record = json.loads((adapter / "round.json").read_text())
    assert record["world_size"] == 2 and record["steps"] == 2
    assert (adapter / "adapter_model.safetensors").is_file()
    # Published once, by rank 0 (node 0): only its agent printed the summary.
    summaries = [output.count("next: pefty merge --round 1") for _, output in results]
    assert summaries == [1, 0]
    assert not list(work.glob(".pefty-node-check-*"))
    assert not (work / "adapters" / ".round1.next").exists()


def test_a_node_with_another_workspace_stops_with_the_reason(tiny_base, tmp_path):
    work = make_workspace(tmp_path / "work")
    elsewhere = tmp_path / "node1" / "work"
    shutil.copytree(work, elsewhere)  # the same files, but not the same filesystem
    args = ["train", "--round", "1", "--base", str(tiny_base), *SHORT_ROUND]
    results = run_nodes(
        two_node_commands(free_port(), args, [work, elsewhere]), tmp_path / "logs", timeout=300
    )
    for code, output in results:
        assert code != 0, output[-4000:]
        lines = [line for line in output.splitlines() if "must be on a shared filesystem" in line]
        assert lines, output[-4000:]
        assert str(elsewhere) in lines[0]  # the path as the failing node sees it
        assert "rank 1" in lines[0]
    # Stopped before anything was locked or written, and the token is gone.
    assert not (work / "adapters").exists() and not (elsewhere / "adapters").exists()
    assert not list(work.glob(".pefty-node-check-*"))
