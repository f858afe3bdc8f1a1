"""The operator's own Prometheus metrics, served on $SLIPWAY_METRICS_PORT (the chart sets 8000)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..api.modeldeployment import ModelDeploymentStatus

RECONCILES = Counter(
    "slipway_reconciles_total", "Reconciles by kind and result (ok, retry, error).", ["kind", "result"]
)

PHASES = ("Pending", "Stable", "Progressing", "Paused", "RollingBack", "Degraded", "Failed")
TRAINING_PHASES = ("Pending", "Running", "Succeeded", "Failed")
TRAINING_RUNS = Gauge("slipway_training_runs", "TrainingRuns the operator sees, by phase.", ["phase"])
_run_phases: dict[tuple[str, str], str] = {}  # (namespace, name) -> phase, from the watch stream


def _count(phase: str) -> int:
    return sum(1 for p in list(_run_phases.values()) if p == phase)


for _phase in TRAINING_PHASES:
    TRAINING_RUNS.labels(_phase).set_function(functools.partial(_count, _phase))


def observe_training_run(namespace: str, name: str, phase: str | None) -> None:
    """Record a run's phase (None: the run is gone)."""
    if phase is None:
        _run_phases.pop((namespace, name), None)
    else:
        _run_phases[(namespace, name)] = phase


class DeploymentGauges(Collector):
    """The rollout gauges, built at scrape time from what each deployment last showed.

    A labelled Gauge keeps objects per series: 8 per deployment (weight and 7 phases), 5.7 MiB at
    1,000 deployments (tracemalloc), a share of the operator's peak in bench/operator_scale.py.
    Here a deployment costs a tuple (0.25 MiB), and a deleted one's series go with its entry."""

    def __init__(self) -> None:
        # (namespace, name) -> (candidate weight, phase, last value of each analysis metric)
        self._seen: dict[tuple[str, str], tuple[int, str, dict[str, float]]] = {}

    def observe(self, namespace: str, name: str, status: ModelDeploymentStatus) -> None:
        _, _, values = self._seen.get((namespace, name), (0, "", {}))
        measured = {r.metric: r.value for r in status.analysis if r.value is not None}
        weight = status.canary_weight if status.candidate_version else 0
        self._seen[(namespace, name)] = (weight, status.phase, {**values, **measured})

    def forget(self, namespace: str, name: str) -> None:
        self._seen.pop((namespace, name), None)

    def collect(self) -> Iterator[Metric]:
        weight = GaugeMetricFamily(
            "slipway_rollout_candidate_weight",
            "Traffic percent on the candidate, per ModelDeployment.",
            labels=["namespace", "name"],
        )
        phases = GaugeMetricFamily(
            "slipway_rollout_phase",
            "1 for the ModelDeployment's current phase, 0 for the others.",
            labels=["namespace", "name", "phase"],
        )
        analysis = GaugeMetricFamily(
            "slipway_analysis_value",
            "The last measured value per analysis metric.",
            labels=["namespace", "name", "metric"],
        )
        for (namespace, name), (candidate_weight, current, values) in list(self._seen.items()):
            weight.add_metric([namespace, name], candidate_weight)
            for phase in PHASES:
                phases.add_metric([namespace, name, phase], 1 if phase == current else 0)
            for metric, value in values.items():
                analysis.add_metric([namespace, name, metric], value)
        yield from (weight, phases, analysis)


DEPLOYMENTS = DeploymentGauges()
REGISTRY.register(DEPLOYMENTS)


def observe_deployment(namespace: str, name: str, status: ModelDeploymentStatus) -> None:
    DEPLOYMENTS.observe(namespace, name, status)


def forget_deployment(namespace: str, name: str) -> None:
    """A deleted deployment's series go with it: otherwise its last phase is scraped for good."""
    DEPLOYMENTS.forget(namespace, name)


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
