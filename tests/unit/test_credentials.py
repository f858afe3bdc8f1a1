"""Object-store credentials reach the trainer and the model server by Secret reference only."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from slipway.api.modeldeployment import ModelDeploymentSpec
from slipway.api.modelversion import ModelVersionSpec
from slipway.api.trainingrun import TrainingRunSpec
from slipway.builders.inferenceservice import build_inferenceservice
from slipway.builders.rayjob import build_rayjob

RUN: dict[str, Any] = {
    "model": "churn",
    "image": "trainer:1",
    "features": {"featureService": "churn_v1", "entities": {"uri": "s3://d/l.parquet"}, "label": "churned"},
    "artifacts": {"uri": "s3://models/churn/", "credentialsSecret": "models-s3"},
}
VERSION = ModelVersionSpec.model_validate({"model": "churn", "version": 1, "uri": "s3://models/churn/runs/r/"})


def deployment(**predictor: Any) -> ModelDeploymentSpec:
    return ModelDeploymentSpec.model_validate({"model": "churn", "predictor": {"image": "predictor:1", **predictor}})


def test_ray_head_and_workers_take_the_secret_as_environment() -> None:
    job = build_rayjob("r", "ml", TrainingRunSpec.model_validate(RUN), 0)
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]["template"]["spec"], cluster["workerGroupSpecs"][0]["template"]["spec"]]
    for pod in pods:
        assert pod["containers"][0]["envFrom"] == [{"secretRef": {"name": "models-s3"}}]


def test_model_server_takes_the_secret_and_kserve_the_service_account() -> None:
    spec = deployment(credentialsSecret="models-s3", serviceAccountName="models-reader")
    predictor = build_inferenceservice("churn-v1", "ml", "churn", spec, VERSION)["spec"]["predictor"]
    assert predictor["containers"][0]["envFrom"] == [{"secretRef": {"name": "models-s3"}}]
    assert predictor["serviceAccountName"] == "models-reader"


def test_without_a_secret_nothing_is_referenced() -> None:
    run = {**RUN, "artifacts": {"uri": "s3://models/churn/"}}
    assert "envFrom" not in json.dumps(build_rayjob("r", "ml", TrainingRunSpec.model_validate(run), 0))
    isvc = build_inferenceservice("churn-v1", "ml", "churn", deployment(), VERSION)
    assert "envFrom" not in json.dumps(isvc) and "serviceAccountName" not in json.dumps(isvc)


@pytest.mark.parametrize("name", ["Models_S3", "-s3", "a" * 254])
def test_a_secret_name_must_be_a_dns_subdomain(name: str) -> None:
    with pytest.raises(ValidationError, match=r"credentials_secret|credentialsSecret"):
        TrainingRunSpec.model_validate({**RUN, "artifacts": {"uri": "s3://m/", "credentialsSecret": name}})


def test_specs_have_no_field_for_credentials_in_clear() -> None:
    # Every field whose name smells of a credential is a reference to a Secret or a ServiceAccount.
    for model in (TrainingRunSpec, ModelDeploymentSpec):
        schema = json.dumps(model.model_json_schema(by_alias=True)).lower()
        for word in ("password", "accesskey", "secretkey", "token", "apikey"):
            assert f'"{word}' not in schema.replace("_", ""), (model.__name__, word)
