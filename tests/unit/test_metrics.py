"""The rollout gauges, built at scrape time (handlers/metrics.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from slipway.api.modeldeployment import ModelDeploymentStatus
from slipway.handlers.metrics import DeploymentGauges


def scrape(gauges: DeploymentGauges) -> set[str]:
    registry = CollectorRegistry()
    registry.register(gauges)
    text = generate_latest(registry).decode()
    return {line for line in text.splitlines() if line and not line.startswith("#")}


def status(**fields: object) -> ModelDeploymentStatus:
    return ModelDeploymentStatus.model_validate(fields)


def test_each_deployment_shows_its_weight_one_phase_and_its_measurements() -> None:
    gauges = DeploymentGauges()
    analysis = [{"metric": "error-rate", "value": 0.02, "verdict": "Passed"}]
    gauges.observe("ml", "churn", status(phase="Progressing", candidateVersion=2, canaryWeight=20, analysis=analysis))
    lines = scrape(gauges)
    assert 'slipway_rollout_candidate_weight{name="churn",namespace="ml"} 20.0' in lines
    assert 'slipway_rollout_phase{name="churn",namespace="ml",phase="Progressing"} 1.0' in lines
    assert 'slipway_rollout_phase{name="churn",namespace="ml",phase="Stable"} 0.0' in lines
    assert sum(line.startswith("slipway_rollout_phase{") for line in lines) == 7
    assert 'slipway_analysis_value{metric="error-rate",name="churn",namespace="ml"} 0.02' in lines


def test_a_measurement_stays_until_measured_again_and_the_weight_follows_the_candidate() -> None:
    gauges = DeploymentGauges()
    analysis = [{"metric": "error-rate", "value": 0.02, "verdict": "Passed"}]
    gauges.observe("ml", "churn", status(phase="Progressing", candidateVersion=2, canaryWeight=20, analysis=analysis))
    gauges.observe("ml", "churn", status(phase="Stable", canaryWeight=20))  # promoted: no candidate
    lines = scrape(gauges)
    assert 'slipway_rollout_candidate_weight{name="churn",namespace="ml"} 0.0' in lines
    assert 'slipway_analysis_value{metric="error-rate",name="churn",namespace="ml"} 0.02' in lines


def test_a_forgotten_deployment_has_no_series() -> None:
    gauges = DeploymentGauges()
    gauges.observe("ml", "churn", status(phase="Stable"))
    gauges.observe("ml", "fraud", status(phase="Stable"))
    gauges.forget("ml", "churn")
    names = {line.split('name="')[1].split('"')[0] for line in scrape(gauges)}
    assert names == {"fraud"}
