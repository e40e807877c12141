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
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import pefty_whisper.tracking as tracking
from pefty_whisper.config import Config, config_to_dict
from pefty_whisper.data.features import (
    FilterReport,
    SpeechCollator,
    SpeechDataset,
    filter_utterances,
    log_mel_on_gpu,
    resolve_num_workers,
)
from pefty_whisper.data.manifest import Manifest, Utterance, read_manifest
from pefty_whisper.data.mixing import MixedDataset, mix_datasets
from pefty_whisper.data.packing import packed_mixed_set, packed_training_set, packing_summary
from pefty_whisper.data.table import UtteranceTable
from pefty_whisper.errors import DataError
from pefty_whisper.files import (
    atomic_write_text,
    check_shared_memory,
    disk_full_error,
    is_disk_full,
    package_versions,
    weights_hash,
)
from pefty_whisper.metrics import score_corpus
from pefty_whisper.ranks import check_shared_workspace, ends_process_group, ensure_process_group_env
from pefty_whisper.train.augmentation import (
    apply_spec_augment,
    attach_augment,
    augment_record,
    epoch_callbacks,
    loader_augment,
)
from pefty_whisper.train.deepspeed import deepspeed_config
from pefty_whisper.train.model import (
    attach_lora,
    compute_dtype,
    count_parameters,
    enforce_language,
    load_base_model,
)
from pefty_whisper.train.output import RoundOutput
from pefty_whisper.train.plan import RoundPlan
from pefty_whisper.train.trainer import (
    best_of,
    examples_seen,
    last_logged,
    round_trainer_class,
    token_mean_loss,
)
from pefty_whisper.whisper.context import allow_short_context
from pefty_whisper.whisper.model_dir import resolve_model_dir
from pefty_whisper.whisper.processor import load_processor
from pefty_whisper.workspace import (
    DataRecord,
    LabelRecord,
    RoundData,
    RoundRecord,
    ValidationRecord,
    Workspace,
)

if TYPE_CHECKING:
    from transformers import EvalPrediction, Seq2SeqTrainer, TrainerCallback

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class RoundDatasets:
    """What `load_dataset` builds: the round's training and validation sets, the manifests
    they came from, and what the filters dropped (for round.json)."""

    train: Any  # SpeechDataset, MixedDataset, PackedDataset or PackedSets
    valid: SpeechDataset
    manifests: tuple[Manifest, ...]  # the training sets, the round's own first
    filters: tuple[FilterReport, ...]  # one per training manifest
    valid_manifest: Manifest
    valid_filter: FilterReport
    mixture: MixedDataset | None = None  # the draw of each set, when sets are mixed

    def round_data(self) -> RoundData:
        """The data of round.json: each training set with its share and draw when mixed."""
        records = [_data_record(m, f) for m, f in zip(self.manifests, self.filters, strict=True)]
        if self.mixture is not None:
            records = self.mixture.with_draws(records)
        validation = _data_record(self.valid_manifest, self.valid_filter)
        return RoundData(train=records[0], validation=validation, mixed=tuple(records[1:]))


