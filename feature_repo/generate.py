"""Deterministic generator of the churn example data set.

Writes, into one directory:

- ``customer_activity.parquet``: one row per customer about every 7 days
  (``customer_id``, ``event_timestamp``, activity features);
- ``customer_billing.parquet``: one row per customer about every 30 days
  (``customer_id``, ``event_timestamp``, billing features);
- ``labels.parquet``: the entity/label data set (``customer_id``, ``event_timestamp``, ``churned``).

Feature values move over time (AR(1) latent states), and each label is drawn from a logistic
function of the feature values *as of the label's timestamp* (the latest source row at or before
it), plus noise, so a point-in-time-correct join lets a model learn it and a join that leaks later
rows does worse.

``--missing FEATURE=FRACTION`` blanks that fraction of the feature's rows (exactly
``round(FRACTION * rows)`` of them); ``--shift FEATURE=DELTA`` adds ``DELTA`` to every value of the
feature (integer features add ``round(DELTA)``). Labels are always computed from the clean,
unshifted values, so those options change the features only.

``--append-days DAYS --set FEATURE=VALUE`` instead appends a fresh period to the data set already
in ``--out`` (``append_fresh``): the world after it moved, for retraining on fresh data.

The same arguments give the same frames and the same parquet bytes. This module imports only
numpy and pandas (no Feast) and is listed in ``.feastignore``.

Usage: ``python -m feature_repo.generate --out DIR --customers N --seed S``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

DATA_DIR_ENV = "SLIPWAY_FEAST_DATA"
ENTITY_KEY = "customer_id"
TIMESTAMP = "event_timestamp"
LABEL = "churned"

ACTIVITY = "customer_activity"
BILLING = "customer_billing"
LABELS = "labels"

#: Feature columns of each batch source, in order, with their pandas dtypes.
FEATURES: dict[str, dict[str, str]] = {
    ACTIVITY: {
        "sessions_30d": "int64",
        "days_since_last_login": "int64",
        "support_tickets_90d": "int64",
        "avg_session_minutes": "float64",
    },
    BILLING: {
        "monthly_charges": "float64",
        "tenure_months": "int64",
        "contract_type": "int64",  # 0 month-to-month, 1 one year, 2 two years
        "payment_failures_90d": "int64",
    },
}

DEFAULT_START = datetime(2025, 1, 1, tzinfo=UTC)
DEFAULT_DAYS = 180
ACTIVITY_EVERY = timedelta(days=7)
BILLING_EVERY = timedelta(days=30)
#: Labels are drawn only after this much of the range, so every customer has source rows before them.
LABEL_WARMUP = timedelta(days=35)


def default_data_dir() -> Path:
    """``$SLIPWAY_FEAST_DATA`` if set, else ``feature_repo/data`` next to this file."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parent / "data"


