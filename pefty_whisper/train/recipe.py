"""One training round: LoRA on a frozen (8-bit) Whisper under DeepSpeed ZeRO, with lineage.

`RoundTrainer` keeps the shape of the seed course's class (config in, `load_dataset`,
`prepare_dataset`, `compute_metrics`, `enforce_fine_tune_lang`, `create_trainer`, `run`), so a
script or a server can construct it and hold it; `pefty train` is a thin layer over it. The
training loop itself is Hugging Face's Seq2SeqTrainer; DeepSpeed is its `deepspeed=` argument.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from pefty_whisper.config import Config, config_to_dict, dump_config
from pefty_whisper.data.features import (
    FilterReport,
    SpeechCollator,
    SpeechDataset,
    filter_utterances,
    log_mel_on_gpu,
    resolve_num_workers,
)
from pefty_whisper.data.manifest import Manifest, Utterance, read_manifest
from pefty_whisper.data.mixing import (
    MixedDataset,
    MixEntry,
    TrainSet,
    check_distinct,
    mix_datasets,
)
from pefty_whisper.data.packing import (
    PackedDataset,
    PackedSets,
    packed_mixed_set,
    packed_training_set,
    packing_summary,
)
from pefty_whisper.data.table import UtteranceTable
from pefty_whisper.errors import ConfigError, DataError, PeftyError
from pefty_whisper.files import (
    atomic_write_text,
    check_shared_memory,
    disk_full_error,
    exclusive_lock,
    is_disk_full,
    package_versions,
    replace_directory,
    weights_hash,
)
from pefty_whisper.metrics import score_corpus
from pefty_whisper.train.checkpoints import (
    ensure_process_group_env,
    is_main_process,
    last_complete_checkpoint,
    share_from_rank_zero,
    verify_checkpoint,
)
from pefty_whisper.train.deepspeed import DEEPSPEED_PRESETS, deepspeed_config  # noqa: F401
from pefty_whisper.train.model import (
    attach_lora,
    compute_dtype,
    count_parameters,
    enforce_language,
    load_base_model,
)
from pefty_whisper.train.trainer import end_process_group, round_trainer_class, token_mean_loss
from pefty_whisper.whisper.context import allow_short_context
from pefty_whisper.whisper.model_dir import resolve_model_dir
from pefty_whisper.whisper.processor import load_processor
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


@dataclass(frozen=True)
class RoundPlan:
    """What one `pefty train` call resolved: which round, on which base, with which data."""

    round_index: int
    base: str  # as the user gave it: a workspace path or a hub id
    train_csv: Path  # the round's own training set
    valid_csv: Path
    resume: bool = False
    force: bool = False
    train_share: float | None = None  # its share of each epoch when sets are mixed in
    mixed: tuple[TrainSet, ...] = ()  # sets mixed in: `--train B:0.1`, data.mix

    @property
    def train_sets(self) -> tuple[TrainSet, ...]:
        """Every training set of the round, its own first."""
        return (TrainSet(self.train_csv, self.train_share), *self.mixed)


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
    train_csv: str | Sequence[str] | None = None,
    valid_csv: str | None = None,
    resume: bool = False,
    force: bool = False,
) -> RoundPlan:
    """Round 1 trains the configured base; round N the merged model of round N-1.

    `train_csv` is one or more NAME[:share] (the first is the round's own set, default part N);
    the config's `data.mix` sets are added after them.
    """
    if round_index < 1:
        raise ConfigError(f"--round must be 1 or more; got {round_index}")
    if base is None:
        base = config.model.base if round_index == 1 else workspace.merged_ref(round_index - 1)
    given = [train_csv] if isinstance(train_csv, str) else list(train_csv or ())
    entries = [MixEntry.parse(text) for text in (*given, *config.data.mix)]
    sets = [TrainSet(workspace.manifest_path(e.name), e.share) for e in entries]
    if not given:
        sets.insert(0, TrainSet(workspace.round_manifest(round_index, "train")))
    check_distinct(sets)
    return RoundPlan(
        round_index=round_index,
        base=base,
        train_csv=sets[0].path,
        train_share=sets[0].share,
        mixed=tuple(sets[1:]),
        valid_csv=workspace.manifest_path(valid_csv)
        if valid_csv
        else workspace.round_manifest(round_index, "test"),
        resume=resume,
        force=force,
    )


class RoundTrainer:
    """Runs one round: base -> 8-bit -> LoRA -> Seq2SeqTrainer (+ DeepSpeed) -> best adapter."""

    def __init__(self, config: Config, workspace: Workspace, plan: RoundPlan) -> None:
        self.config = config
        self.workspace = workspace
        self.plan = plan
        self.adapter_dir = workspace.adapter_dir(plan.round_index)
        # Where this run writes: adapters/roundN, or its staging directory under --force.
        self.work_dir = self.adapter_dir
        self.ds_config = deepspeed_config(config.train.deepspeed, config.model.quant)
        self.base_dir = resolve_model_dir(plan.base, workspace.root)
        self.processor = load_processor(self.base_dir, config.model.language, config.model.task)
        self.model: Any = None
        self.train_manifest: Manifest | None = None
        self.valid_manifest: Manifest | None = None
        self.mixed_manifests: list[Manifest] = []  # training sets mixed into the round's own
        self.mixed_filters: list[FilterReport] = []
        self.train_dataset: SpeechDataset | MixedDataset | PackedDataset | PackedSets | None = None
        self.mixture: MixedDataset | None = None  # the draw of each set, when sets are mixed
        self.train_filter = FilterReport()
        self.valid_filter = FilterReport()
        self.resumed_from: str | None = None
        self.parameter_counts = (0, 0)  # (trainable, total), counted once the model is built

    # -- data ---------------------------------------------------------------------------------

    def load_dataset(self) -> tuple[SpeechDataset | MixedDataset, SpeechDataset]:
        """Read the round's manifests; bad rows, over-long audio and labels are counted.

        Returns the (train, validation) datasets; several training sets are mixed by share.
        """
        manifests = [read_manifest(s.path) for s in self.plan.train_sets]
        self.train_manifest, self.mixed_manifests = manifests[0], manifests[1:]
        self.valid_manifest = read_manifest(self.plan.valid_csv)
        parts, filters = zip(*(self.prepare_dataset(m.utterances) for m in manifests), strict=True)
        self.train_filter, self.mixed_filters = filters[0], list(filters[1:])
        train: SpeechDataset | MixedDataset | PackedDataset | PackedSets = parts[0]
        if self.mixed_manifests:
            self.mixture = mix_datasets(parts, self.plan.train_sets, seed=self.config.train.seed)
            train = self.mixture
            if self.config.data.packing:
                train = packed_mixed_set(self.mixture, self.processor.tokenizer, self.config)
        elif self.config.data.packing:
            train = packed_training_set(parts[0].utterances, self.processor.tokenizer, self.config)
        self.train_dataset = train
        # Shortest first: each validation batch then has a short context (model.context: auto)
        # and transcripts of similar length, so generate wastes few steps.
        subset = self._eval_subset(self.valid_manifest.utterances)
        order = np.argsort(subset.durations_or_zero(), kind="stable")
        valid, self.valid_filter = self.prepare_dataset(subset.take(order))
        for name, manifest, kept in (
            ("train", self.train_manifest, parts[0]),
            ("validation", self.valid_manifest, valid),
        ):
            if len(kept) == 0:
                raise DataError(f"{manifest.path}: no usable utterances for {name}")
        logger.info(
            "train: %d examples (%.2f h); validation: %d",
            len(train),
            self.train_manifest.hours,
            len(valid),
        )
        return train, valid

    def prepare_dataset(
        self, utterances: Sequence[Utterance]
    ) -> tuple[SpeechDataset, FilterReport]:
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

    def _eval_subset(self, utterances: Sequence[Utterance]) -> UtteranceTable:
        table = UtteranceTable.from_utterances(utterances)
        limit = self.config.train.max_eval_samples
        if limit <= 0 or len(table) <= limit:
            return table
        chosen = sorted(random.Random(self.config.train.seed).sample(range(len(table)), limit))
        return table.take(chosen)

    def round_data(self) -> RoundData:
        """The data of round.json: each training set with its share and draw when mixed."""
        assert self.train_manifest is not None and self.valid_manifest is not None
        manifests = [self.train_manifest, *self.mixed_manifests]
        filters = [self.train_filter, *self.mixed_filters]
        records = [_data_record(m, f) for m, f in zip(manifests, filters, strict=True)]
        if self.mixture is not None:
            records = self.mixture.with_draws(records)
        validation = _data_record(self.valid_manifest, self.valid_filter)
        return RoundData(train=records[0], validation=validation, mixed=tuple(records[1:]))

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
        from transformers import Seq2SeqTrainingArguments

        t, m = self.config.train, self.config.model
        dtype = compute_dtype(t.precision)
        workers = resolve_num_workers(self.config.data.num_workers)
        logger.info("loader workers: %d; log-mel on the GPU: %s", workers, log_mel_on_gpu())
        # The Trainer's TensorBoard callback reads its directory from this variable only.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(self.work_dir / LOGS)
        args = Seq2SeqTrainingArguments(
            output_dir=str(self.work_dir / CHECKPOINTS),
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
            dataloader_num_workers=workers,
            # Workers live across epochs and evaluations: no re-fork (and re-import) each time.
            dataloader_persistent_workers=workers > 0,
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
        return round_trainer_class()(
            model=self.model,
            args=args,
            train_dataset=train,
            eval_dataset=valid,
            data_collator=SpeechCollator(
                feature_extractor=self.processor.feature_extractor,
                pad_token_id=self.processor.tokenizer.pad_token_id,
                # Packed windows are Whisper's 30 s, and validation then decodes at 30 s as
                # faster-whisper and every other consumer of an export does.
                context="full" if self.config.data.packing else m.context,
                context_step_s=m.context_step_s,
                waveforms=log_mel_on_gpu(),
            ),
            processing_class=self.processor.feature_extractor,
            compute_metrics=self.compute_metrics,
            compute_loss_func=token_mean_loss,
            group_by_duration=m.context == "auto" and not self.config.data.packing,
        )

    # -- the round ----------------------------------------------------------------------------

    def run(self) -> RoundResult:
        """Train, keep the best adapter by validation CER, write round.json last; the round is
        locked for the run, and --force trains into a staging directory swapped in at the end."""
        started = time.time()
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if self.ds_config is not None:
            if not torch.cuda.is_available():
                os.environ.setdefault("DS_ACCELERATOR", "cpu")
            ensure_process_group_env()
        with contextlib.ExitStack() as held:
            resume_from = self._prepare_output_dir(held)
            held.callback(self._drop_empty_staging)
            self.resumed_from = Path(resume_from).name if resume_from else None
            train, valid = self.load_dataset()
            workers = resolve_num_workers(self.config.data.num_workers)  # null: from the CPUs
            check_shared_memory(workers, self.config.train.batch_size)
            self.load_model()
            trainer = self.create_trainer(train, valid)
            # The Trainer evaluates and saves after the last step too, so the best checkpoint by
            # validation CER covers the final weights as well.
            try:
                trainer.train(resume_from_checkpoint=resume_from)
            except Exception as exc:
                if is_disk_full(exc):
                    raise disk_full_error(
                        self.work_dir / CHECKPOINTS,
                        "saving a checkpoint (`--resume` continues from the last complete one)",
                    ) from exc
                raise
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
                if self.work_dir != self.adapter_dir:
                    logger.info("--force: the new round replaces %s", self.adapter_dir)
                    replace_directory(self.work_dir, self.adapter_dir)
        return result

    def _prepare_output_dir(self, held: contextlib.ExitStack) -> str | None:
        """Lock the round, refuse to clobber it, pick the directory and checkpoint to go on from.

        Only rank 0 decides (and deletes); the other processes receive its decision, or its
        refusal, so no two processes ever act on different views of the directory.
        """
        decision: dict[str, Any] = {}
        if is_main_process():
            try:
                held.enter_context(
                    exclusive_lock(
                        self.workspace.round_lock(self.plan.round_index),
                        f"{self.adapter_dir} (round {self.plan.round_index})",
                    )
                )
                work_dir, resume_from = self._decide_output_dir()
                decision = {"work_dir": str(work_dir), "resume_from": resume_from}
            except PeftyError as exc:
                decision = {"error": str(exc)}
        decision = share_from_rank_zero(decision)
        if "error" in decision:
            raise PeftyError(decision["error"])
        self.work_dir = Path(decision["work_dir"])
        return decision["resume_from"]

    def _drop_empty_staging(self) -> None:  # a failed --force run without checkpoints
        staging = self.work_dir
        if staging != self.adapter_dir and is_main_process() and staging.is_dir():
            if last_complete_checkpoint(staging / CHECKPOINTS) is None:
                shutil.rmtree(staging, ignore_errors=True)

    def _decide_output_dir(self) -> tuple[Path, str | None]:
        """(the directory this run writes, the checkpoint it resumes from); rank 0 only."""
        final, plan = self.adapter_dir, self.plan
        if RoundRecord.read(final) is not None and not plan.force:
            raise PeftyError(
                f"{final} is a finished round: pass --force to train it again (the old adapter "
                "is replaced only once the new round finishes)"
            )
        work_dir = self.workspace.adapter_staging_dir(plan.round_index) if plan.force else final
        last = last_complete_checkpoint(work_dir / CHECKPOINTS)
        if plan.force and not (plan.resume and last) and work_dir.exists():
            logger.info("--force: starting over in %s (%s stays until then)", work_dir, final)
            shutil.rmtree(work_dir)
            last = None
        if last and not plan.resume:
            raise PeftyError(
                f"{final} holds an unfinished round ({Path(last).name}): pass --resume "
                "to continue it or --force to start over"
            )
        work_dir.mkdir(parents=True, exist_ok=True)
        if plan.resume and last:
            verify_checkpoint(Path(last))  # before DeepSpeed unpickles it with weights_only=False
            logger.info("resuming from %s", last)
            return work_dir, last
        if plan.resume:
            logger.info("--resume: no checkpoint in %s yet, starting the round", work_dir)
        return work_dir, None

    def _best(self, trainer: Seq2SeqTrainer) -> tuple[float | None, int | None, Path | None]:
        """(best CER, its step, its checkpoint); no checkpoint means keep the final weights."""
        state = trainer.state
        if not state.best_model_checkpoint:
            return None, None, None
        best_checkpoint = Path(state.best_model_checkpoint)
        return state.best_metric, int(best_checkpoint.name.split("-")[-1]), best_checkpoint

    def _write_adapter(self, trainer: Seq2SeqTrainer, best_checkpoint: Path | None) -> None:
        """Put the best adapter's files in the run's directory, each by an atomic rename."""
        staging = self.work_dir / ".adapter.partial"
        shutil.rmtree(staging, ignore_errors=True)
        if best_checkpoint is None:
            trainer.save_model(str(staging))
        else:
            staging.mkdir(parents=True)
            for name in ADAPTER_FILES:
                shutil.copy2(best_checkpoint / name, staging / name)
        for name in ADAPTER_FILES:
            os.replace(staging / name, self.work_dir / name)
        shutil.rmtree(staging, ignore_errors=True)
        dump_config(self.config, self.work_dir / "config.yaml")

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
            data=self.round_data(),
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
            packing=packing_summary(self.train_dataset, _examples_seen(trainer)),
        )
        atomic_write_text(
            self.work_dir / "log_history.json",
            json.dumps(trainer.state.log_history, indent=1) + "\n",
        )
        record.write(self.work_dir)


def _examples_seen(trainer: Seq2SeqTrainer) -> int:
    args = trainer.args
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    return trainer.state.global_step * per_step * max(1, args.world_size)


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
    """Build a RoundTrainer and run it, then end the process group (so the exit code of each
    rank says how its round went); the entry point of `pefty train`."""
    try:
        result = RoundTrainer(config, workspace, plan).run()
    except BaseException:
        end_process_group(synchronize=False)
        raise
    end_process_group()
    return result
