"""ModelDeployment + ModelVersion -> KServe InferenceService (serving.kserve.io/v1beta1)."""

from __future__ import annotations

from typing import Any

from ..api.modeldeployment import ModelDeploymentSpec
from ..api.modelversion import ModelVersionSpec
from ..api.resources import DEPLOYMENT_LABEL, INFERENCE_SERVICES, MANAGED_BY, MODEL_LABEL, VERSION_LABEL

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# gateway traffic splits between two InferenceServices behind an HTTPRoute and needs no Knative.
DEPLOYMENT_MODES = {"gateway": "RawDeployment", "kserve": "Serverless"}
PREDICTOR_PORT = 8080


def predictor_env(deployment: ModelDeploymentSpec, version: ModelVersionSpec) -> list[dict[str, str]]:
    # STORAGE_URI on a custom container makes KServe's storage initializer fetch the artifact.
    env = [
        {"name": "STORAGE_URI", "value": version.uri},
        {"name": "SLIPWAY_MODEL", "value": version.model},
        {"name": "SLIPWAY_MODEL_VERSION", "value": str(version.version)},
    ]
    if deployment.predictor.features:
        env += [
            {"name": "SLIPWAY_FEATURE_SERVICE", "value": deployment.predictor.features.feature_service},
            {"name": "SLIPWAY_ENTITY_KEY", "value": deployment.predictor.features.entity_key},
        ]
    return env


def inferenceservice_name(deployment_name: str, deployment: ModelDeploymentSpec, version: int) -> str:
    """gateway: one InferenceService per version (the route splits); kserve: one, revised in place."""
    return f"{deployment_name}-v{version}" if deployment.traffic == "gateway" else deployment_name


def predictor_service(isvc_name: str) -> str:
    """The Service KServe (RawDeployment) puts in front of an InferenceService's predictor."""
    return f"{isvc_name}-predictor"


def build_inferenceservice(
    name: str,
    namespace: str,
    deployment_name: str,
    deployment: ModelDeploymentSpec,
    version: ModelVersionSpec,
    canary_traffic_percent: int | None = None,
) -> dict[str, Any]:
    """One InferenceService serving `version`; the handler adds the owner reference.

    `canary_traffic_percent` (kserve traffic only) sends that share to this spec's revision and
    the rest to KServe's last rolled-out revision.
    """
    predictor = deployment.predictor
    resources = predictor.resources.model_dump(by_alias=True, exclude_defaults=True)
    container: dict[str, Any] = {
        "name": "kserve-container",
        "image": predictor.image,
        "args": [f"--model_name={version.model}", f"--http_port={PREDICTOR_PORT}"],
        "env": predictor_env(deployment, version),
        "ports": [{"containerPort": PREDICTOR_PORT, "protocol": "TCP"}],
    }
    if resources:
        container["resources"] = resources
    predictor_spec: dict[str, Any] = {
        "minReplicas": predictor.min_replicas,
        "maxReplicas": predictor.max_replicas,
        "containers": [container],
    }
    if canary_traffic_percent is not None:
        predictor_spec["canaryTrafficPercent"] = canary_traffic_percent
    return {
        "apiVersion": INFERENCE_SERVICES.api_version,
        "kind": INFERENCE_SERVICES.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                **MANAGED_BY,
                MODEL_LABEL: version.model,
                DEPLOYMENT_LABEL: deployment_name,
                VERSION_LABEL: str(version.version),
            },
            "annotations": {DEPLOYMENT_MODE_ANNOTATION: DEPLOYMENT_MODES[deployment.traffic]},
        },
        "spec": {"predictor": predictor_spec},
    }
