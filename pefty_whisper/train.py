"""One training round: LoRA on a frozen (8-bit) Whisper under DeepSpeed ZeRO, with lineage.

`RoundTrainer` keeps the shape of the seed course's class (config in, `load_dataset`,
`prepare_dataset`, `compute_metrics`, `enforce_fine_tune_lang`, `create_trainer`, `run`), so a
script or a server can construct it and hold it; `pefty train` is a thin layer over it. The
training loop itself is Hugging Face's Seq2SeqTrainer; DeepSpeed is its `deepspeed=` argument.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from pefty_whisper.config import Config, config_to_dict, dump_config
from pefty_whisper.context import allow_short_context
from pefty_whisper.data.features import (
    FilterReport,
    SpeechCollator,
    SpeechDataset,
    filter_utterances,
)
from pefty_whisper.data.manifest import Manifest, Utterance, read_manifest
from pefty_whisper.errors import ConfigError, DataError, PeftyError
from pefty_whisper.files import atomic_write_text, package_versions, weights_hash
from pefty_whisper.metrics import score_corpus
from pefty_whisper.model import (
    attach_lora,
    compute_dtype,
    count_parameters,
    enforce_language,
    load_base_model,
    load_processor,
    resolve_model_dir,
)
from pefty_whisper.workspace import (
    DataRecord,
    RoundData,
    RoundRecord,
    ValidationRecord,
    Workspace,
)

if TYPE_CHECKING:
    from transformers import EvalPrediction, Seq2SeqTrainer

logger = logging.getLogger(__name__)

ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")
CHECKPOINTS = "checkpoints"
LOGS = "logs"
DEEPSPEED_PRESETS = ("zero2", "zero2_offload", "zero3")


@dataclass(frozen=True)
class RoundPlan:
    """What one `pefty train` call resolved: which round, on which base, with which data."""

    round_index: int
    base: str  # as the user gave it: a workspace path or a hub id
    train_csv: Path
    valid_csv: Path
    resume: bool = False
    force: bool = False


@dataclass(frozen=True)
class RoundResult:
    adapter_dir: Path
    steps: int
    best_cer: float | None
    best_step: int | None
    train_loss: float | None
    trainable_parameters: int
    total_parameters: int
    seconds: float
    train_filter: FilterReport
    valid_filter: FilterReport


def default_round_plan(
    workspace: Workspace,
    config: Config,
    round_index: int,
    base: str | None = None,
    train_csv: str | None = None,
    valid_csv: str | None = None,
    resume: bool = False,
    force: bool = False,
) -> RoundPlan:
    """Round 1 trains the configured base; round N the merged model of round N-1."""
    if round_index < 1:
        raise ConfigError(f"--round must be 1 or more; got {round_index}")
    if base is None:
        base = config.model.base if round_index == 1 else workspace.merged_ref(round_index - 1)
    return RoundPlan(
        round_index=round_index,
        base=base,
        train_csv=workspace.manifest_path(train_csv)
        if train_csv
        else workspace.round_manifest(round_index, "train"),
        valid_csv=workspace.manifest_path(valid_csv)
        if valid_csv
        else workspace.round_manifest(round_index, "test"),
        resume=resume,
        force=force,
    )


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
    stage = ds.get("zero_optimization", {}).get("stage", 0)
    if stage == 3 and quant == "8bit":
        raise ConfigError(
            f"{source}: ZeRO-3 cannot shard an 8-bit base (the loss comes out wrong); use "
            "--deepspeed zero2, or --quant 4bit / --quant none with ZeRO-3"
        )
    return ds


def ensure_process_group_env() -> None:
    """Let DeepSpeed run as one process without a launcher (it would look for MPI otherwise).

    Under `deepspeed` or `torchrun` these variables are already set and left alone.
    """
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(
        RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def is_main_process() -> bool:
    """Rank 0 under a launcher (or the only process): the one that writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0


