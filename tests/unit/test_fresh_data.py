"""A fresh period appended to the offline data (the world after it moved), for the closed loop."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from feature_repo.generate import (
    ACTIVITY,
    BILLING,
    FRESH_LABEL_FRACTION,
    LABELS,
    TIMESTAMP,
    append_fresh,
    fresh_frames,
    generate,
    make_frames,
)


def test_every_customer_gets_a_fresh_snapshot_with_the_new_value() -> None:
    frames = make_frames(customers=100, seed=3, days=60)
    fresh, start = fresh_frames(frames, 14, {"monthly_charges": 63.5, "tenure_months": 12.4})
    end = max(frame[TIMESTAMP].max() for frame in frames.values())
    assert pd.Timestamp(start) > end and pd.Timestamp(start) - end <= pd.Timedelta(hours=1)
    for view in (ACTIVITY, BILLING):
        assert len(fresh[view]) == 100 and (fresh[view][TIMESTAMP] == pd.Timestamp(start)).all()
        assert list(fresh[view].columns) == list(frames[view].columns)
    assert (fresh[BILLING]["monthly_charges"] == 63.5).all()
    assert (fresh[BILLING]["tenure_months"] == 12).all() and fresh[BILLING]["tenure_months"].dtype == "int64"
    # Everything else is each customer's latest row, unchanged.
    latest = frames[ACTIVITY].sort_values(TIMESTAMP).groupby("customer_id").tail(1).sort_values("customer_id")
    assert fresh[ACTIVITY]["sessions_30d"].tolist() == latest["sessions_30d"].tolist()
    labels = fresh[LABELS]
    assert len(labels) == round(FRESH_LABEL_FRACTION * 100) and labels["customer_id"].is_unique
    assert (labels[TIMESTAMP] > pd.Timestamp(start)).all()
    assert (labels[TIMESTAMP] < pd.Timestamp(start) + pd.Timedelta(days=14)).all()


def test_the_same_data_gives_the_same_fresh_rows_and_bad_input_is_refused() -> None:
    frames = make_frames(customers=50, seed=1, days=60)
    first, _ = fresh_frames(frames, 7, {"monthly_charges": 50.0})
    again, _ = fresh_frames(frames, 7, {"monthly_charges": 50.0})
    for name in first:
        pd.testing.assert_frame_equal(first[name], again[name])
    with pytest.raises(ValueError, match="unknown feature"):
        fresh_frames(frames, 7, {"favourite_colour": 1.0})
    with pytest.raises(ValueError, match="days"):
        fresh_frames(frames, 0, {})


def test_appending_twice_moves_forward(tmp_path: Path) -> None:
    generate(tmp_path, customers=40, seed=2, days=60)
    before = {name: len(pd.read_parquet(tmp_path / f"{name}.parquet")) for name in (ACTIVITY, BILLING, LABELS)}
    start, end, rows = append_fresh(tmp_path, 10, {"monthly_charges": 70.0})
    assert rows == {ACTIVITY: 40, BILLING: 40, LABELS: 8}
    later, _, _ = append_fresh(tmp_path, 10, {})
    assert start < end <= later
    billing = pd.read_parquet(tmp_path / f"{BILLING}.parquet")
    assert len(billing) == before[BILLING] + 80
    # The second period copies the first one's snapshot: the value stays until the world moves again.
    assert (billing[billing[TIMESTAMP] == pd.Timestamp(later)]["monthly_charges"] == 70.0).all()
