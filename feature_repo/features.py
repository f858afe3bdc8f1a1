"""Feast definitions of the churn example: the only module `feast apply` imports from this repo.

Objects: entity ``customer`` (join key ``customer_id``, int64); batch feature views
``customer_activity`` and ``customer_billing`` (one FileSource parquet each); on-demand feature
view ``customer_derived`` (``charges_per_tenure_month``); feature service ``churn_v1``.

Where the parquet sources are:

- ``$SLIPWAY_FEAST_DATA`` unset (the default): ``data/<view>.parquet``, a path relative to the
  feature repo, which Feast resolves against the repo it was applied from (this checkout, or a temp
  copy of it) whenever it reads a source.
- ``$SLIPWAY_FEAST_DATA`` a local directory: absolute paths inside it.
- ``$SLIPWAY_FEAST_DATA`` an object-store URI (``s3://bucket/churn``, ``gs://...``): URIs under it;
  ``$SLIPWAY_FEAST_S3_ENDPOINT`` sets an S3 endpoint (MinIO and the like).

The variable is read when this module is imported (that is, at ``feast apply``). The helpers in
``feature_repo.store`` call :func:`definitions` with an explicit data directory instead.

This module must stay self-contained: ``feast apply`` imports it as the top-level module
``features`` (Feast changes into the repo directory), so it cannot import from the package.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.on_demand_feature_view import OnDemandFeatureView, on_demand_feature_view
from feast.types import Float64, Int64

DATA_DIR_ENV = "SLIPWAY_FEAST_DATA"
S3_ENDPOINT_ENV = "SLIPWAY_FEAST_S3_ENDPOINT"
FEATURE_SERVICE = "churn_v1"
ENTITY_KEY = "customer_id"
TIMESTAMP = "event_timestamp"


def source_uri(data_dir: str | os.PathLike[str] | None, view: str) -> str:
    """Where the parquet source of ``view`` lives for a given data directory (see the module doc)."""
    if data_dir is None or str(data_dir) == "":
        return f"data/{view}.parquet"
    text = str(data_dir)
    if text.startswith("file://"):
        text = text[len("file://") :]
    if "://" in text:
        return f"{text.rstrip('/')}/{view}.parquet"
    return str(Path(text).expanduser().resolve() / f"{view}.parquet")


def charges_per_tenure_month(inputs: pd.DataFrame) -> pd.DataFrame:
    """Monthly charges divided by tenure in months (a tenure of 0 counts as 1)."""
    import pandas as pd

    out = pd.DataFrame(index=inputs.index)
    tenure = inputs["tenure_months"].astype("float64").clip(lower=1.0)
    out["charges_per_tenure_month"] = inputs["monthly_charges"].astype("float64") / tenure
    return out


def _fresh(fn: Any) -> Any:
    """A copy of ``fn``: Feast's ``on_demand_feature_view`` decorator rewrites its function's
    ``__module__`` (to pickle it by value), which breaks reading its source a second time."""
    copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    copy.__qualname__ = fn.__qualname__
    copy.__doc__ = fn.__doc__
    copy.__annotations__ = dict(fn.__annotations__)
    return copy


@dataclass(frozen=True)
class Definitions:
    """Every Feast object of the repo, built for one data directory."""

    customer: Entity
    activity_source: FileSource
    billing_source: FileSource
    customer_activity: FeatureView
    customer_billing: FeatureView
    customer_derived: OnDemandFeatureView
    churn_v1: FeatureService

    def objects(self) -> list[Any]:
        """The objects in the order ``FeatureStore.apply`` takes them."""
        return [
            self.customer,
            self.activity_source,
            self.billing_source,
            self.customer_activity,
            self.customer_billing,
            self.customer_derived,
            self.churn_v1,
        ]


def definitions(data_dir: str | os.PathLike[str] | None = None, s3_endpoint: str | None = None) -> Definitions:
    """Build the repo's objects with sources under ``data_dir`` (None: ``data/`` relative to the repo)."""
    customer = Entity(
        name="customer",
        join_keys=[ENTITY_KEY],
        value_type=ValueType.INT64,
        description="A subscriber of the service.",
    )
    activity_source = FileSource(
        name="customer_activity_source",
        path=source_uri(data_dir, "customer_activity"),
        timestamp_field=TIMESTAMP,
        s3_endpoint_override=s3_endpoint,
        description="Weekly product-usage snapshots per customer.",
    )
    billing_source = FileSource(
        name="customer_billing_source",
        path=source_uri(data_dir, "customer_billing"),
        timestamp_field=TIMESTAMP,
        s3_endpoint_override=s3_endpoint,
        description="Monthly billing snapshots per customer.",
    )
    customer_activity = FeatureView(
        name="customer_activity",
        entities=[customer],
        ttl=timedelta(days=30),
        schema=[
            Field(name=ENTITY_KEY, dtype=Int64),
            Field(name="sessions_30d", dtype=Int64, description="Sessions in the last 30 days."),
            Field(name="days_since_last_login", dtype=Int64, description="Whole days since the last login."),
            Field(name="support_tickets_90d", dtype=Int64, description="Support tickets in the last 90 days."),
            Field(name="avg_session_minutes", dtype=Float64, description="Mean session length in minutes."),
        ],
        source=activity_source,
        online=True,
        tags={"team": "growth"},
    )
    customer_billing = FeatureView(
        name="customer_billing",
        entities=[customer],
        ttl=timedelta(days=60),
        schema=[
            Field(name=ENTITY_KEY, dtype=Int64),
            Field(name="monthly_charges", dtype=Float64, description="Current monthly charges."),
            Field(name="tenure_months", dtype=Int64, description="Months since sign-up."),
            Field(
                name="contract_type",
                dtype=Int64,
                description="0 month-to-month, 1 one-year, 2 two-year contract.",
            ),
            Field(name="payment_failures_90d", dtype=Int64, description="Failed payments in the last 90 days."),
        ],
        source=billing_source,
        online=True,
        tags={"team": "billing"},
    )
    customer_derived = on_demand_feature_view(
        name="customer_derived",
        sources=[customer_billing],
        schema=[Field(name="charges_per_tenure_month", dtype=Float64)],
        mode="pandas",
        description="Charges per month of tenure (new, expensive customers churn more).",
    )(_fresh(charges_per_tenure_month))
    churn_v1 = FeatureService(
        name=FEATURE_SERVICE,
        features=[customer_activity, customer_billing, customer_derived],
        description="Features of the churn model, version 1.",
        tags={"model": "churn"},
    )
    return Definitions(
        customer=customer,
        activity_source=activity_source,
        billing_source=billing_source,
        customer_activity=customer_activity,
        customer_billing=customer_billing,
        customer_derived=customer_derived,
        churn_v1=churn_v1,
    )


# Module-level objects: what `feast apply` registers.
_defs = definitions(os.environ.get(DATA_DIR_ENV) or None, os.environ.get(S3_ENDPOINT_ENV) or None)
customer = _defs.customer
customer_activity_source = _defs.activity_source
customer_billing_source = _defs.billing_source
customer_activity = _defs.customer_activity
customer_billing = _defs.customer_billing
customer_derived = _defs.customer_derived
churn_v1 = _defs.churn_v1
