"""Evaluation: decode a set and score it (run.py), whole recordings and silence (longform.py),
and the rounds table built from the evaluations (rounds_table.py)."""

from pefty_whisper.evaluate.run import EvalReport, evaluate_set

__all__ = ["EvalReport", "evaluate_set"]
