"""Training a round: an 8-bit base, a LoRA adapter, the Seq2SeqTrainer under DeepSpeed.

plan.py resolves what a round trains on, recipe.py runs it (RoundTrainer), output.py owns
where it writes (locks, --force staging, publishing), trainer.py the Seq2SeqTrainer subclass,
model.py loading and LoRA, deepspeed.py the ZeRO presets, checkpoints.py resumable
checkpoints (the process group and ranks are pefty_whisper/ranks.py's).
"""

from pefty_whisper.train.plan import RoundPlan, default_round_plan
from pefty_whisper.train.recipe import RoundResult, RoundTrainer, train_round

__all__ = ["RoundPlan", "RoundResult", "RoundTrainer", "default_round_plan", "train_round"]
