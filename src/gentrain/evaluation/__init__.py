"""Evaluation: FID, KID, IS, precision/recall in a domain classifier's feature space,
and likelihood metrics for models with an encoder."""

from gentrain.evaluation.evaluator import EvalConfig, Evaluator

__all__ = ["EvalConfig", "Evaluator"]
