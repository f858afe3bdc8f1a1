"""Held-out metrics of the training pipeline."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pipelines.churn import metrics


def test_auc_of_a_perfect_a_reversed_and_a_hand_computed_ranking() -> None:
    labels = np.array([0, 0, 1, 1])
    assert metrics.auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert metrics.auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    # pairs (pos, neg): (0.35, 0.1) ok, (0.35, 0.4) wrong, (0.8, *) ok -> 3 of 4
    assert metrics.auc(labels, np.array([0.1, 0.4, 0.35, 0.8])) == pytest.approx(0.75)


def test_auc_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        metrics.auc(np.array([1, 1]), np.array([0.2, 0.9]))


def test_accuracy_thresholds_at_one_half() -> None:
    labels = np.array([0, 1, 1, 0])
    assert metrics.accuracy(labels, np.array([0.2, 0.5, 0.7, 0.6])) == 0.75
    assert metrics.accuracy(labels, np.array([0.2, 0.5, 0.7, 0.6]), threshold=0.65) == 0.75


def test_log_loss_matches_the_formula_and_stays_finite() -> None:
    labels = np.array([1, 0, 1])
    p = np.array([0.9, 0.2, 0.6])
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.6)) / 3
    assert metrics.logloss(labels, p) == pytest.approx(expected, rel=1e-9)
    assert math.isfinite(metrics.logloss(np.array([1, 0]), np.array([0.0, 1.0])))
    assert metrics.logloss(np.array([1, 1]), np.array([0.7, 0.7])) == pytest.approx(-math.log(0.7))


def test_evaluate_names_the_metrics_as_the_gate_reads_them() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    scores = np.clip(labels * 0.3 + rng.random(500) * 0.7, 0, 1)
    result = metrics.evaluate(labels, scores)
    assert set(result) == {"auc", "accuracy", "logLoss"}
    assert all(isinstance(value, float) for value in result.values())
    assert 0.8 < result["auc"] <= 1.0