def last_complete_checkpoint(folder: Path) -> str | None:
    """The newest checkpoint that was fully written; a kill mid-save leaves a partial one.

    The Trainer writes trainer_state.json after the weights, optimizer and RNG states, so its
    presence marks a complete checkpoint. Partial ones are removed: nothing can resume from them.
    """
    checkpoints = sorted(
        (p for p in folder.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    while checkpoints and not (checkpoints[-1] / "trainer_state.json").is_file():
        partial = checkpoints.pop()
        if is_main_process():
            logger.warning("removing %s: written only partly when the run was killed", partial)
            shutil.rmtree(partial, ignore_errors=True)
    return str(checkpoints[-1]) if checkpoints else None


def token_mean_loss(
    outputs: Any, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None
) -> torch.Tensor:
    """Cross-entropy summed over label tokens, divided by the tokens of the whole step.

    Whisper's own loss is a per-batch mean that ignores `num_items_in_batch`, while the Trainer
    believes the model normalized by it and multiplies by the process count; the logged loss and
    the gradients then grow with the number of processes (exactly 2x at two). Normalizing here
    by the step's token count (across processes and accumulation steps) makes the loss mean the
    same at any process count.
    """
    logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
    total = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        labels.to(logits.device).reshape(-1),
        ignore_index=-100,
        reduction="sum",
    )
    if num_items_in_batch is None:
        num_items_in_batch = labels.ne(-100).sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


class RoundTrainer:
    """Runs one round: base -> 8-bit -> LoRA -> Seq2SeqTrainer (+ DeepSpeed) -> best adapter."""

    def __init__(self, config: Config, workspace: Workspace, plan: RoundPlan) -> None:
        self.config = config
        self.workspace = workspace
        self.plan = plan
        self.adapter_dir = workspace.adapter_dir(plan.round_index)
        self.ds_config = deepspeed_config(config.train.deepspeed, config.model.quant)
        self.base_dir = resolve_model_dir(plan.base, workspace.root)
        self.processor = load_processor(self.base_dir, config.model.language, config.model.task)
        self.model: Any = None
        self.train_manifest: Manifest | None = None
        self.valid_manifest: Manifest | None = None
        self.train_filter = FilterReport()
        self.valid_filter = FilterReport()
        self.resumed_from: str | None = None
        self.parameter_counts = (0, 0)  # (trainable, total), counted once the model is built

    # -- data ---------------------------------------------------------------------------------

    def load_dataset(self) -> tuple[SpeechDataset, SpeechDataset]:
        """Read the round's manifests; bad rows, over-long audio and labels are counted.

        Returns the (train, validation) datasets.
        """
        self.train_manifest = read_manifest(self.plan.train_csv)
        self.valid_manifest = read_manifest(self.plan.valid_csv)
        train, self.train_filter = self.prepare_dataset(self.train_manifest.utterances)
        # Shortest first: each validation batch then has a short context (model.context: auto)
        # and transcripts of similar length, so generate wastes few steps.
        valid_utterances = sorted(
            self._eval_subset(self.valid_manifest.utterances), key=lambda u: u.duration or 0.0
        )
        valid, self.valid_filter = self.prepare_dataset(valid_utterances)
        for name, manifest, kept in (
            ("train", self.train_manifest, train),
            ("validation", self.valid_manifest, valid),
        ):
            if len(kept) == 0:
                raise DataError(f"{manifest.path}: no usable utterances for {name}")
        logger.info(
            "train: %d utterances (%.2f h); validation: %d",
            len(train),
            self.train_manifest.hours,
            len(valid),
        )
        return train, valid

    def prepare_dataset(self, utterances: list[Utterance]) -> tuple[SpeechDataset, FilterReport]:
        """Drop what Whisper cannot take (over 30 s, over 448 label tokens); features come later."""
        max_tokens = min(self.config.train.max_label_tokens, self.model_config.max_target_positions)
        kept, report = filter_utterances(
            utterances, self.processor, self.config.data.max_duration_s, max_tokens
        )
        dropped = report.too_long_audio + report.too_long_labels + report.unreadable_audio
        if dropped:
            logger.warning(
                "dropped %d utterances before training: %d over %g s, %d over %d label tokens, "
                "%d unreadable",
                dropped,
                report.too_long_audio,
                self.config.data.max_duration_s,
                report.too_long_labels,
                max_tokens,
                report.unreadable_audio,
            )
        return SpeechDataset(kept, self.processor), report

    def _eval_subset(self, utterances: list[Utterance]) -> list[Utterance]:
        limit = self.config.train.max_eval_samples
        if limit <= 0 or len(utterances) <= limit:
            return utterances
        chosen = sorted(random.Random(self.config.train.seed).sample(range(len(utterances)), limit))
        return [utterances[i] for i in chosen]

    @functools.cached_property
    def model_config(self) -> Any:
        """The base's WhisperConfig, read once (prepare_dataset runs for train and validation)."""
        from transformers import WhisperConfig

        return WhisperConfig.from_pretrained(self.base_dir)

    # -- metrics and model --------------------------------------------------------------------

    def compute_metrics(self, prediction: EvalPrediction) -> dict[str, float]:
        """CER with spaces removed (the figure the best adapter is chosen by), CER, WER."""
        tokenizer = self.processor.tokenizer
        predictions = prediction.predictions
        if isinstance(predictions, tuple):
            predictions = predictions[0]
        predictions = predictions.copy()
        labels = prediction.label_ids.copy()
        predictions[predictions < 0] = tokenizer.pad_token_id
        labels[labels < 0] = tokenizer.pad_token_id
        hypotheses = tokenizer.batch_decode(predictions, skip_special_tokens=True)
        references = tokenizer.batch_decode(labels, skip_special_tokens=True)
        scores = score_corpus(references, hypotheses)
        return {"cer": scores.cer, "cer_with_spaces": scores.cer_with_spaces, "wer": scores.wer}

    def enforce_fine_tune_lang(self) -> None:
        """Korean transcription in the labels and in the saved generation config."""
        enforce_language(self.model, self.processor, self.config.model)

    def load_model(self) -> None:
        base = load_base_model(self.base_dir, self.config.model.quant, self.config.train.precision)
        allow_short_context(base)
        self.model = base
        self.enforce_fine_tune_lang()
        self.model = attach_lora(base, self.config.lora, self.config.train.gradient_checkpointing)
        trainable, total = self.parameter_counts = count_parameters(self.model)
        logger.info(
            "trainable parameters: %s of %s (%.2f%%)",
            f"{trainable:,d}",
            f"{total:,d}",
            100 * trainable / max(total, 1),
        )

    def create_trainer(self, train: SpeechDataset, valid: SpeechDataset) -> Seq2SeqTrainer:
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments

        t, m = self.config.train, self.config.model
        dtype = compute_dtype(t.precision)
        # The Trainer's TensorBoard callback reads its directory from this variable only.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.adapter_dir / LOGS)
        args = Seq2SeqTrainingArguments(
            output_dir=str(self.adapter_dir / CHECKPOINTS),
            per_device_train_batch_size=t.batch_size,
            per_device_eval_batch_size=self.config.decode.batch_size,
            gradient_accumulation_steps=t.gradient_accumulation_steps,
            learning_rate=t.learning_rate,
            warmup_steps=t.warmup_steps,
            num_train_epochs=t.num_epochs,
            max_steps=t.max_steps if t.max_steps is not None else -1,  # -1: num_train_epochs
            eval_strategy="steps",
            eval_steps=t.eval_steps,
            save_strategy="steps",
            save_steps=t.eval_steps,
            save_total_limit=t.save_total_limit,
            logging_strategy="steps",
            logging_steps=t.logging_steps,
            report_to=["tensorboard"],
            predict_with_generate=True,
            generation_max_length=self.config.decode.max_new_tokens,
            metric_for_best_model="cer",
            greater_is_better=False,
            remove_unused_columns=False,
            label_names=["labels"],
            dataloader_num_workers=self.config.data.num_workers,
            dataloader_pin_memory=torch.cuda.is_available(),
            # Without a GPU, accelerate sets up multi-process runs (gloo) only when told so.
            use_cpu=not torch.cuda.is_available(),
            deepspeed=self.ds_config,
            bf16=dtype == torch.bfloat16,
            fp16=dtype == torch.float16,
            seed=t.seed,
            ddp_find_unused_parameters=False,
            disable_tqdm=False,
        )
        trainer_class = _duration_grouped_trainer() if m.context == "auto" else Seq2SeqTrainer
        return trainer_class(
            model=self.model,
            args=args,
            train_dataset=train,
            eval_dataset=valid,
            data_collator=SpeechCollator(
                feature_extractor=self.processor.feature_extractor,
                pad_token_id=self.processor.tokenizer.pad_token_id,
                context=m.context,
                context_step_s=m.context_step_s,
            ),
            processing_class=self.processor.feature_extractor,
            compute_metrics=self.compute_metrics,
            compute_loss_func=token_mean_loss,
        )

    # -- the round ----------------------------------------------------------------------------

    def run(self) -> RoundResult:
        """Train, keep the best adapter by validation CER, write round.json last."""
        started = time.time()
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        resume_from = self._prepare_output_dir()
        self.resumed_from = Path(resume_from).name if resume_from else None
        if self.ds_config is not None:
            if not torch.cuda.is_available():
                os.environ.setdefault("DS_ACCELERATOR", "cpu")
            ensure_process_group_env()
        train, valid = self.load_dataset()
        self.load_model()
        trainer = self.create_trainer(train, valid)
        # The Trainer evaluates and saves after the last step too, so the best checkpoint by
        # validation CER covers the final weights as well.
        trainer.train(resume_from_checkpoint=resume_from)
        best_cer, best_step, best_checkpoint = self._best(trainer)
        if trainer.is_world_process_zero():
            self._write_adapter(trainer, best_checkpoint)
        train_loss = _last_logged(trainer, "train_loss")
        result = RoundResult(
            adapter_dir=self.adapter_dir,
            steps=trainer.state.global_step,
            best_cer=best_cer,
            best_step=best_step,
            train_loss=train_loss,
            trainable_parameters=self.parameter_counts[0],
            total_parameters=self.parameter_counts[1],
            seconds=time.time() - started,
            train_filter=self.train_filter,
            valid_filter=self.valid_filter,
        )
        if trainer.is_world_process_zero():
            self._write_record(trainer, result, started_at)
        return result

    def _prepare_output_dir(self) -> str | None:
        """Refuse to clobber a finished round; find the checkpoint to resume from."""
        directory = self.adapter_dir
        finished = RoundRecord.read(directory) is not None
        last = last_complete_checkpoint(directory / CHECKPOINTS)
        if finished and not self.plan.force:
            raise PeftyError(
                f"{directory} is a finished round: pass --force to train it again "
                "(the old adapter is replaced)"
            )
        if self.plan.force and directory.exists() and is_main_process():
            logger.warning("--force: replacing %s", directory)
            shutil.rmtree(directory)
            return None
        if last and not self.plan.resume:
            raise PeftyError(
                f"{directory} holds an unfinished round ({Path(last).name}): pass --resume "
                "to continue it or --force to start over"
            )
        directory.mkdir(parents=True, exist_ok=True)
        if self.plan.resume:
            if last:
                logger.info("resuming from %s", last)
                return last
            logger.info("--resume: no checkpoint in %s yet, starting the round", directory)
        return None

    def _best(self, trainer: Seq2SeqTrainer) -> tuple[float | None, int | None, Path | None]:
        """(best CER, its step, its checkpoint); no checkpoint means keep the final weights."""
        state = trainer.state
        if not state.best_model_checkpoint:
            return None, None, None
        best_checkpoint = Path(state.best_model_checkpoint)
        return state.best_metric, int(best_checkpoint.name.split("-")[-1]), best_checkpoint

    def _write_adapter(self, trainer: Seq2SeqTrainer, best_checkpoint: Path | None) -> None:
        """Put the best adapter's files in adapters/roundN/, each by an atomic rename."""
        staging = self.adapter_dir / ".adapter.partial"
        shutil.rmtree(staging, ignore_errors=True)
        if best_checkpoint is None:
            trainer.save_model(str(staging))
        else:
            staging.mkdir(parents=True)
            for name in ADAPTER_FILES:
                shutil.copy2(best_checkpoint / name, staging / name)
        for name in ADAPTER_FILES:
            os.replace(staging / name, self.adapter_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        dump_config(self.config, self.adapter_dir / "config.yaml")

    def _write_record(self, trainer: Seq2SeqTrainer, result: RoundResult, started_at: str) -> None:
        assert self.train_manifest is not None and self.valid_manifest is not None
        best_eval = next(
            (
                e
                for e in trainer.state.log_history
                if "eval_cer" in e and e.get("step") == result.best_step
            ),
            {},
        )
        record = RoundRecord(
            round=self.plan.round_index,
            base=self.plan.base,
            base_dir=self.base_dir,
            base_hash=weights_hash(self.base_dir),
            data=RoundData(
                train=_data_record(self.train_manifest, self.train_filter),
                validation=_data_record(self.valid_manifest, self.valid_filter),
            ),
            quant=self.config.model.quant,
            deepspeed=self.config.train.deepspeed,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            steps=result.steps,
            resumed_from=self.resumed_from,
            train_loss=result.train_loss,
            best_validation=ValidationRecord(
                step=result.best_step,
                cer=result.best_cer,
                cer_with_spaces=best_eval.get("eval_cer_with_spaces"),
                wer=best_eval.get("eval_wer"),
                loss=best_eval.get("eval_loss"),
            ),
            trainable_parameters=result.trainable_parameters,
            started=started_at,
            finished=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=round(result.seconds, 1),
            versions=package_versions("bitsandbytes", "deepspeed", "accelerate"),
            config=config_to_dict(self.config),
        )
        atomic_write_text(
            self.adapter_dir / "log_history.json",
            json.dumps(trainer.state.log_history, indent=1) + "\n",
        )
        record.write(self.adapter_dir)


def _duration_grouped_trainer() -> type:
    from transformers import Seq2SeqTrainer
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class DurationGroupedTrainer(Seq2SeqTrainer):
        """Batches of utterances of similar duration, so `model.context: auto` pads little.

        The Trainer's own `group_by_length` would decode every utterance's audio once just to
        measure it; the manifests already hold the durations.
        """

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            return LengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=dataset.durations,
            )

    return DurationGroupedTrainer


def _data_record(manifest: Manifest, report: FilterReport) -> DataRecord:
    return DataRecord(
        path=manifest.path,
        rows=len(manifest.utterances) + len(manifest.rejects),
        rejected_rows=len(manifest.rejects),
        **report.as_dict(),
    )


def _last_logged(trainer: Seq2SeqTrainer, key: str) -> float | None:
    values = [e[key] for e in trainer.state.log_history if key in e]
    return values[-1] if values else None


def train_round(workspace: Workspace, config: Config, plan: RoundPlan) -> RoundResult:
    """Build a RoundTrainer and run it; the entry point of `pefty train`."""
    return RoundTrainer(config, workspace, plan).run()
