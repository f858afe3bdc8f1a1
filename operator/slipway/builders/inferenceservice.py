"""ModelDeployment + ModelVersion -> KServe InferenceService (serving.kserve.io/v1beta1)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from kubernetes.utils.quantity import parse_quantity

from ..api.modeldeployment import ModelDeploymentSpec, Predictor
from ..api.modelversion import ModelVersionSpec
from ..api.resources import DEPLOYMENT_LABEL, INFERENCE_SERVICES, MANAGED_BY, MODEL_LABEL, VERSION_LABEL

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
# gateway traffic splits between two InferenceServices behind an HTTPRoute and needs no Knative.
# KServe's current names: its defaulter rewrites the legacy RawDeployment/Serverless on every apply.
DEPLOYMENT_MODES = {"gateway": "Standard", "kserve": "Knative"}
PREDICTOR_PORT = 8080
GPU = "nvidia.com/gpu"
# ray-serve: room beside the replicas for the KServe front and Ray's own processes (GCS, raylet,
# the Serve controller), which would otherwise take their CPU from the replicas.
RAY_OVERHEAD_CPUS = Decimal(1)
# Ray's object store is a memory-mapped file in /dev/shm, sized by default at 30% of the memory
# Ray sees. A container's own /dev/shm is the runtime's 64Mi, so Ray would warn and fall back to
# disk (slow); a memory-backed emptyDir gives it the room, and counts against the memory limit.
SHM_FRACTION = Decimal("0.3")
SHM_DEFAULT = "1Gi"  # without a memory limit or request to take 30% of
SHM_VOLUME = "dshm"


def predictor_env(deployment: ModelDeploymentSpec, version: ModelVersionSpec) -> list[dict[str, str]]:
    # STORAGE_URI on a custom container makes KServe's storage initializer fetch the artifact.
    env = [
        {"name": "STORAGE_URI", "value": version.uri},
        {"name": "SLIPWAY_MODEL", "value": version.model},
        {"name": "SLIPWAY_MODEL_VERSION", "value": str(version.version)},
    ]
    env += engine_env(deployment.predictor)
    if deployment.predictor.features:
        env += [
            {"name": "SLIPWAY_FEATURE_SERVICE", "value": deployment.predictor.features.feature_service},
            {"name": "SLIPWAY_ENTITY_KEY", "value": deployment.predictor.features.entity_key},
        ]
    return env


def engine_env(predictor: Predictor) -> list[dict[str, str]]:
    """What pipelines.predictor reads to pick its engine, batching and Ray Serve replicas."""
    batching = predictor.batching
    env = [
        {"name": "SLIPWAY_ENGINE", "value": predictor.engine},
        {"name": "SLIPWAY_MAX_BATCH_SIZE", "value": str(batching.max_batch_size)},
        {"name": "SLIPWAY_MAX_BATCH_WAIT_MS", "value": f"{batching.max_wait_ms:g}"},
    ]
    if predictor.engine != "ray-serve":
        return env
    ray = predictor.ray_serve_settings
    if ray.autoscaling is not None:
        env += [
            {"name": "SLIPWAY_RAY_MIN_REPLICAS", "value": str(ray.autoscaling.min_replicas)},
            {"name": "SLIPWAY_RAY_MAX_REPLICAS", "value": str(ray.autoscaling.max_replicas)},
        ]
    else:
        env.append({"name": "SLIPWAY_RAY_REPLICAS", "value": str(ray.replicas)})
    return [
        *env,
        {"name": "SLIPWAY_RAY_CPUS_PER_REPLICA", "value": f"{ray.cpus_per_replica:g}"},
        {"name": "SLIPWAY_RAY_GPUS_PER_REPLICA", "value": str(ray.gpus_per_replica)},
    ]


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity (500m, 2Gi, 1) as a number, as the API server reads it."""
    value: Decimal = parse_quantity(text)  # type: ignore[no-untyped-call]  # the client is untyped
    return value


