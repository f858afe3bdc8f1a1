"""Training data in a fixed order, the deterministic held-out split, and arrays for torch (pure)."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .validation import as_float


def canonical_order(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Rows sorted by the given columns (entity keys, event time), so a run never depends on
    the order the offline store returned them in."""
    present = [k for k in keys if k in frame.columns]
    if not present:
        return frame.reset_index(drop=True)
    return frame.sort_values(present, kind="mergesort").reset_index(drop=True)


def _bucket(value: object, seed: int) -> float:
    """A stable pseudo-random number in [0, 1) for one key (independent of PYTHONHASHSEED)."""
    return zlib.crc32(f"{seed}:{value}".encode()) / 2**32


def held_out_mask(keys: pd.Series, fraction: float, seed: int = 0) -> np.ndarray:
    """True for rows whose entity falls in the held-out split.

    The split is by entity, so every row of one customer lands on the same side (no leakage of a
    customer's later rows into evaluation), and it depends only on the keys, the fraction and the
    seed: the same data gives the same split on every attempt.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction must be in (0, 1), got {fraction}")
    buckets = {value: _bucket(value, seed) for value in pd.unique(keys)}
    mask = keys.map(buckets).to_numpy(dtype=float) < fraction
    if len(keys) >= 2 and (mask.all() or not mask.any()):
        # Too few entities for the fraction: fall back to a row split, still deterministic.
        mask = np.zeros(len(keys), dtype=bool)
        mask[: max(1, round(len(keys) * fraction))] = True
    return np.asarray(mask, dtype=bool)


def feature_matrix(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """float32 (N, F) in the given feature order; missing values as NaN (the model imputes them)."""
    if not features:
        return np.zeros((len(frame), 0), dtype="float32")
    return np.column_stack([as_float(frame[name]) for name in features]).astype("float32")


def label_vector(frame: pd.DataFrame, label: str) -> np.ndarray:
    labels: np.ndarray = pd.to_numeric(frame[label]).astype("float32").to_numpy()
    return labels
