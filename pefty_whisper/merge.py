"""Merge a round's adapter into a full-precision reload of its base: the next round's base.

Merging into the 8-bit weights would add rounding error, so the base is reloaded at fp32. The
merged model is checked against the unmerged adapter model on a probe batch before it is renamed
into place, and the adapter's recorded base hash must match the base found on disk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pefty_whisper.config import Config
from pefty_whisper.errors import ModelError, PeftyError
from pefty_whisper.files import (
    atomic_directory,
    disk_full_error,
    is_disk_full,
    package_versions,
    weights_hash,
)
from pefty_whisper.train.model import enforce_language
from pefty_whisper.whisper.processor import load_processor
from pefty_whisper.workspace import MergeCheck, MergeRecord, RoundRecord, Workspace

logger = logging.getLogger(__name__)

# fp32 merge of W + B@A against the unmerged forward: differences are summation-order noise.
LOGIT_TOLERANCE = 1e-3
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
PROBE_SECONDS = 4.0


@dataclass(frozen=True)
class MergeReport:
    round_index: int
    adapter_dir: Path
    out_dir: Path
    base_dir: Path
    dtype: str
    max_abs_logit_diff: float
    tolerance: float
    seconds: float


def latest_adapter_round(workspace: Workspace) -> int:
    """The highest finished round under adapters/."""
    latest = workspace.latest_adapter_round()
    if latest is None:
        raise PeftyError(
            f"{workspace.root / 'adapters'}: no finished round: run `pefty train` first"
        )
    return latest


def merge_round(
    workspace: Workspace,
    config: Config,
    round_index: int | None = None,
    adapter_dir: Path | None = None,
    out_dir: Path | None = None,
    dtype: str = "float32",
    force: bool = False,
) -> MergeReport:
    """adapters/roundN + its recorded base -> merged/roundN, verified, written atomically."""
    started = time.time()
    if adapter_dir is None:
        round_index = round_index or latest_adapter_round(workspace)
        adapter_dir = workspace.adapter_dir(round_index)
    round_index = round_index or read_adapter_record(adapter_dir).round
    out_dir = out_dir or workspace.merged_dir(round_index)
    record = merge_into(adapter_dir, workspace, config, out_dir, dtype, force, round_index)
    from pefty_whisper.card import update_model_card

    update_model_card(workspace, config, out_dir)  # README.md: the Hub's model card
    logger.info(
        "merged %s into %s (max logit diff %.1e)",
        adapter_dir,
        out_dir,
        record.merge_check.max_abs_logit_diff,
    )
    return MergeReport(
        round_index=round_index,
        adapter_dir=adapter_dir,
        out_dir=out_dir,
        base_dir=record.base_dir,
        dtype=dtype,
        max_abs_logit_diff=record.merge_check.max_abs_logit_diff,
        tolerance=record.merge_check.tolerance,
        seconds=time.time() - started,
    )


def merge_into(
    adapter_dir: Path,
    workspace: Workspace,
    config: Config,
    out_dir: Path,
    dtype: str = "float32",
    force: bool = False,
    round_index: int | None = None,
) -> MergeRecord:
    """The one merge path, for `pefty merge` and for evaluating an adapter alike.

    The base must still hold the weights the adapter was trained on; the merged logits must
    equal the adapter model's; the saved generation config decodes the language and task the
    round was trained for (a hub base has none, and would detect the language per utterance).
    `out_dir` appears only when complete, with its round.json.
    """
    record = read_adapter_record(adapter_dir)
    base_dir = verified_base_dir(record, adapter_dir, workspace)
    model_section = record.model_section(config.model)
    with atomic_directory(out_dir, force=force) as staging:
        merged, max_diff = merge_adapter(base_dir, adapter_dir)
        if max_diff > LOGIT_TOLERANCE:
            raise ModelError(
                f"{adapter_dir}: merged logits differ from the adapter model's by {max_diff:.2e} "
                f"(tolerance {LOGIT_TOLERANCE:.0e}); the merge is not trustworthy, nothing written"
            )
        processor = load_processor(base_dir, model_section.language, model_section.task)
        enforce_language(merged, processor, model_section)
        try:
            save_checkpoint(merged.to(DTYPES[dtype]), processor, staging)
        except Exception as exc:
            if is_disk_full(exc):  # one line naming where, not a safetensors traceback
                raise disk_full_error(out_dir, "saving the merged model") from exc
            raise
        merge_record = MergeRecord(
            round=round_index or record.round,
            adapter_dir=adapter_dir,
            base=record.base,
            base_dir=base_dir,
            base_hash=record.base_hash,
            weights_hash=weights_hash(staging),
            dtype=dtype,
            merge_check=MergeCheck(max_abs_logit_diff=max_diff, tolerance=LOGIT_TOLERANCE),
            data=record.data,
            steps=record.steps,
            best_validation=record.best_validation,
            merged=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            versions=package_versions(),
            tracking=record.tracking,
        )
        merge_record.write(staging)
    return merge_record


def read_adapter_record(adapter_dir: Path) -> RoundRecord:
    """The record of a finished adapter; an unfinished or foreign directory is refused."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ModelError(f"{adapter_dir}: no adapter_config.json, so not a LoRA adapter directory")
    record = RoundRecord.read(adapter_dir)
    if record is None:
        raise ModelError(
            f"{adapter_dir}: no round.json, so the round did not finish: "
            f"`pefty train --round N --resume` completes it"
        )
    return record


