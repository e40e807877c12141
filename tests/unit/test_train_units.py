"""The pure pieces of a training round: loss normalization, DeepSpeed configs, round defaults."""

import json

import pytest
import torch

from pefty_whisper.config import load_config
from pefty_whisper.errors import ConfigError
from pefty_whisper.train import default_round_plan
from pefty_whisper.train.checkpoints import last_complete_checkpoint
from pefty_whisper.train.deepspeed import deepspeed_config
from pefty_whisper.train.model import compute_dtype, free_unused_int8_inputs, load_base_model
from pefty_whisper.train.trainer import token_mean_loss
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


def test_presets_build_torch_adamw_so_no_optimizer_is_compiled():
    """DeepSpeed's own Adam (FusedAdam, CPUAdam under offload) is JIT-built with nvcc at the
    first step, which a pip-only CUDA install cannot do ("CUDA_HOME does not exist")."""
    for preset in ("zero2", "zero2_offload", "zero3"):
        quant = "4bit" if preset == "zero3" else "8bit"
        optimizer = deepspeed_config(preset, quant)["optimizer"]
        assert optimizer["type"] == "AdamW" and optimizer["params"]["torch_adam"] is True, preset


@pytest.mark.parametrize(
    ("capability", "expected"),
    [
        ((7, 5), torch.float16),
        ((7, 0), torch.float16),
        ((8, 0), torch.bfloat16),
        ((8, 9), torch.bfloat16),
    ],
)
def test_precision_auto_gives_bf16_only_where_the_card_has_it(monkeypatch, capability, expected):
    """T4 / RTX 20xx (sm75) and V100 (sm70) only emulate bf16, which torch still reports."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.version, "hip", None)
    assert compute_dtype("auto") == expected
    assert compute_dtype("fp16") == torch.float16 and compute_dtype("fp32") == torch.float32


def test_each_rank_sets_its_gpu_before_loading_its_model(monkeypatch, tmp_path):
    """Without set_device, every rank's CUDA context and bitsandbytes' work land on GPU 0."""
    import bitsandbytes.autograd._functions  # noqa: F401 - imported before CUDA is faked
    import transformers

    calls = []
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: calls.append(("set", device)))

    class Loaded:
        def to(self, device):
            return self

    def from_pretrained(path, **kwargs):
        calls.append(("load", kwargs.get("device_map")))
        return Loaded()

    monkeypatch.setattr(
        transformers.WhisperForConditionalGeneration, "from_pretrained", from_pretrained
    )
    load_base_model(tmp_path, "8bit", "fp32")
    cuda1 = torch.device("cuda", 1)
    assert calls == [("set", cuda1), ("load", {"": cuda1})]


def _upstream(cls: type) -> type:
    """bitsandbytes' own class, also after free_unused_int8_inputs replaced it."""
    return cls.__bases__[0] if cls.__name__.endswith("FreeingInput") else cls


@pytest.mark.parametrize("training", [True, False], ids=["MatMul8bitFp", "MatMul8bitLt"])
def test_int8_linears_free_their_input_under_checkpointing(monkeypatch, training):
    """bitsandbytes keeps each int8 matmul's input on the autograd context, out of reach of
    gradient checkpointing, though backward never reads it; freed, the gradients stay the same.

    On the CPU a training-mode layer runs MatMul8bitFp, an eval-mode one MatMul8bitLt (the GPU's).
    """
    import gc
    import weakref

    import bitsandbytes as bnb
    from bitsandbytes.autograd import _functions as functions
    from torch.utils.checkpoint import checkpoint

    monkeypatch.setattr(functions, "MatMul8bitLt", _upstream(functions.MatMul8bitLt))
    monkeypatch.setattr(functions, "MatMul8bitFp", _upstream(functions.MatMul8bitFp))
    monkeypatch.setattr(functions, "_pefty_frees_unused_inputs", False, raising=False)
    torch.manual_seed(0)
    reference = torch.nn.Linear(64, 96)
    layer = bnb.nn.Linear8bitLt(64, 96, has_fp16_weights=False, threshold=6.0)
    layer.load_state_dict(reference.state_dict())
    layer = layer.to("cpu").train(training)

    def step() -> tuple[bool, torch.Tensor]:
        x = (
            3 * torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(1))
        ).requires_grad_()
        inputs = []

        def block(x: torch.Tensor) -> torch.Tensor:
            hidden = x * 1.5  # the layer's input: an activation checkpointing should free
            inputs.append(weakref.ref(hidden))
            return layer(hidden)

        out = checkpoint(block, x, use_reentrant=False)
        gc.collect()
        kept = inputs[0]() is not None
        out.float().square().sum().backward()
        return kept, x.grad

    kept_upstream, grad_upstream = step()
    free_unused_int8_inputs()
    kept, grad = step()
    assert kept_upstream, "bitsandbytes no longer keeps the input: the fix may be dropped"
    assert not kept
    assert torch.equal(grad, grad_upstream)
