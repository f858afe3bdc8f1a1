"""The predictor's Prometheus metrics (default registry; KServe serves it at /metrics).

The names and labels are a contract: the operator's analysis queries read them
(`operator/slipway/reconcile/analysis.py`). Every series carries `model` and `revision`; the
input monitor's (`monitor`: drift, missing and out-of-range values against the training data's
profile) carry `feature` too and are computed at scrape time by one collector, `INPUTS`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from prometheus_client import REGISTRY, Counter, Histogram

from .monitor import InputCollector, InputMonitor

LABELS = ("model", "revision")
OUTCOMES = ("success", "client_error", "server_error")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
PREDICTION_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 21))

REQUESTS = Counter(
    "slipway_requests_total", "Predict/infer HTTP requests by outcome (by status: 2xx, 4xx, 5xx).", [*LABELS, "outcome"]
)
REQUEST_DURATION = Histogram(
    "slipway_request_duration_seconds",
    "Time from a predict/infer request's arrival to its response.",
    LABELS,
    buckets=LATENCY_BUCKETS,
)
PREDICTIONS = Counter("slipway_predictions_total", "Instances predicted.", LABELS)
PREDICTION_VALUE = Histogram(
    "slipway_prediction_value", "Predicted probabilities (mean = _sum / _count).", LABELS, buckets=PREDICTION_BUCKETS
)
FEATURES_REQUESTED = Counter("slipway_features_requested_total", "Feature values given to the model.", LABELS)
FEATURES_MISSING = Counter(
    "slipway_features_missing_total", "Feature values missing (NaN, imputed) after enrichment.", LABELS
)
INPUTS = InputCollector()
REGISTRY.register(INPUTS)


def outcome(status: int | None) -> str:
    """The outcome label of an HTTP status (no status at all: the server failed)."""
    if status is None or status >= 500:
        return "server_error"
    if status >= 400:
        return "client_error"
    return "success"


class ModelMetrics:
    """The metric children of one model revision, bound once (labels are looked up per request otherwise)."""

    def __init__(self, model: str, revision: str) -> None:
        self.model, self.revision = model, revision
        self.inputs: InputMonitor | None = None  # set by `monitor_inputs`; the scorer feeds it each batch
        self.requests = {name: REQUESTS.labels(model, revision, name) for name in OUTCOMES}
        self.duration = REQUEST_DURATION.labels(model, revision)
        self.predictions = PREDICTIONS.labels(model, revision)
        self.values = PREDICTION_VALUE.labels(model, revision)
        self.features_requested = FEATURES_REQUESTED.labels(model, revision)
        self.features_missing = FEATURES_MISSING.labels(model, revision)

    def monitor_inputs(self, monitor: InputMonitor | None) -> None:
        """Compare the rows this revision serves with its training profile (None: no monitoring)."""
        self.inputs = monitor
        INPUTS.watch(self.model, self.revision, monitor)

    def request(self, status: int | None, seconds: float) -> None:
        self.requests[outcome(status)].inc()
        self.duration.observe(seconds)

    def predicted(self, probabilities: np.ndarray | Sequence[float], features: int, missing: int) -> None:
        self.predictions.inc(len(probabilities))
        observe = self.values.observe
        for p in probabilities:
            observe(float(p))
        self.features_requested.inc(features)
        self.features_missing.inc(missing)
