"""Data validation before training: schema, missing values and drift (pure numpy/pandas).

A *profile* summarises one data set, per numeric feature: interior quantile bin edges (the bins
are open at both ends, so new data outside the old range still lands in the first or last bin),
the fraction of non-missing values in each bin, mean, std, min, max and missing fraction. The
model manifest carries the training data's profile; the predictor compares what it serves with
it (`pipelines/predictor/monitor.py`). Drift is the
population stability index (PSI) of the new data, binned on the stored profile's edges, against
the stored fractions:

    PSI = sum_i (new_i - ref_i) * ln(new_i / ref_i)

which is symmetric in (new, ref); empty bins are clipped to `EPSILON` so the logarithm stays
finite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from slipway.api.artifacts import ValidationFailure, ValidationReport

EPSILON = 1e-4
DEFAULT_BINS = 10
PROFILE_VERSION = 1

MISSING_COLUMN = "missing-column"
TYPE = "type"
MISSING_FRACTION = "missing-fraction"
DRIFT = "drift"
ROWS = "rows"


def quantile_edges(values: np.ndarray, bins: int = DEFAULT_BINS) -> list[float]:
    """Interior edges at the 1/bins .. (bins-1)/bins quantiles of the finite values, deduplicated."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(e) for e in np.unique(qs)]


