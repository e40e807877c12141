"""DeepSpeed configs of a round: the presets in ds_configs/, a user's JSON, the refusals.

The presets build torch's AdamW (`"torch_adam": true`): DeepSpeed's own Adam (FusedAdam, or
CPUAdam under offload) is JIT-compiled at the first step, with nvcc on a GPU, which a pip-only
install lacks ("CUDA_HOME does not exist"), and a build killed halfway leaves a lock that makes
every later run wait forever.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

from pefty_whisper.errors import ConfigError

logger = logging.getLogger(__name__)

DEEPSPEED_PRESETS = ("zero2", "zero2_offload", "zero3")


def deepspeed_config(name_or_path: str, quant: str) -> dict[str, Any] | None:
    """Load a preset (zero2, zero2_offload, zero3) or a JSON file; refuse ZeRO-3 on an 8-bit base.

    ZeRO-3 shards parameters, which LLM.int8 weights do not survive: the loss comes out wrong
    (a known upstream limitation), so the combination is refused instead of trained.
    """
    if name_or_path == "none":
        return None
    if name_or_path in DEEPSPEED_PRESETS:
        text = (
            resources.files("pefty_whisper") / "ds_configs" / f"{name_or_path}.json"
        ).read_text()
        source = f"ds_configs/{name_or_path}.json"
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(
                f"DeepSpeed config '{name_or_path}' not found: use one of "
                f"{', '.join(DEEPSPEED_PRESETS)}, none, or a path to a JSON file"
            )
        text, source = path.read_text(encoding="utf-8"), str(path)
    try:
        ds = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if not isinstance(ds, dict) or not isinstance(ds.get("zero_optimization", {}), dict):
        raise ConfigError(
            f"{source}: a DeepSpeed config is a JSON object with a 'zero_optimization' object "
            f"(see ds_configs/zero2.json); got {type(ds).__name__}: {text.strip()[:60]}"
        )
    optimizer = ds.get("optimizer") or {}
    if optimizer.get("type") in ("Adam", "AdamW") and not optimizer.get("params", {}).get(
        "torch_adam"
    ):
        logger.warning(
            '%s: Adam without "torch_adam": true builds FusedAdam/CPUAdam at the first step '
            "(nvcc and CUDA_HOME on a GPU); the presets use torch's AdamW",
            source,
        )
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage == 3 and quant == "8bit":
        raise ConfigError(
            f"{source}: ZeRO-3 cannot shard an 8-bit base (the loss comes out wrong); use "
            "--deepspeed zero2, or --quant 4bit / --quant none with ZeRO-3"
        )
    return ds
