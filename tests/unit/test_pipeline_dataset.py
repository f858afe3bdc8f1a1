"""Ordering, the deterministic held-out split and the arrays the model trains on."""

from __future__ import annotations

import numpy as np
import pandas as pd
from pipelines.churn import dataset


def rows(customers: int = 5000, per: int = 2) -> pd.DataFrame:
    ids = np.repeat(np.arange(1000, 1000 + customers), per)
    stamps = pd.date_range("2025-01-01", periods=per, freq="D", tz="UTC")
    return pd.DataFrame({"customer_id": ids, "event_timestamp": np.tile(stamps, customers), "x": np.arange(len(ids))})


def test_split_is_by_entity_deterministic_and_near_the_fraction() -> None:
    frame = rows()
    mask = dataset.held_out_mask(frame["customer_id"], 0.2, seed=42)
    assert 0.18 < mask.mean() < 0.22
    sides = pd.Series(mask).groupby(frame["customer_id"]).nunique()
    assert (sides == 1).all()  # every customer on one side only
    assert (dataset.held_out_mask(frame["customer_id"], 0.2, seed=42) == mask).all()
    assert not (dataset.held_out_mask(frame["customer_id"], 0.2, seed=7) == mask).all()


def test_split_does_not_depend_on_row_order() -> None:
    frame = rows(500)
    shuffled = frame.sample(frac=1.0, random_state=1)
    a = pd.Series(dataset.held_out_mask(frame["customer_id"], 0.3), index=frame.index)
    b = pd.Series(dataset.held_out_mask(shuffled["customer_id"], 0.3), index=shuffled.index)
    assert (a.sort_index() == b.sort_index()).all()


def test_split_of_very_few_entities_still_has_both_sides() -> None:
    mask = dataset.held_out_mask(pd.Series([1, 1, 1, 1]), 0.25)
    assert mask.sum() == 1 and len(mask) == 4


def test_canonical_order_sorts_by_keys() -> None:
    frame = rows(50).sample(frac=1.0, random_state=3)
    ordered = dataset.canonical_order(frame, ["customer_id", "event_timestamp", "absent"])
    assert ordered["x"].tolist() == list(range(100))
    assert ordered.index.tolist() == list(range(100))


def test_feature_matrix_follows_the_given_order_with_nan_for_missing() -> None:
    frame = pd.DataFrame({"a": pd.array([1, None, 3], dtype="Int64"), "b": [0.5, 1.5, 2.5], "y": [0, 1, 1]})
    x = dataset.feature_matrix(frame, ["b", "a"])
    assert x.dtype == np.float32 and x.shape == (3, 2)
    assert x[:, 0].tolist() == [0.5, 1.5, 2.5]
    assert np.isnan(x[1, 1]) and x[2, 1] == 3.0
    assert dataset.label_vector(frame, "y").tolist() == [0.0, 1.0, 1.0]
