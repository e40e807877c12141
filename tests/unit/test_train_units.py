"""The pure pieces of a training round: loss normalization, DeepSpeed configs, round defaults."""

import json

import pytest
import torch

from pefty_whisper.config import load_config
from pefty_whisper.errors import ConfigError
from pefty_whisper.train import (
    deepspeed_config,
    default_round_plan,
    last_complete_checkpoint,
    token_mean_loss,
)
from pefty_whisper.workspace import Workspace


def test_token_mean_loss_is_cross_entropy_over_the_steps_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5)
    labels = torch.tensor([[1, 2, -100], [3, -100, -100]])
    mean = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), labels.reshape(-1))
    assert token_mean_loss({"logits": logits}, labels) == pytest.approx(mean.item(), rel=1e-6)
    # Two processes, three label tokens each: each divides its sum by the six of the step, so
    # the sum over processes (what DDP/ZeRO average times the world size) is the global mean.
    local = token_mean_loss({"logits": logits}, labels, num_items_in_batch=torch.tensor(6))
    assert local == pytest.approx(mean.item() * 3 / 6, rel=1e-6)


def test_presets_fill_auto_fields_and_zero3_refuses_8bit(tmp_path):
    zero2 = deepspeed_config("zero2", "8bit")
    assert zero2["zero_optimization"]["stage"] == 2
    assert zero2["train_micro_batch_size_per_gpu"] == "auto"
    assert zero2["optimizer"]["params"]["lr"] == "auto"
    assert deepspeed_config("zero2_offload", "8bit")["zero_optimization"]["offload_optimizer"]
    assert deepspeed_config("zero3", "4bit")["zero_optimization"]["stage"] == 3
    assert deepspeed_config("none", "8bit") is None
    with pytest.raises(ConfigError, match="ZeRO-3 cannot shard an 8-bit base"):
        deepspeed_config("zero3", "8bit")
    custom = tmp_path / "mine.json"
    custom.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(ConfigError, match="mine.json: ZeRO-3"):
        deepspeed_config(str(custom), "8bit")
    with pytest.raises(ConfigError, match="not found: use one of zero2"):
        deepspeed_config("zero4", "8bit")


def test_round_defaults(tmp_path):
    workspace, config = Workspace.at(tmp_path), load_config()
    first = default_round_plan(workspace, config, 1)
    assert first.base == "openai/whisper-small"
    assert first.train_csv == tmp_path / "data" / "train_KsponSpeech_01_train.csv"
    assert first.valid_csv == tmp_path / "data" / "train_KsponSpeech_01_test.csv"
    third = default_round_plan(workspace, config, 3, valid_csv="dev")
    assert third.base == "merged/round2"
    assert third.valid_csv == tmp_path / "data" / "dev.csv"
    with pytest.raises(ConfigError, match="--round must be 1 or more"):
        default_round_plan(workspace, config, 0)


def test_resume_skips_a_checkpoint_killed_while_being_written(tmp_path):
    for step in (2, 4, 10):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{}")
    # checkpoint-10 has no trainer_state.json (written last): it is partial, and 10 > 4 must
    # compare as numbers, not strings.
    assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert not (tmp_path / "checkpoint-10").exists()
    assert last_complete_checkpoint(tmp_path / "none") is None
