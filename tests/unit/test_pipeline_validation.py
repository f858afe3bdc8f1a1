"""Data validation of the training pipeline: columns, types, missing values and PSI drift."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from pipelines.churn import validation as v

from slipway.api.artifacts import ValidationFailure

FEATURES = ["sessions_30d", "monthly_charges"]


def frame(rows: int = 1000, seed: int = 0, **overrides: object) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, object] = {
        "customer_id": np.arange(rows),
        "sessions_30d": rng.poisson(10, rows).astype("int64"),
        "monthly_charges": rng.normal(60, 15, rows),
        "churned": (rng.random(rows) < 0.3).astype("int64"),
    }
    data.update(overrides)
    return pd.DataFrame(data)


def check(df: pd.DataFrame, reference: dict[str, object] | None = None, max_missing: float = 0.01):
    return v.validate(df, FEATURES, "churned", max_missing_fraction=max_missing, max_drift=0.2, reference=reference)


# --- PSI ---------------------------------------------------------------------------------------


def test_psi_of_identical_distributions_is_zero() -> None:
    df = frame()
    assert v.drift(df, v.profile(df, FEATURES), FEATURES) == pytest.approx({f: 0.0 for f in FEATURES}, abs=1e-12)


def test_psi_of_two_samples_of_one_distribution_is_small() -> None:
    reference = v.profile(frame(20000, seed=1), FEATURES)
    assert all(value < 0.02 for value in v.drift(frame(20000, seed=2), reference, FEATURES).values())


def test_two_bin_psi_matches_the_hand_computation() -> None:
    reference = {"features": {"x": {"edges": [0.5], "fractions": [0.5, 0.5]}}}
    new = pd.DataFrame({"x": [0.1] * 8 + [0.9] * 2})  # 80% below the edge, 20% above
    expected = (0.8 - 0.5) * math.log(0.8 / 0.5) + (0.2 - 0.5) * math.log(0.2 / 0.5)
    assert v.drift(new, reference, ["x"])["x"] == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.415888, abs=1e-6)


def test_psi_is_symmetric() -> None:
    a, b = [0.1, 0.2, 0.3, 0.4], [0.25, 0.25, 0.25, 0.25]
    assert v.psi(a, b) == pytest.approx(v.psi(b, a), abs=1e-15)
    assert v.psi(a, a) == 0.0


def test_psi_handles_empty_bins_with_epsilon() -> None:
    value = v.psi([0.5, 0.5, 0.0], [0.5, 0.25, 0.25])
    eps = v.EPSILON
    expected = (0.25 - 0.5) * math.log(0.25 / 0.5) + (0.25 - eps) * math.log(0.25 / eps)
    assert math.isfinite(value)
    assert value == pytest.approx(expected, abs=1e-9)
    assert v.psi([0.0, 1.0], [0.0, 1.0]) == 0.0


def test_psi_refuses_different_bin_counts() -> None:
    with pytest.raises(ValueError, match="bin counts"):
        v.psi([0.5, 0.5], [1.0])


def test_bins_are_open_ended_and_follow_quantiles() -> None:
    values = np.arange(1, 11, dtype=float)
    assert v.quantile_edges(values, bins=2) == [5.5]
    assert v.bin_fractions(values, [5.5]).tolist() == [0.5, 0.5]
    assert v.bin_fractions(np.array([-100.0, 100.0, np.nan]), [5.5]).tolist() == [0.5, 0.5]
    assert v.quantile_edges(np.array([np.nan, np.nan])) == []


def test_a_shifted_feature_drifts_and_is_named() -> None:
    reference = v.profile(frame(), FEATURES)
    shifted = frame(seed=3, monthly_charges=np.random.default_rng(3).normal(90, 15, 1000))
    report = check(shifted, reference)
    assert not report.passed
    assert [(f.feature, f.check) for f in report.failures] == [("monthly_charges", "drift")]
    assert report.reason.startswith("drift above 0.2: monthly_charges (PSI ")
    assert report.failures[0].value is not None and float(report.failures[0].value) > 0.2


# --- profile -----------------------------------------------------------------------------------


def test_profile_is_json_and_summarises_each_feature() -> None:
    df = frame(monthly_charges=[np.nan] * 100 + [50.0] * 900)
    summary = v.profile(df, FEATURES)
    json.dumps(summary)
    charges = summary["features"]["monthly_charges"]
    assert charges["missing"] == pytest.approx(0.1)
    assert charges["mean"] == 50.0 and charges["std"] == 0.0
    assert charges["edges"] == [50.0] and charges["fractions"] == [0.0, 1.0]
    assert charges["min"] == charges["max"] == 50.0  # the training range, for the predictor's out-of-range share
    sessions = summary["features"]["sessions_30d"]
    assert len(sessions["fractions"]) == len(sessions["edges"]) + 1
    assert sum(sessions["fractions"]) == pytest.approx(1.0)
    assert summary["rows"] == 1000


# --- missing values, columns, types ------------------------------------------------------------


def test_clean_data_passes() -> None:
    report = check(frame(), v.profile(frame(), FEATURES))
    assert report.passed and report.reason == "" and report.failures == [] and report.rows == 1000


def test_missing_fraction_above_the_limit_names_the_feature() -> None:
    sessions = pd.array([None] * 200 + list(range(800)), dtype="Int64")  # a nullable column, as Feast joins it
    report = check(frame(sessions_30d=sessions))
    assert not report.passed
    assert report.failures == [
        ValidationFailure(feature="sessions_30d", check="missing-fraction", value=0.2, limit=0.01)
    ]
    assert report.reason == "missing fraction above 0.01: sessions_30d (0.20)"


def test_missing_fraction_at_the_limit_passes() -> None:
    charges = np.r_[[np.nan] * 10, np.full(990, 60.0)]
    assert check(frame(monthly_charges=charges)).passed
    assert not check(frame(monthly_charges=charges), max_missing=0.005).passed


def test_infinite_values_count_as_missing() -> None:
    assert v.missing_fraction(pd.Series([1.0, np.inf, -np.inf, np.nan])) == 0.75


def test_missing_columns_are_named() -> None:
    report = check(frame().drop(columns=["monthly_charges", "churned"]))
    assert [(f.feature, f.check) for f in report.failures] == [
        ("monthly_charges", "missing-column"),
        ("churned", "missing-column"),
    ]
    assert report.reason == "missing columns: monthly_charges, churned"


def test_wrong_types_are_named_and_numeric_objects_pass() -> None:
    strings = frame(monthly_charges=["cheap"] * 1000)
    report = check(strings)
    assert report.reason == "wrong type: monthly_charges (object, expected numeric)"
    numbers_as_objects = frame(monthly_charges=pd.Series([1.5, None] + [2.0] * 998, dtype=object))
    assert check(numbers_as_objects).passed


def test_label_must_be_binary_complete_and_have_both_classes() -> None:
    assert "churned (0.50)" in check(frame(churned=[np.nan, 1.0] * 500)).reason
    assert check(frame(churned=[0, 2] * 500)).failures[0].check == "type"
    assert check(frame(churned=[0] * 1000)).reason == "wrong type: churned (only class 0, expected 0 and 1)"
    assert check(frame(churned=[True, False] * 500)).passed


def test_empty_data_fails() -> None:
    report = check(frame().iloc[:0])
    assert not report.passed and report.reason == "no rows"


def test_reason_lists_every_failure_in_one_line() -> None:
    failures = [
        ValidationFailure(feature="sessions_30d", check="missing-fraction", value=0.2, limit=0.01),
        ValidationFailure(feature="monthly_charges", check="drift", value=0.61, limit=0.2),
        ValidationFailure(feature="tenure_months", check="drift", value=0.034 + 0.3, limit=0.2),
    ]
    assert v.reason(failures) == (
        "missing fraction above 0.01: sessions_30d (0.20); "
        "drift above 0.2: monthly_charges (PSI 0.61), tenure_months (PSI 0.33)"
    )


def test_all_missing_feature_is_not_a_drift_failure() -> None:
    reference = v.profile(frame(), FEATURES)
    report = check(frame(monthly_charges=[np.nan] * 1000), reference)
    assert [(f.feature, f.check) for f in report.failures] == [("monthly_charges", "missing-fraction")]
