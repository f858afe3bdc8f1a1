"""The churn data generator: deterministic, sane labels, missing-value and shift injection."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feature_repo import generate as gen
from feature_repo.store import windows

N = 300


def frames(**kwargs: object) -> dict[str, pd.DataFrame]:
    params: dict[str, object] = {"customers": N, "seed": 7}
    params.update(kwargs)
    return gen.make_frames(**params)  # type: ignore[arg-type]


def as_of(fr: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Labels joined with the latest source rows at or before each label (reference join)."""
    joined = fr[gen.LABELS].sort_values(gen.TIMESTAMP)
    for view in (gen.ACTIVITY, gen.BILLING):
        src = fr[view].sort_values(gen.TIMESTAMP)
        joined = pd.merge_asof(joined, src, on=gen.TIMESTAMP, by=gen.ENTITY_KEY, direction="backward")
    return joined


def digests(paths: dict[str, Path]) -> dict[str, str]:
    return {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in paths.items()}


def test_same_seed_same_frames_and_bytes(tmp_path: Path) -> None:
    a, b = frames(), frames()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])
    first = gen.generate(tmp_path / "a", N, 7)
    second = gen.generate(tmp_path / "b", N, 7)
    assert set(first) == {gen.ACTIVITY, gen.BILLING, gen.LABELS}
    assert digests(first) == digests(second)


def test_different_seed_differs() -> None:
    a, b = frames(seed=1), frames(seed=2)
    for name in a:
        assert not a[name].equals(b[name]), name


def test_schema_and_time_structure() -> None:
    fr = frames()
    for view, columns in gen.FEATURES.items():
        frame = fr[view]
        assert list(frame.columns) == [gen.ENTITY_KEY, gen.TIMESTAMP, *columns]
        assert frame[gen.ENTITY_KEY].dtype == np.int64
        assert str(frame[gen.TIMESTAMP].dt.tz) == "UTC"
        for column, dtype in columns.items():
            assert str(frame[column].dtype) == dtype, column
        assert not frame.isna().any().any()
        # several timestamped rows per customer, so point-in-time joins matter
        per_customer = frame.groupby(gen.ENTITY_KEY).size()
        assert len(per_customer) == N
        assert per_customer.min() >= 5
        assert frame[gen.TIMESTAMP].min() >= pd.Timestamp(gen.DEFAULT_START)
        assert frame[gen.TIMESTAMP].max() < pd.Timestamp(gen.DEFAULT_START + timedelta(days=gen.DEFAULT_DAYS))
    labels = fr[gen.LABELS]
    assert list(labels.columns) == [gen.ENTITY_KEY, gen.TIMESTAMP, gen.LABEL]
    assert len(labels) == 2 * N
    assert set(labels[gen.LABEL].unique()) <= {0, 1}
    # every label has activity and billing rows before it
    joined = as_of(fr)
    assert not joined[gen.feature_columns()].isna().any().any()
    assert gen.feature_columns() == [c for cols in gen.FEATURES.values() for c in cols]


def test_label_rate_is_sane() -> None:
    for seed in (0, 1, 2):
        rate = gen.make_frames(1000, seed)[gen.LABELS][gen.LABEL].mean()
        assert 0.15 < rate < 0.5, (seed, rate)


def test_label_depends_on_as_of_features() -> None:
    """Churners have worse as-of features than stayers (the signal a model learns)."""
    joined = as_of(gen.make_frames(1000, 3))
    churned = joined[joined[gen.LABEL] == 1]
    stayed = joined[joined[gen.LABEL] == 0]
    assert churned["sessions_30d"].mean() < stayed["sessions_30d"].mean()
    assert churned["payment_failures_90d"].mean() > stayed["payment_failures_90d"].mean()
    assert churned["contract_type"].mean() < stayed["contract_type"].mean()


