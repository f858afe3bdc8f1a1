"""mustBeatServing on the new data: the job scores the serving model on its own held-out split.

The operator passes the serving version ({"version", "uri"}) in $SLIPWAY_TRAINING_RUN; the job
loads that TorchScript as the predictor does and records its metrics on the same held-out rows in
manifest.json's `serving`. Two runs on the same data and seed share the split, so the serving
model's score in the second run's manifest is the first run's own held-out score.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pipelines.churn import baseline

from slipway.api.artifacts import MANIFEST_FILE, Manifest, run_uri
from slipway.api.trainingrun import ServingModel
from tests.integration.test_pipeline_train import FAST, Run, clean, ray_address
from tests.integration.test_pipeline_train import train as train_entrypoint

__all__ = ["clean", "ray_address"]  # test_pipeline_train's module fixtures, used here too

pytestmark = pytest.mark.integration


def train(name: str, data: Path, artifacts: Path, ray_address: str, serving: ServingModel | None, *args: str) -> Run:
    """The entrypoint as a RayJob runs it, with the serving version in its run config."""
    named = serving.model_dump(by_alias=True) if serving is not None else None
    return train_entrypoint(name, data, artifacts, ray_address, *FAST, *args, serving=named)


def manifest_of(run: Run) -> Manifest:
    assert run.returncode == 0, run.output[-6000:]
    return Manifest.model_validate_json((run.run_dir / MANIFEST_FILE).read_text())


def test_the_job_scores_the_serving_version_on_its_held_out_split(
    clean: Path, tmp_path: Path, ray_address: str
) -> None:
    artifacts = tmp_path / "artifacts"
    served = manifest_of(train("churn-a", clean, artifacts, ray_address, None))
    assert served.serving is None  # nothing named: nothing scored

    serving = ServingModel(version=1, uri=run_uri(artifacts.as_uri(), "churn-a"))
    second = train("churn-b", clean, artifacts, ray_address, serving, "--hp", "learningRate=0.02")
    manifest = manifest_of(second)
    assert manifest.serving is not None and not manifest.serving.problem, manifest.serving
    assert (manifest.serving.version, manifest.serving.uri) == (1, serving.uri)
    assert set(manifest.serving.metrics) == {"auc", "accuracy", "logLoss"}
    print(f"new model {manifest.metrics}; version 1 on the same split {manifest.serving.metrics}")
    # Same data, same seed: the same held-out rows, so version 1 scores what it scored on them itself.
    for metric, value in served.metrics.items():
        assert manifest.serving.metrics[metric] == pytest.approx(value, abs=1e-5), metric
    assert "serving version 1 on this run's held-out data" in second.output


def test_a_serving_model_that_cannot_be_scored_says_why(clean: Path, tmp_path: Path) -> None:
    """What the gate then falls back from: a problem in the manifest, never a failed training job."""
    from feature_repo.store import historical_features, open_store
    from pipelines.predictor import artifact

    frame = historical_features(open_store(data_dir=str(clean)), clean / "labels.parquet")
    labels = frame["churned"].to_numpy(dtype="float32")

    def score(directory: Path) -> tuple[dict[str, float], str]:
        got = baseline.score_serving(ServingModel(version=2, uri=directory.as_uri() + "/"), frame, labels, "")
        return got.metrics, got.problem

    metrics, problem = score(tmp_path / "absent")
    assert metrics == {} and problem.startswith("its artifact does not load: ArtifactError"), problem

    def version(directory: Path, module: torch.nn.Module, features: list[str]) -> Path:
        artifact.write(str(directory), artifact.script_bytes(module), Manifest(metrics={"auc": 0.9}, features=features))
        return directory

    three = ["sessions_30d", "days_since_last_login", "tenure_months"]
    probability = torch.nn.Sequential(torch.nn.Linear(3, 1), torch.nn.Flatten(0), torch.nn.Sigmoid())

    metrics, problem = score(version(tmp_path / "other", probability, [*three[:2], "favourite_colour"]))
    assert (metrics, problem) == ({}, "its features differ: favourite_colour not in this run's data")

    metrics, problem = score(version(tmp_path / "wide", torch.nn.Linear(3, 2), three))
    assert metrics == {} and problem.startswith("scoring failed: ValueError: the model returned shape (")

    metrics, problem = score(version(tmp_path / "fine", probability, three))
    assert problem == "" and set(metrics) == {"auc", "accuracy", "logLoss"}
