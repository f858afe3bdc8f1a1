"""Held-out metrics: auc, accuracy and log loss (the names the evaluation gate reads)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

PROBABILITY_CLIP = 1e-7


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; needs both classes in `labels`."""
    labels = np.asarray(labels)
    if np.unique(labels).size < 2:
        raise ValueError("auc needs both classes among the labels")
    return float(roc_auc_score(labels, scores))


def accuracy(labels: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> float:
    return float(accuracy_score(np.asarray(labels).astype(int), (np.asarray(probabilities) >= threshold).astype(int)))


def logloss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Binary cross-entropy, with probabilities clipped away from 0 and 1."""
    p = np.clip(np.asarray(probabilities, dtype=float), PROBABILITY_CLIP, 1 - PROBABILITY_CLIP)
    return float(log_loss(np.asarray(labels).astype(int), p, labels=[0, 1]))


def evaluate(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """The metrics the manifest carries, keyed as the evaluation gate names them."""
    return {
        "auc": auc(labels, probabilities),
        "accuracy": accuracy(labels, probabilities),
        "logLoss": logloss(labels, probabilities),
    }
