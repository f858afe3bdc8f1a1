"""The operator's own Prometheus metrics, served on $SLIPWAY_METRICS_PORT (the chart sets 8000)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import Counter, Gauge

from ..api.modeldeployment import ModelDeploymentStatus

RECONCILES = Counter(
    "slipway_reconciles_total", "Reconciles by kind and result (ok, retry, error).", ["kind", "result"]
)

ROLLOUT_WEIGHT = Gauge(
    "slipway_rollout_candidate_weight", "Traffic percent on the candidate, per ModelDeployment.", ["namespace", "name"]
)
ROLLOUT_PHASE = Gauge(
    "slipway_rollout_phase",
    "1 for the ModelDeployment's current phase, 0 for the others.",
    ["namespace", "name", "phase"],
)
ANALYSIS_RESULTS = Gauge(
    "slipway_analysis_value", "The last measured value per analysis metric.", ["namespace", "name", "metric"]
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


def observe_deployment(namespace: str, name: str, status: ModelDeploymentStatus) -> None:
    ROLLOUT_WEIGHT.labels(namespace, name).set(status.canary_weight if status.candidate_version else 0)
    for phase in PHASES:
        ROLLOUT_PHASE.labels(namespace, name, phase).set(1 if status.phase == phase else 0)
    for result in status.analysis:
        if result.value is not None:
            ANALYSIS_RESULTS.labels(namespace, name, result.metric).set(result.value)


def forget_deployment(namespace: str, name: str) -> None:
    """A deleted deployment's series go with it: otherwise its last phase is scraped for good."""
    with contextlib.suppress(KeyError):
        ROLLOUT_WEIGHT.remove(namespace, name)
    for phase in PHASES:
        with contextlib.suppress(KeyError):
            ROLLOUT_PHASE.remove(namespace, name, phase)
    ANALYSIS_RESULTS.remove_by_labels({"namespace": namespace, "name": name})


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