def container_resources(predictor: Predictor) -> dict[str, dict[str, str]]:
    """spec.predictor.resources; for ray-serve, raised to what its replicas need, never lowered.

    CPU: the most replicas times cpusPerReplica plus RAY_OVERHEAD_CPUS, in the request (and in the
    limit when one is set: it may not be below the request). GPUs: the most replicas times
    gpusPerReplica, as request and limit both (extended resources need them equal).

    A CPU or memory request without a limit gets the request as its limit: KServe's defaulting
    webhook would otherwise add its configured default limits (1 CPU, 2Gi as shipped), and a request
    above them makes the predictor's Deployment invalid, so the version would never be served.
    """
    requests, limits = dict(predictor.resources.requests), dict(predictor.resources.limits)
    if predictor.engine == "ray-serve":
        ray = predictor.ray_serve_settings
        cpus = ray.most_replicas * Decimal(str(ray.cpus_per_replica)) + RAY_OVERHEAD_CPUS
        requests["cpu"] = _at_least(requests.get("cpu"), cpus)
        if "cpu" in limits:
            limits["cpu"] = _at_least(limits["cpu"], quantity(requests["cpu"]))
        gpus = ray.most_replicas * ray.gpus_per_replica
        if gpus > 0:
            given = [quantity(q) for q in (requests.get(GPU), limits.get(GPU)) if q is not None]
            requests[GPU] = limits[GPU] = str(int(max([Decimal(gpus), *given])))
    for key in ("cpu", "memory"):
        if key in requests:
            limits.setdefault(key, requests[key])
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def _at_least(given: str | None, cpus: Decimal) -> str:
    """The user's quantity as written when it is enough, else `cpus` (in millicores when fractional)."""
    if given is not None and quantity(given) >= cpus:
        return given
    millis = int((cpus * 1000).to_integral_value())
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def shm_size(predictor: Predictor) -> str:
    """SHM_FRACTION of the memory limit (else the request), in Mi; SHM_DEFAULT without either."""
    memory = predictor.resources.limits.get("memory") or predictor.resources.requests.get("memory")
    if memory is None:
        return SHM_DEFAULT
    mebibytes = int(quantity(memory) * SHM_FRACTION / 2**20)
    return f"{max(mebibytes, 64)}Mi"


READY_PATH = "/v2/health/ready"  # the Open Inference Protocol's server readiness, both engines


def inferenceservice_name(deployment_name: str, deployment: ModelDeploymentSpec, version: int) -> str:
    """gateway: one InferenceService per version (the route splits); kserve: one, revised in place."""
    return f"{deployment_name}-v{version}" if deployment.traffic_mode == "gateway" else deployment_name


def predictor_service(isvc_name: str) -> str:
    """The Service KServe (Standard mode) puts in front of an InferenceService's predictor."""
    return f"{isvc_name}-predictor"


def build_inferenceservice(
    name: str,
    namespace: str,
    deployment_name: str,
    deployment: ModelDeploymentSpec,
    version: ModelVersionSpec,
    canary_traffic_percent: int | None = None,
    predictor_settings: Predictor | None = None,
) -> dict[str, Any]:
    """One InferenceService serving `version`; the handler adds the owner reference.

    `canary_traffic_percent` (kserve traffic only) sends that share to this spec's revision and
    the rest to KServe's last rolled-out revision. `predictor_settings` replaces
    `deployment.predictor` (the stable version keeps its own during a rollout).
    """
    if predictor_settings is not None:
        deployment = deployment.model_copy(update={"predictor": predictor_settings})
    predictor = deployment.predictor
    resources = container_resources(predictor)
    container: dict[str, Any] = {
        "name": "kserve-container",
        "image": predictor.image,
        "args": [f"--model_name={version.model}", f"--http_port={PREDICTOR_PORT}"],
        "env": predictor_env(deployment, version),
        "ports": [{"containerPort": PREDICTOR_PORT, "protocol": "TCP"}],
        # Ready once the model is loaded, not once the port is open (KServe's default tcpSocket
        # probe): the gateway and the rollout must not count a server that would answer 503.
        "readinessProbe": {
            "httpGet": {"path": READY_PATH, "port": PREDICTOR_PORT},
            "periodSeconds": 5,
            "failureThreshold": 3,
        },
    }
    if resources:
        container["resources"] = resources
    if predictor.credentials_secret:  # referenced, never copied: the values stay in the Secret
        container["envFrom"] = [{"secretRef": {"name": predictor.credentials_secret}}]
    predictor_spec: dict[str, Any] = {
        "minReplicas": predictor.min_replicas,
        "maxReplicas": predictor.max_replicas,
        "containers": [container],
    }
    if predictor.service_account_name:
        predictor_spec["serviceAccountName"] = predictor.service_account_name
    if predictor.engine == "ray-serve":
        container["volumeMounts"] = [{"name": SHM_VOLUME, "mountPath": "/dev/shm"}]
        predictor_spec["volumes"] = [
            {"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm_size(predictor)}}
        ]
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
            "annotations": {DEPLOYMENT_MODE_ANNOTATION: DEPLOYMENT_MODES[deployment.traffic_mode]},
        },
        "spec": {"predictor": predictor_spec},
    }
