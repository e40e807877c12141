"""Pseudo-labelling: a round's model transcribes unlabelled audio into a set the next round
trains on (`pefty label`)."""

from pefty_whisper.label.filters import REASONS
from pefty_whisper.label.inputs import DatasetPick
from pefty_whisper.label.run import LabelReport, label_set, teacher_model

__all__ = ["REASONS", "DatasetPick", "LabelReport", "label_set", "teacher_model"]