def bin_fractions(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Fraction of the finite values in each of the len(edges) + 1 open-ended bins.

    Bin 0 holds x < edges[0], bin i holds edges[i-1] <= x < edges[i], the last x >= edges[-1].
    """
    finite = values[np.isfinite(values)]
    counts = np.bincount(
        np.searchsorted(np.asarray(edges, dtype=float), finite, side="right"), minlength=len(edges) + 1
    )
    total = counts.sum()
    return counts / total if total else np.zeros(len(edges) + 1)


def psi(reference: Sequence[float] | np.ndarray, actual: Sequence[float] | np.ndarray, eps: float = EPSILON) -> float:
    """Population stability index between two bin-fraction vectors of the same length."""
    ref = np.clip(np.asarray(reference, dtype=float), eps, None)
    new = np.clip(np.asarray(actual, dtype=float), eps, None)
    if ref.shape != new.shape:
        raise ValueError(f"bin counts differ: {ref.shape} vs {new.shape}")
    return float(np.sum((new - ref) * np.log(new / ref)))


def as_float(column: pd.Series) -> np.ndarray:
    """A numeric column as float64, missing (and non-finite) values as NaN."""
    values: np.ndarray = pd.to_numeric(column, errors="coerce").astype("float64").to_numpy(copy=True)
    values[~np.isfinite(values)] = np.nan
    return values


def missing_fraction(column: pd.Series) -> float:
    if len(column) == 0:
        return 0.0
    return float(np.isnan(as_float(column)).mean()) if _is_numeric(column) else float(column.isna().mean())


def profile(frame: pd.DataFrame, features: Sequence[str], bins: int = DEFAULT_BINS) -> dict[str, Any]:
    """The JSON-ready profile of the given numeric feature columns of a data set."""
    summary: dict[str, Any] = {}
    for name in features:
        values = as_float(frame[name])
        finite = values[np.isfinite(values)]
        edges = quantile_edges(values, bins)
        summary[name] = {
            "edges": edges,
            "fractions": [float(f) for f in bin_fractions(values, edges)],
            "mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std()) if finite.size else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
            "missing": float(np.isnan(values).mean()) if values.size else 0.0,
        }
    return {"version": PROFILE_VERSION, "rows": len(frame), "bins": bins, "features": summary}


def drift(frame: pd.DataFrame, reference: Mapping[str, Any], features: Sequence[str]) -> dict[str, float]:
    """PSI per feature of `frame` against a stored profile (features missing from either are skipped)."""
    stored = reference.get("features", {})
    result: dict[str, float] = {}
    for name in features:
        if name not in stored or name not in frame.columns:
            continue
        values = as_float(frame[name])
        if not np.isfinite(values).any():
            continue  # all missing: the missing-fraction check reports it
        edges = stored[name]["edges"]
        result[name] = psi(stored[name]["fractions"], bin_fractions(values, edges))
    return result


def _is_numeric(column: pd.Series) -> bool:
    return bool(pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column))


def _type_failure(name: str, column: pd.Series) -> ValidationFailure | None:
    """A numeric feature must be numeric, or an object column whose every non-null value is a number."""
    if _is_numeric(column):
        return None
    non_null = column.notna()
    coerced = pd.to_numeric(column[non_null], errors="coerce")
    if pd.api.types.is_object_dtype(column) and not coerced.isna().any():
        return None
    return ValidationFailure(feature=name, check=TYPE, value=str(column.dtype), limit="numeric")


def _label_failures(frame: pd.DataFrame, label: str) -> list[ValidationFailure]:
    column = frame[label]
    values = pd.to_numeric(column, errors="coerce")
    missing = float(values.isna().mean()) if len(values) else 0.0
    if missing > 0:
        return [ValidationFailure(feature=label, check=MISSING_FRACTION, value=missing, limit=0.0)]
    classes = sorted({float(v) for v in values.unique()})
    if not set(classes) <= {0.0, 1.0}:
        shown = ", ".join(f"{c:g}" for c in classes[:5])
        return [ValidationFailure(feature=label, check=TYPE, value=f"values {shown}", limit="0 or 1")]
    if len(classes) < 2:
        return [ValidationFailure(feature=label, check=TYPE, value=f"only class {classes[0]:g}", limit="0 and 1")]
    return []


def validate(
    frame: pd.DataFrame,
    features: Sequence[str],
    label: str,
    max_missing_fraction: float,
    max_drift: float,
    reference: Mapping[str, Any] | None = None,
) -> ValidationReport:
    """Check the training data: columns and types, missing fraction per feature, drift vs `reference`."""
    failures: list[ValidationFailure] = []
    if len(frame) == 0:
        failures.append(ValidationFailure(feature="*", check=ROWS, value=0.0, limit=">= 1"))
        return ValidationReport(passed=False, reason=reason(failures), failures=failures, rows=0)
    present = [c for c in [*features, label] if c in frame.columns]
    failures += [ValidationFailure(feature=c, check=MISSING_COLUMN) for c in [*features, label] if c not in present]
    typed: list[str] = []
    for name in features:
        if name not in frame.columns:
            continue
        failure = _type_failure(name, frame[name])
        if failure is None:
            typed.append(name)
        else:
            failures.append(failure)
    for name in typed:
        fraction = missing_fraction(frame[name])
        if fraction > max_missing_fraction:
            failures.append(
                ValidationFailure(feature=name, check=MISSING_FRACTION, value=fraction, limit=max_missing_fraction)
            )
    if label in frame.columns:
        failures += _label_failures(frame, label)
    if reference is not None:
        for name, value in drift(frame, reference, typed).items():
            if value > max_drift:
                failures.append(ValidationFailure(feature=name, check=DRIFT, value=value, limit=max_drift))
    return ValidationReport(passed=not failures, reason=reason(failures), failures=failures, rows=len(frame))


def _number(value: float | str | None) -> str:
    if not isinstance(value, float | int):
        return str(value)
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.2g}"


def _limit(value: float | str | None) -> str:
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def reason(failures: Sequence[ValidationFailure]) -> str:
    """One line naming each failing feature, grouped by check, e.g.

    "missing fraction above 0.01: sessions_30d (0.20); drift above 0.2: monthly_charges (PSI 0.61)".
    """
    parts: list[str] = []
    by_check: dict[str, list[ValidationFailure]] = {}
    for f in failures:
        by_check.setdefault(f.check, []).append(f)
    if ROWS in by_check:
        parts.append("no rows")
    if MISSING_COLUMN in by_check:
        parts.append("missing columns: " + ", ".join(f.feature for f in by_check[MISSING_COLUMN]))
    if TYPE in by_check:
        parts.append("wrong type: " + ", ".join(f"{f.feature} ({f.value}, expected {f.limit})" for f in by_check[TYPE]))
    if MISSING_FRACTION in by_check:
        groups: dict[str, list[str]] = {}
        for f in by_check[MISSING_FRACTION]:
            groups.setdefault(_limit(f.limit), []).append(f"{f.feature} ({_number(f.value)})")
        parts += [f"missing fraction above {limit}: " + ", ".join(names) for limit, names in groups.items()]
    if DRIFT in by_check:
        limit = _limit(by_check[DRIFT][0].limit)
        parts.append(
            f"drift above {limit}: " + ", ".join(f"{f.feature} (PSI {_number(f.value)})" for f in by_check[DRIFT])
        )
    return "; ".join(parts)
