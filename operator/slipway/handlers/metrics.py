"""The operator's own Prometheus metrics, served on $SLIPWAY_METRICS_PORT (the chart sets 8000)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import Counter

RECONCILES = Counter(
    "slipway_reconciles_total", "Reconciles by kind and result (ok, retry, error).", ["kind", "result"]
)


@contextmanager
def counted(kind: str) -> Iterator[None]:
    """Counts one reconcile of `kind` by how it ended; exceptions pass through to Kopf."""
    try:
        yield
    except kopf.TemporaryError:
        RECONCILES.labels(kind, "retry").inc()
        raise
    except Exception:
        RECONCILES.labels(kind, "error").inc()
        raise
    RECONCILES.labels(kind, "ok").inc()