def feature_columns() -> list[str]:
    """Every feature column of the batch sources, activity first, in source order."""
    return [name for cols in FEATURES.values() for name in cols]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def _snapshot_times(
    rng: np.random.Generator, customers: int, start: datetime, end: datetime, every: timedelta
) -> tuple[np.ndarray, np.ndarray]:
    """Per-customer regular snapshots with a random phase: (customer index, seconds since start)."""
    span = int((end - start).total_seconds())
    step = int(every.total_seconds())
    phase = rng.integers(0, step, size=customers)
    count = -(-span // step)
    offsets = phase[:, None] + step * np.arange(count)[None, :]
    cust = np.repeat(np.arange(customers), count).reshape(customers, count)
    keep = offsets < span
    return cust, np.where(keep, offsets, -1)


def _as_of(times: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Index of the latest snapshot at or before ``at`` in each row of ``times`` (-1 marks padding)."""
    valid = np.where(times >= 0, times, np.iinfo(np.int64).max)
    idx = (valid <= at[:, None]).sum(axis=1) - 1
    if (idx < 0).any():
        raise AssertionError("a label precedes every source row of its customer")
    return np.asarray(idx)


def make_frames(
    customers: int = 1000,
    seed: int = 0,
    *,
    start: datetime = DEFAULT_START,
    days: int = DEFAULT_DAYS,
    labels_per_customer: int = 2,
    missing: Mapping[str, float] | None = None,
    shift: Mapping[str, float] | None = None,
) -> dict[str, pd.DataFrame]:
    """Build the three frames in memory: keys ``customer_activity``, ``customer_billing``, ``labels``."""
    if customers < 1:
        raise ValueError("customers must be >= 1")
    if days * 86400 <= LABEL_WARMUP.total_seconds():
        raise ValueError(f"days must exceed the label warm-up of {LABEL_WARMUP.days} days")
    if labels_per_customer < 1:
        raise ValueError("labels_per_customer must be >= 1")
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    end = start + timedelta(days=days)
    rng = np.random.default_rng(seed)
    n = customers
    ids = np.arange(1001, 1001 + n, dtype=np.int64)

    # Static traits.
    contract = rng.choice(3, size=n, p=[0.55, 0.25, 0.20]).astype(np.int64)
    tenure0 = rng.integers(0, 60, size=n)
    base_charges = 20.0 + 90.0 * rng.beta(2.0, 2.5, size=n)
    engagement_mean = rng.normal(0.0, 0.8, size=n)
    trouble_mean = rng.normal(0.0, 0.7, size=n)
    pay_risk_mean = rng.normal(0.0, 0.8, size=n)

    # Activity: weekly snapshots, engagement and trouble follow AR(1) around each customer's mean.
    a_cust, a_off = _snapshot_times(rng, n, start, end, ACTIVITY_EVERY)
    k = a_off.shape[1]
    engagement = np.empty((n, k))
    trouble = np.empty((n, k))
    e = engagement_mean + rng.normal(0, 0.6, n)
    t = trouble_mean + rng.normal(0, 0.5, n)
    for j in range(k):
        e = engagement_mean + 0.7 * (e - engagement_mean) + rng.normal(0, 0.6, n)
        t = trouble_mean + 0.6 * (t - trouble_mean) + rng.normal(0, 0.5, n)
        engagement[:, j], trouble[:, j] = e, t
    sessions = rng.poisson(np.exp(2.3 + 0.55 * engagement))
    days_since = np.floor(rng.exponential(np.exp(1.1 - 0.7 * engagement))).astype(np.int64)
    tickets = rng.poisson(np.exp(-0.3 + 0.7 * trouble))
    minutes = np.round(np.exp(rng.normal(2.6 + 0.2 * engagement, 0.3)), 2)

    # Billing: monthly snapshots; charges drift, tenure grows, payment risk is AR(1).
    b_cust, b_off = _snapshot_times(rng, n, start, end, BILLING_EVERY)
    m = b_off.shape[1]
    charges = np.empty((n, m))
    failures = np.empty((n, m), dtype=np.int64)
    c = base_charges.copy()
    r = pay_risk_mean + rng.normal(0, 0.5, n)
    for j in range(m):
        c = np.maximum(10.0, c + rng.normal(0.0, 2.0, n) + (rng.random(n) < 0.08) * 10.0)
        r = pay_risk_mean + 0.6 * (r - pay_risk_mean) + rng.normal(0, 0.6, n)
        charges[:, j] = np.round(c, 2)
        failures[:, j] = rng.poisson(np.exp(-1.2 + 0.9 * r))
    tenure = tenure0[:, None] + np.maximum(b_off, 0) // int(BILLING_EVERY.total_seconds())
    contracts = np.repeat(contract[:, None], m, axis=1)

    # Labels: random times after the warm-up; the label uses the as-of features.
    span = int((end - start).total_seconds())
    warm = int(LABEL_WARMUP.total_seconds())
    lab_off = np.sort(rng.integers(warm, span, size=(n, labels_per_customer)), axis=1)
    lab_cust = np.repeat(np.arange(n), labels_per_customer)
    lab_at = lab_off.reshape(-1)
    ai = _as_of(a_off[lab_cust], lab_at)
    bi = _as_of(b_off[lab_cust], lab_at)
    f_sessions = sessions[lab_cust, ai]
    f_days = days_since[lab_cust, ai]
    f_tickets = tickets[lab_cust, ai]
    f_charges = charges[lab_cust, bi]
    f_tenure = tenure[lab_cust, bi]
    f_contract = contracts[lab_cust, bi]
    f_failures = failures[lab_cust, bi]
    charges_per_tenure = f_charges / np.maximum(f_tenure, 1)
    logit = (
        -0.9
        - 0.12 * (f_sessions - 10.0)
        + 0.10 * (np.minimum(f_days, 30) - 3.0)
        + 0.45 * (f_tickets - 0.8)
        + 0.6 * (f_failures - 0.4)
        + 0.025 * (f_charges - 60.0)
        - 0.035 * (f_tenure - 30.0)
        - 0.9 * f_contract
        + 0.08 * np.minimum(charges_per_tenure, 20.0)
        + rng.normal(0.0, 0.5, size=lab_at.shape)
    )
    churned = (rng.random(lab_at.shape) < _sigmoid(logit)).astype(np.int64)

    def stamps(offsets: np.ndarray) -> pd.DatetimeIndex:
        return pd.DatetimeIndex(pd.Timestamp(start) + pd.to_timedelta(offsets, unit="s"))

    keep_a = a_off >= 0
    activity = pd.DataFrame(
        {
            ENTITY_KEY: ids[a_cust[keep_a]],
            TIMESTAMP: stamps(a_off[keep_a]),
            "sessions_30d": sessions[keep_a].astype(np.int64),
            "days_since_last_login": days_since[keep_a],
            "support_tickets_90d": tickets[keep_a].astype(np.int64),
            "avg_session_minutes": minutes[keep_a].astype(np.float64),
        }
    )
    keep_b = b_off >= 0
    billing = pd.DataFrame(
        {
            ENTITY_KEY: ids[b_cust[keep_b]],
            TIMESTAMP: stamps(b_off[keep_b]),
            "monthly_charges": charges[keep_b],
            "tenure_months": tenure[keep_b].astype(np.int64),
            "contract_type": contracts[keep_b],
            "payment_failures_90d": failures[keep_b],
        }
    )
    labels = pd.DataFrame({ENTITY_KEY: ids[lab_cust], TIMESTAMP: stamps(lab_at), LABEL: churned})
    frames = {ACTIVITY: activity, BILLING: billing, LABELS: labels}

    for feature, delta in (shift or {}).items():
        view = _view_of(feature)
        col = frames[view][feature]
        frames[view][feature] = col + (round(delta) if FEATURES[view][feature] == "int64" else delta)
    for feature, fraction in sorted((missing or {}).items()):
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"missing fraction for {feature} must be within 0..1, got {fraction}")
        view = _view_of(feature)
        frame = frames[view]
        blank = round(fraction * len(frame))
        picker = np.random.default_rng([seed, zlib.crc32(feature.encode())])
        rows = picker.choice(len(frame), size=blank, replace=False)
        # Integers become pandas' nullable Int64 (still int64 in parquet); floats use NaN.
        integer = FEATURES[view][feature] == "int64"
        column = frame[feature].astype("Int64" if integer else "float64")
        column.iloc[rows] = pd.NA if integer else np.nan
        frame[feature] = column
    return frames


def _view_of(feature: str) -> str:
    for view, cols in FEATURES.items():
        if feature in cols:
            return view
    raise ValueError(f"unknown feature {feature!r}; known: {', '.join(feature_columns())}")


def write_frames(frames: Mapping[str, pd.DataFrame], out: Path) -> dict[str, Path]:
    """Write each frame to ``out/<name>.parquet`` (deterministic bytes for equal frames)."""
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, frame in frames.items():
        path = out / f"{name}.parquet"
        frame.to_parquet(path, index=False, engine="pyarrow", compression="snappy")
        paths[name] = path
    return paths


def generate(
    out: Path | str,
    customers: int = 1000,
    seed: int = 0,
    *,
    start: datetime = DEFAULT_START,
    days: int = DEFAULT_DAYS,
    labels_per_customer: int = 2,
    missing: Mapping[str, float] | None = None,
    shift: Mapping[str, float] | None = None,
) -> dict[str, Path]:
    """Make the data set and write it under ``out``; returns the parquet path of each frame."""
    frames = make_frames(
        customers,
        seed,
        start=start,
        days=days,
        labels_per_customer=labels_per_customer,
        missing=missing,
        shift=shift,
    )
    return write_frames(frames, Path(out))


#: Fraction of the customers that get one fresh label each in an appended period: few enough that the
#: fresh rows stay within the data validation's default drift limit (PSI 0.2) against the old data.
FRESH_LABEL_FRACTION = 0.2


def fresh_frames(
    frames: Mapping[str, pd.DataFrame],
    days: int,
    values: Mapping[str, float],
    seed: int = 0,
    label_fraction: float = FRESH_LABEL_FRACTION,
) -> tuple[dict[str, pd.DataFrame], datetime]:
    """The fresh rows of a period of ``days`` after the data's last timestamp, and the period's start.

    Every entity gets a new snapshot in each source at the period's start (its latest row, with
    ``values`` set: the features as the world now has them), and a sample of the customers get a
    label inside the period (their latest label), so a training run's point-in-time join sees the
    new values. Pure: the caller writes them.
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    for feature in values:
        _view_of(feature)
    end = max(pd.Timestamp(frame[TIMESTAMP].max()) for frame in frames.values())
    start = (end + pd.Timedelta(hours=1)).floor("h")
    fresh: dict[str, pd.DataFrame] = {}
    for view in FEATURES:
        latest = frames[view].sort_values(TIMESTAMP, kind="mergesort").groupby(ENTITY_KEY, sort=True).tail(1)
        rows = latest.sort_values(ENTITY_KEY, kind="mergesort").reset_index(drop=True).copy()
        rows[TIMESTAMP] = start
        for feature, value in values.items():
            if _view_of(feature) == view:
                integer = FEATURES[view][feature] == "int64"
                rows[feature] = round(value) if integer else float(value)
        fresh[view] = rows
    labels = frames[LABELS].sort_values(TIMESTAMP, kind="mergesort").groupby(ENTITY_KEY, sort=True).tail(1)
    labels = labels.sort_values(ENTITY_KEY, kind="mergesort").reset_index(drop=True)
    rng = np.random.default_rng([seed, days])
    picked = labels.iloc[np.sort(rng.choice(len(labels), size=round(label_fraction * len(labels)), replace=False))]
    offsets = rng.integers(60, days * 86400, size=len(picked))  # after the snapshot, inside the period
    picked = picked.copy()
    picked[TIMESTAMP] = pd.DatetimeIndex(start + pd.to_timedelta(offsets, unit="s"))
    fresh[LABELS] = picked.reset_index(drop=True)
    return fresh, start.to_pydatetime()


def append_fresh(
    out: Path | str, days: int, values: Mapping[str, float], seed: int = 0
) -> tuple[datetime, datetime, dict[str, int]]:
    """Appends a fresh period (``fresh_frames``) to the data set in ``out``: (start, end, rows appended)."""
    out = Path(out)
    frames = {name: pd.read_parquet(out / f"{name}.parquet") for name in (*FEATURES, LABELS)}
    fresh, start = fresh_frames(frames, days, values, seed)
    merged = {name: pd.concat([frames[name], fresh[name]], ignore_index=True) for name in frames}
    write_frames(merged, out)
    return start, start + timedelta(days=days), {name: len(rows) for name, rows in fresh.items()}


def parse_assignments(items: Iterable[str] | None, what: str) -> dict[str, float]:
    """Parse ``["a=0.1", "b=2"]`` (also comma-separated) into ``{"a": 0.1, "b": 2.0}``."""
    result: dict[str, float] = {}
    for item in items or []:
        for part in filter(None, (p.strip() for p in item.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"{what} expects FEATURE=NUMBER, got {part!r}")
            _view_of(name.strip())
            result[name.strip()] = float(value)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m feature_repo.generate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", type=Path, default=None, help=f"output directory (default: ${DATA_DIR_ENV} or feature_repo/data)"
    )
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", default=DEFAULT_START.date().isoformat(), help="first day (UTC), YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="length of the time range in days")
    parser.add_argument("--labels-per-customer", type=int, default=2)
    parser.add_argument(
        "--missing", action="append", metavar="FEATURE=FRACTION", help="blank a fraction of a feature's rows"
    )
    parser.add_argument(
        "--shift", action="append", metavar="FEATURE=DELTA", help="add DELTA to every value of a feature"
    )
    parser.add_argument(
        "--append-days", type=int, default=None, help="append a fresh period of this many days to --out's data"
    )
    parser.add_argument("--set", action="append", metavar="FEATURE=VALUE", help="a feature's value in the fresh period")
    args = parser.parse_args(argv)
    if args.append_days is not None:
        try:
            start, end, rows = append_fresh(
                args.out or default_data_dir(), args.append_days, parse_assignments(args.set, "--set"), args.seed
            )
        except ValueError as exc:
            parser.error(str(exc))
        json.dump({"start": start.isoformat(), "end": end.isoformat(), "rows": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    try:
        missing = parse_assignments(args.missing, "--missing")
        shift = parse_assignments(args.shift, "--shift")
        start = datetime.fromisoformat(args.start).replace(tzinfo=UTC)
        out = args.out or default_data_dir()
        paths = generate(
            out,
            args.customers,
            args.seed,
            start=start,
            days=args.days,
            labels_per_customer=args.labels_per_customer,
            missing=missing,
            shift=shift,
        )
    except ValueError as exc:
        parser.error(str(exc))
    summary = {name: str(path) for name, path in paths.items()}
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