class RoundTrainer:
    """Runs one round: base -> 8-bit -> LoRA -> Seq2SeqTrainer (+ DeepSpeed) -> best adapter.

    The setup steps run in a fixed order and each returns what it builds (`load_dataset`,
    `load_model`, `create_trainer`); `run` strings them together. `callbacks` are Trainer
    callbacks added to the round's Seq2SeqTrainer (a benchmark's step timer, a user's logger).
    """

    def __init__(
        self,
        config: Config,
        workspace: Workspace,
        plan: RoundPlan,
        callbacks: Sequence[TrainerCallback] = (),
    ) -> None:
        self.config = config
        self.workspace = workspace
        self.plan = plan
        self.callbacks = tuple(callbacks)
        self.output = RoundOutput(workspace, plan.round_index, plan.resume, plan.force)
        self.ds_config = deepspeed_config(config.train.deepspeed, config.model.quant)
        tracking.require_trackers(config.train.report_to)  # before a model loads
        self.base_dir = resolve_model_dir(plan.base, workspace.root)
        self.processor = load_processor(self.base_dir, config.model.language, config.model.task)
        self.augment = loader_augment(config.augment)  # None unless a waveform transform is on
        self.lineage: Any = None  # the LineageCallback: the runs of train.report_to

    @property
    def adapter_dir(self) -> Path:
        return self.output.final

    # -- data ---------------------------------------------------------------------------------

    def load_dataset(self) -> RoundDatasets:
        """Read the round's manifests; bad rows, over-long audio and labels are counted.

        Several training sets are mixed by share; with data.packing the utterances become
        packed 30 s windows.
        """
        manifests = tuple(read_manifest(s.path) for s in self.plan.train_sets)
        valid_manifest = read_manifest(self.plan.valid_csv)
        parts, filters = zip(*(self.prepare_dataset(m.utterances) for m in manifests), strict=True)
        train: Any = parts[0]
        mixture = None
        tokenizer, max_tokens = self.processor.tokenizer, self.max_label_tokens
        if len(manifests) > 1:
            mixture = mix_datasets(parts, self.plan.train_sets, seed=self.config.train.seed)
            train = mixture
            if self.config.data.packing:
                train = packed_mixed_set(mixture, tokenizer, self.config, max_tokens)
        elif self.config.data.packing:
            train = packed_training_set(
                parts[0].utterances, tokenizer, self.config, max_tokens=max_tokens
            )
        attach_augment(train, self.augment)  # the training set only, never validation
        # Shortest first: each validation batch then has a short context (model.context: auto)
        # and transcripts of similar length, so generate wastes few steps.
        subset = self._eval_subset(valid_manifest.utterances)
        order = np.argsort(subset.durations_or_zero(), kind="stable")
        valid, valid_filter = self.prepare_dataset(subset.take(order))
        for name, manifest, kept in (
            ("train", manifests[0], parts[0]),
            ("validation", valid_manifest, valid),
        ):
            if len(kept) == 0:
                raise DataError(f"{manifest.path}: no usable utterances for {name}")
        logger.info(
            "train: %d examples (%.2f h); validation: %d",
            len(train),
            manifests[0].hours,
            len(valid),
        )
        return RoundDatasets(
            train, valid, manifests, tuple(filters), valid_manifest, valid_filter, mixture
        )

    @functools.cached_property
    def max_label_tokens(self) -> int:
        """train.max_label_tokens, within the base's decoder positions (the one label cap of
        single utterances and packed windows alike)."""
        return min(self.config.train.max_label_tokens, self.model_config.max_target_positions)

    def prepare_dataset(
        self, utterances: Sequence[Utterance]
    ) -> tuple[SpeechDataset, FilterReport]:
        """Drop what Whisper cannot take (over 30 s, over the label cap); features come later."""
        max_tokens = self.max_label_tokens
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

    @functools.cached_property
    def base_hash(self) -> str:
        """The base's weights hash (round.json, and the run's lineage), computed once."""
        return weights_hash(self.base_dir)

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

    def enforce_fine_tune_lang(self, model: Any) -> None:
        """Korean transcription in the labels and in the saved generation config."""
        enforce_language(model, self.processor, self.config.model)

    def load_model(self) -> Any:
        """The frozen base at model.quant with LoRA attached (the model the Trainer trains)."""
        base = load_base_model(self.base_dir, self.config.model.quant, self.config.train.precision)
        allow_short_context(base)
        apply_spec_augment(base, self.config.augment)
        self.enforce_fine_tune_lang(base)
        model = attach_lora(base, self.config.lora, self.config.train.gradient_checkpointing)
        trainable, total = count_parameters(model)
        logger.info(
            "trainable parameters: %s of %s (%.2f%%)",
            f"{trainable:,d}",
            f"{total:,d}",
            100 * trainable / max(total, 1),
        )
        return model

    def create_trainer(self, model: Any, data: RoundDatasets) -> Seq2SeqTrainer:
        from transformers import Seq2SeqTrainingArguments

        t, m = self.config.train, self.config.model
        dtype = compute_dtype(t.precision)
        workers = resolve_num_workers(self.config.data.num_workers)
        logger.info("loader workers: %d; log-mel on the GPU: %s", workers, log_mel_on_gpu())
        tracking.prepare_environment(t.report_to, self.output.logs, self.workspace.root)
        self.lineage = tracking.lineage_callback(
            tracking.round_params(
                self.plan.round_index,
                self.plan.base,
                self.base_hash,
                data.round_data(),
                {"quant": m.quant, "deepspeed": t.deepspeed, "packing": self.config.data.packing},
            )
        )
        args = Seq2SeqTrainingArguments(
            output_dir=str(self.output.checkpoints),
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
            report_to=tracking.trainer_report_to(t.report_to),
            run_name=self.workspace.round_label(self.plan.round_index),
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
            model=model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.valid,
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
            callbacks=[*self.callbacks, *epoch_callbacks(self.augment), self.lineage],
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
            resume_from = self.output.open(held)
            data = self.load_dataset()
            workers = resolve_num_workers(self.config.data.num_workers)  # null: from the CPUs
            check_shared_memory(workers, self.config.train.batch_size, self.max_label_tokens)
            model = self.load_model()
            trainer = self.create_trainer(model, data)
            # The Trainer evaluates and saves after the last step too, so the best checkpoint by
            # validation CER covers the final weights as well.
            try:
                trainer.train(resume_from_checkpoint=resume_from)
            except Exception as exc:
                if is_disk_full(exc):
                    raise disk_full_error(
                        self.output.checkpoints,
                        "saving a checkpoint (`--resume` continues from the last complete one)",
                    ) from exc
                raise
            best_cer, best_step, best_checkpoint = best_of(trainer)
            if trainer.is_world_process_zero():
                self.output.write_adapter(trainer, best_checkpoint, self.config)
            trainable, total = count_parameters(model)
            result = RoundResult(
                adapter_dir=self.adapter_dir,
                steps=trainer.state.global_step,
                best_cer=best_cer,
                best_step=best_step,
                train_loss=last_logged(trainer, "train_loss"),
                trainable_parameters=trainable,
                total_parameters=total,
                seconds=time.time() - started,
                train_filter=data.filters[0],
                valid_filter=data.valid_filter,
            )
            if trainer.is_world_process_zero():
                resumed_from = Path(resume_from).name if resume_from else None
                self._write_record(trainer, data, result, started_at, resumed_from)
                self.output.publish()
        return result

    def _write_record(
        self,
        trainer: Seq2SeqTrainer,
        data: RoundDatasets,
        result: RoundResult,
        started_at: str,
        resumed_from: str | None,
    ) -> None:
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
            base_hash=self.base_hash,
            data=data.round_data(),
            quant=self.config.model.quant,
            deepspeed=self.config.train.deepspeed,
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            steps=result.steps,
            resumed_from=resumed_from,
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
            packing=packing_summary(data.train, examples_seen(trainer)),
            augment=augment_record(self.config.augment, data.train, trainer.state.epoch or 0),
            tracking=(self.lineage.runs or None) if self.lineage is not None else None,
        )
        work_dir = self.output.work_dir
        atomic_write_text(
            work_dir / "log_history.json",
            json.dumps(trainer.state.log_history, indent=1) + "\n",
        )
        record.write(work_dir)


def _data_record(manifest: Manifest, report: FilterReport) -> DataRecord:
    # A pseudo-labelled set brings its teacher and filters into the round's lineage.
    labelled = LabelRecord.read(Workspace.label_record_of(manifest.path))
    return DataRecord(
        path=manifest.path,
        rows=len(manifest.utterances) + len(manifest.rejects),
        rejected_rows=len(manifest.rejects),
        **report.as_dict(),
        teacher=labelled.teacher if labelled else None,
        label_filters=labelled.filters if labelled else None,
    )


@ends_process_group
def train_round(
    workspace: Workspace,
    config: Config,
    plan: RoundPlan,
    callbacks: Sequence[TrainerCallback] = (),
) -> RoundResult:
    """Build a RoundTrainer and run it, then end the process group (so the exit code of each
    rank says how its round went); the entry point of `pefty train`."""
    # Before the base or a manifest is read: a node without the workspace fails here, with the
    # reason, rather than on whichever file it misses first.
    check_shared_workspace(workspace.root)
    return RoundTrainer(config, workspace, plan, callbacks).run()