def test_missing_injection_blanks_the_given_fraction_only() -> None:
    base = frames()
    hit = frames(missing={"sessions_30d": 0.1, "monthly_charges": 0.25})
    activity, billing = hit[gen.ACTIVITY], hit[gen.BILLING]
    assert activity["sessions_30d"].isna().sum() == round(0.1 * len(activity))
    assert billing["monthly_charges"].isna().sum() == round(0.25 * len(billing))
    # integers stay integers (nullable), floats use NaN
    assert str(activity["sessions_30d"].dtype) == "Int64"
    assert billing["monthly_charges"].dtype == np.float64
    # the values left are the original ones, and nothing else changed
    kept = activity["sessions_30d"].notna()
    assert (activity.loc[kept, "sessions_30d"] == base[gen.ACTIVITY].loc[kept, "sessions_30d"]).all()
    pd.testing.assert_frame_equal(
        activity.drop(columns="sessions_30d"), base[gen.ACTIVITY].drop(columns="sessions_30d")
    )
    pd.testing.assert_frame_equal(
        billing.drop(columns="monthly_charges"), base[gen.BILLING].drop(columns="monthly_charges")
    )
    pd.testing.assert_frame_equal(hit[gen.LABELS], base[gen.LABELS])
    # deterministic, and a feature's blanks do not depend on the other options
    again = frames(missing={"sessions_30d": 0.1})
    assert (again[gen.ACTIVITY]["sessions_30d"].isna() == activity["sessions_30d"].isna()).all()


def test_missing_injection_survives_parquet(tmp_path: Path) -> None:
    paths = gen.generate(tmp_path, 50, 1, missing={"tenure_months": 0.5})
    billing = pd.read_parquet(paths[gen.BILLING])
    assert billing["tenure_months"].isna().sum() == round(0.5 * len(billing))


def test_shift_moves_the_distribution_only() -> None:
    base = frames()
    shifted = frames(shift={"monthly_charges": 15.5, "support_tickets_90d": 2.4})
    diff = shifted[gen.BILLING]["monthly_charges"] - base[gen.BILLING]["monthly_charges"]
    assert np.allclose(diff, 15.5)
    tickets = shifted[gen.ACTIVITY]["support_tickets_90d"]
    assert tickets.dtype == np.int64
    assert ((tickets - base[gen.ACTIVITY]["support_tickets_90d"]) == 2).all()
    pd.testing.assert_frame_equal(shifted[gen.LABELS], base[gen.LABELS])
    pd.testing.assert_series_equal(shifted[gen.BILLING]["tenure_months"], base[gen.BILLING]["tenure_months"])


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown feature"):
        frames(missing={"nope": 0.1})
    with pytest.raises(ValueError, match="unknown feature"):
        frames(shift={"nope": 1.0})
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        frames(missing={"sessions_30d": 1.5})
    with pytest.raises(ValueError):
        gen.make_frames(0, 1)
    assert gen.parse_assignments(["sessions_30d=0.1,tenure_months=2"], "--missing") == {
        "sessions_30d": 0.1,
        "tenure_months": 2.0,
    }
    with pytest.raises(ValueError, match="FEATURE=NUMBER"):
        gen.parse_assignments(["sessions_30d"], "--missing")


def test_cli_writes_the_data_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "data"
    argv = ["--out", str(out), "--customers", "40", "--seed", "5", "--missing", "sessions_30d=0.5"]
    assert gen.main([*argv, "--shift", "monthly_charges=3"]) == 0
    assert str(out / "labels.parquet") in capsys.readouterr().out
    labels = pd.read_parquet(out / "labels.parquet")
    assert labels[gen.ENTITY_KEY].nunique() == 40
    activity = pd.read_parquet(out / "customer_activity.parquet")
    assert activity["sessions_30d"].isna().mean() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(SystemExit):
        gen.main(["--out", str(out), "--missing", "bogus=0.1"])


def test_materialization_windows_cover_the_range() -> None:
    start = datetime(2025, 1, 1)
    end = datetime(2025, 3, 1, tzinfo=UTC)
    cuts = windows(start, end, timedelta(days=7))
    assert cuts[0][0] == start.replace(tzinfo=UTC)
    assert cuts[-1][1] == end
    assert all(hi - lo <= timedelta(days=7) for lo, hi in cuts)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(cuts))
    assert len(cuts) == 9
    assert windows(end, end, timedelta(days=1)) == []
    with pytest.raises(ValueError):
        windows(start, end, timedelta(0))