def verified_base_dir(record: RoundRecord, adapter_dir: Path, workspace: Workspace) -> Path:
    """The base the adapter was trained on, refused if its weights changed since."""
    candidates = [record.base_dir, workspace.root / record.base]
    base_dir = next((c for c in candidates if (c / "config.json").is_file()), None)
    if base_dir is None:
        raise ModelError(
            f"{adapter_dir}: its base {record.base_dir} is gone; restore it to merge the adapter"
        )
    found = weights_hash(base_dir)
    if found != record.base_hash:
        raise ModelError(
            f"{adapter_dir} was trained on a base with weights {record.base_hash[:19]}..., but "
            f"{base_dir} now holds {found[:19]}...: the base changed since training; retrain the "
            "round on the current base"
        )
    return base_dir


def merge_adapter(base_dir: Path, adapter_dir: Path) -> tuple[Any, float]:
    """Load the base at fp32, apply the adapter, merge; return the model and the logit check."""
    from peft import PeftModel
    from transformers import WhisperForConditionalGeneration

    base = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).eval()
    features, decoder_ids = probe_batch(base.config)
    with torch.no_grad():
        before = model(input_features=features, decoder_input_ids=decoder_ids).logits
        merged = model.merge_and_unload()
        after = merged(input_features=features, decoder_input_ids=decoder_ids).logits
    return merged, float((before - after).abs().max())


def probe_batch(config: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed, seeded input: two log-mel-like arrays and a few decoder tokens."""
    rng = np.random.default_rng(0)
    frames = 2 * config.max_source_positions  # the encoder's full context (conv2 has stride 2)
    features = torch.from_numpy(rng.standard_normal((2, config.num_mel_bins, frames)))
    start = config.decoder_start_token_id
    decoder_ids = torch.tensor([[start, *rng.integers(0, 50000, 7)]] * 2)
    return features.float(), decoder_ids


def save_checkpoint(model: Any, processor: Any, out_dir: Path) -> None:
    """A plain transformers checkpoint that CTranslate2 and faster-whisper can read too."""
    from pefty_whisper.whisper.processor import write_preprocessor_config

    model.save_pretrained(out_dir, safe_serialization=True, max_shard_size="2GB")
    processor.save_pretrained(out_dir)
    write_preprocessor_config(out_dir, processor.feature_extractor)
