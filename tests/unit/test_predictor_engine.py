"""spec.predictor.engine (kserve | ray-serve), batching, and the stable version keeping its predictor.

The builder turns the engine into the container's environment, resources and /dev/shm; the
rollout runs the candidate on the spec's predictor while the stable version keeps the one it was
promoted with (status.stablePredictor), whole rollouts played through `Cluster` under both
traffic modes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from slipway.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Predictor
from slipway.builders.inferenceservice import build_inferenceservice, container_resources, shm_size
from slipway.reconcile.predictors import predictor_of, record_predictor
from slipway.reconcile.rollout import Commands
from slipway.reconcile.status import status_patch
from tests.unit.test_modeldeployment import BLUE_GREEN, CANARY, Cluster, established, md, mv

RAY = {"image": "predictor:2", "engine": "ray-serve", "rayServe": {"replicas": 2}}


def predictor(**fields: Any) -> Predictor:
    return Predictor.model_validate({"image": "predictor:1", **fields})


def container(spec: ModelDeploymentSpec, version: int = 1) -> dict[str, Any]:
    obj = build_inferenceservice(f"churn-v{version}", "ml", "churn", spec, mv(version))
    containers: list[dict[str, Any]] = obj["spec"]["predictor"]["containers"]
    return containers[0]


def engine_env(obj: dict[str, Any]) -> dict[str, str]:
    """The container's SLIPWAY_ variables that are not about the model or its features."""
    env = {e["name"]: e["value"] for e in obj["spec"]["predictor"]["containers"][0]["env"]}
    skip = {"SLIPWAY_MODEL", "SLIPWAY_MODEL_VERSION", "SLIPWAY_FEATURE_SERVICE", "SLIPWAY_ENTITY_KEY"}
    return {k: v for k, v in env.items() if k.startswith("SLIPWAY_") and k not in skip}


def isvc_of(spec: ModelDeploymentSpec) -> dict[str, Any]:
    return build_inferenceservice("churn-v1", "ml", "churn", spec, mv(1))


# == the builder ===============================================================================================
@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, {"SLIPWAY_ENGINE": "kserve", "SLIPWAY_MAX_BATCH_SIZE": "64", "SLIPWAY_MAX_BATCH_WAIT_MS": "2"}),
        (  # rayServe is allowed, and ignored, on the kserve engine
            {"rayServe": {"replicas": 4}, "batching": {"maxBatchSize": 128, "maxWaitMs": 0.5}},
            {"SLIPWAY_ENGINE": "kserve", "SLIPWAY_MAX_BATCH_SIZE": "128", "SLIPWAY_MAX_BATCH_WAIT_MS": "0.5"},
        ),
        (
            {"engine": "ray-serve"},  # rayServe's defaults
            {
                "SLIPWAY_ENGINE": "ray-serve",
                "SLIPWAY_MAX_BATCH_SIZE": "64",
                "SLIPWAY_MAX_BATCH_WAIT_MS": "2",
                "SLIPWAY_RAY_REPLICAS": "2",
                "SLIPWAY_RAY_CPUS_PER_REPLICA": "1",
                "SLIPWAY_RAY_GPUS_PER_REPLICA": "0",
            },
        ),
        (
            {
                "engine": "ray-serve",
                "rayServe": {"replicas": 3, "cpusPerReplica": 0.5, "gpusPerReplica": 1},
                "batching": {"maxBatchSize": 1, "maxWaitMs": 0},
            },
            {
                "SLIPWAY_ENGINE": "ray-serve",
                "SLIPWAY_MAX_BATCH_SIZE": "1",
                "SLIPWAY_MAX_BATCH_WAIT_MS": "0",
                "SLIPWAY_RAY_REPLICAS": "3",
                "SLIPWAY_RAY_CPUS_PER_REPLICA": "0.5",
                "SLIPWAY_RAY_GPUS_PER_REPLICA": "1",
            },
        ),
        (  # autoscaling replaces the fixed count
            {"engine": "ray-serve", "rayServe": {"replicas": 9, "autoscaling": {"minReplicas": 1, "maxReplicas": 4}}},
            {
                "SLIPWAY_ENGINE": "ray-serve",
                "SLIPWAY_MAX_BATCH_SIZE": "64",
                "SLIPWAY_MAX_BATCH_WAIT_MS": "2",
                "SLIPWAY_RAY_MIN_REPLICAS": "1",
                "SLIPWAY_RAY_MAX_REPLICAS": "4",
                "SLIPWAY_RAY_CPUS_PER_REPLICA": "1",
                "SLIPWAY_RAY_GPUS_PER_REPLICA": "0",
            },
        ),
    ],
    ids=["kserve-defaults", "kserve-ignores-rayServe", "ray-defaults", "ray-gpus", "ray-autoscaling"],
)
def test_the_engine_and_batching_reach_the_container_env_exactly(
    fields: dict[str, Any], expected: dict[str, str]
) -> None:
    obj = isvc_of(md(predictor={"image": "predictor:1", **fields}))
    assert engine_env(obj) == expected


def test_the_kserve_engine_leaves_resources_and_volumes_as_given() -> None:
    given = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "2Gi"}}
    obj = isvc_of(md(predictor={"image": "predictor:1", "resources": given, "rayServe": {"replicas": 8}}))
    assert obj["spec"]["predictor"]["containers"][0]["resources"] == given
    # only a request without a limit is completed, with the request as the limit
    partial = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"memory": "3Gi"}}
    obj = isvc_of(md(predictor={"image": "predictor:1", "resources": partial}))
    assert obj["spec"]["predictor"]["containers"][0]["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "1", "memory": "3Gi"},
    }
    assert "volumes" not in obj["spec"]["predictor"]
    assert "volumeMounts" not in obj["spec"]["predictor"]["containers"][0]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # the most replicas x cpusPerReplica, plus 1 for the KServe front and Ray's own processes
        ({}, {"requests": {"cpu": "3"}, "limits": {"cpu": "3"}}),
        ({"rayServe": {"replicas": 4, "cpusPerReplica": 2}}, {"requests": {"cpu": "9"}, "limits": {"cpu": "9"}}),
        (
            {"rayServe": {"replicas": 3, "cpusPerReplica": 0.5}},
            {"requests": {"cpu": "2500m"}, "limits": {"cpu": "2500m"}},
        ),
        (
            {"rayServe": {"replicas": 1, "autoscaling": {"maxReplicas": 5}}},
            {"requests": {"cpu": "6"}, "limits": {"cpu": "6"}},
        ),
        # never less than what the user asked for, in the user's own words
        (
            {"resources": {"requests": {"cpu": "8000m", "memory": "4Gi"}}},
            {"requests": {"cpu": "8000m", "memory": "4Gi"}, "limits": {"cpu": "8000m", "memory": "4Gi"}},
        ),
        ({"resources": {"requests": {"cpu": "500m"}}}, {"requests": {"cpu": "3"}, "limits": {"cpu": "3"}}),
        # a CPU limit may not be below the request: it is raised with it; a request without one is its limit
        ({"resources": {"limits": {"cpu": "2"}}}, {"requests": {"cpu": "3"}, "limits": {"cpu": "3"}}),
        ({"resources": {"limits": {"cpu": "16"}}}, {"requests": {"cpu": "3"}, "limits": {"cpu": "16"}}),
        (
            {"resources": {"requests": {"cpu": "6"}, "limits": {"cpu": "4"}}},
            {"requests": {"cpu": "6"}, "limits": {"cpu": "6"}},
        ),
        # GPUs: replicas x gpusPerReplica as request and limit both
        (
            {"rayServe": {"replicas": 2, "gpusPerReplica": 1}},
            {"requests": {"cpu": "3", "nvidia.com/gpu": "2"}, "limits": {"cpu": "3", "nvidia.com/gpu": "2"}},
        ),
        (
            {"rayServe": {"replicas": 2, "gpusPerReplica": 1}, "resources": {"limits": {"nvidia.com/gpu": "4"}}},
            {"requests": {"cpu": "3", "nvidia.com/gpu": "4"}, "limits": {"cpu": "3", "nvidia.com/gpu": "4"}},
        ),
    ],
)
def test_ray_serve_resources_make_room_for_the_replicas(fields: dict[str, Any], expected: dict[str, Any]) -> None:
    resources = container_resources(predictor(engine="ray-serve", **fields))
    assert resources == expected


@pytest.mark.parametrize(
    ("resources", "size"),
    [
        ({}, "1Gi"),
        ({"limits": {"memory": "4Gi"}}, "1228Mi"),
        ({"requests": {"memory": "2Gi"}}, "614Mi"),
        ({"requests": {"memory": "8Gi"}, "limits": {"memory": "10Gi"}}, "3072Mi"),  # the limit counts
        ({"limits": {"memory": "100Mi"}}, "64Mi"),
    ],
)
def test_ray_serve_gets_a_memory_backed_dev_shm(resources: dict[str, Any], size: str) -> None:
    spec = md(predictor={"image": "predictor:1", "engine": "ray-serve", "resources": resources})
    assert shm_size(spec.predictor) == size
    obj = isvc_of(spec)
    assert obj["spec"]["predictor"]["volumes"] == [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": size}}
    ]
    assert obj["spec"]["predictor"]["containers"][0]["volumeMounts"] == [{"name": "dshm", "mountPath": "/dev/shm"}]


def test_predictor_settings_replace_the_spec_predictor_but_not_the_rest() -> None:
    spec = md(predictor={**RAY, "features": {"featureService": "churn_v1", "entityKey": "customer_id"}})
    obj = build_inferenceservice("churn-v1", "ml", "churn", spec, mv(1), predictor_settings=predictor())
    assert engine_env(obj)["SLIPWAY_ENGINE"] == "kserve"
    assert obj["spec"]["predictor"]["containers"][0]["image"] == "predictor:1"
    assert obj["metadata"]["labels"]["slipway.dev/deployment"] == "churn"


# == the stable version keeps its predictor ========================================================================
def engines(cluster: Cluster) -> dict[str, str]:
    return {name: engine_env(obj)["SLIPWAY_ENGINE"] for name, obj in cluster.isvcs.items()}


def generations(cluster: Cluster) -> dict[str, int]:
    return {name: obj["metadata"]["generation"] for name, obj in cluster.isvcs.items()}


def serving_v1(strategy: dict[str, Any], traffic: str = "gateway") -> Cluster:
    """Version 1 stable on the kserve engine; the spec pins version 1."""
    return established(md(version=1, traffic=traffic, strategy=strategy), [mv(1), mv(2)])


def to_v2_on_ray(cluster: Cluster, **spec: Any) -> None:
    """The spec changes version and engine together."""
    current = cluster.spec.model_dump(by_alias=True, exclude_none=True)
    cluster.spec = ModelDeploymentSpec.model_validate({**current, "version": 2, "predictor": RAY, **spec})


def test_a_canary_on_a_new_engine_leaves_the_stable_version_as_it_was() -> None:
    cluster = serving_v1(CANARY)
    assert cluster.status.stable_predictor == record_predictor(predictor())
    before = generations(cluster)
    to_v2_on_ray(cluster)
    cluster.ready.add(2)
    steps: set[int] = set()
    for _ in range(1000):
        cluster.tick()
        if cluster.status.stable_version == 2:
            break
        steps.add(cluster.status.step or 0)
        # Through every step, version 1 is the very InferenceService it was: no new revision.
        assert cluster.isvcs["churn-v1"]["metadata"]["generation"] == before["churn-v1"]
        assert engines(cluster)["churn-v1"] == "kserve"
        assert cluster.status.stable_predictor == record_predictor(predictor())
        if "churn-v2" in cluster.isvcs:
            assert engines(cluster)["churn-v2"] == "ray-serve"
            assert cluster.isvcs["churn-v2"]["spec"]["predictor"]["containers"][0]["image"] == "predictor:2"
    assert steps == {0, 1} and cluster.status.phase == "Stable"
    # Promoted: the record is now the candidate's, the former stable one drains on its own settings.
    assert cluster.status.stable_predictor == record_predictor(cluster.spec.predictor)
    assert cluster.status.previous_version == 1
    assert cluster.status.previous_predictor == record_predictor(predictor())
    assert engines(cluster) == {"churn-v1": "kserve", "churn-v2": "ray-serve"}
    assert generations(cluster)["churn-v1"] == before["churn-v1"]
    cluster.until(lambda c: c.status.previous_version is None)
    cluster.tick()
    assert engines(cluster) == {"churn-v2": "ray-serve"} and cluster.status.previous_predictor is None


def test_a_rolled_back_candidate_leaves_the_stable_version_on_its_own_engine() -> None:
    cluster = serving_v1(CANARY)
    to_v2_on_ray(cluster)
    cluster.ready.add(2)
    cluster.verdict = "Failed"
    cluster.until(lambda c: c.status.phase == "Degraded")
    for _ in range(5):  # the spec still asks for version 2 on ray-serve: nothing is under way, yet v1 keeps kserve
        cluster.tick()
        assert engines(cluster) == {"churn-v1": "kserve", "churn-v2": "ray-serve"}
    assert cluster.status.stable_predictor == record_predictor(predictor())
    # The spec goes back to version 1 but keeps the new engine: now it applies to the stable version.
    current = cluster.spec.model_dump(by_alias=True, exclude_none=True)
    cluster.spec = ModelDeploymentSpec.model_validate({**current, "version": 1})
    cluster.tick()
    assert engines(cluster) == {"churn-v1": "ray-serve"}
    assert cluster.status.stable_predictor == record_predictor(cluster.spec.predictor)


def test_with_no_rollout_a_predictor_change_applies_to_the_stable_version_at_once() -> None:
    cluster = serving_v1(CANARY)
    before = generations(cluster)["churn-v1"]
    current = cluster.spec.model_dump(by_alias=True, exclude_none=True)
    cluster.spec = ModelDeploymentSpec.model_validate({**current, "predictor": RAY})
    result = cluster.tick()
    assert engines(cluster) == {"churn-v1": "ray-serve"} and generations(cluster)["churn-v1"] == before + 1
    assert result.status.phase == "Stable" and result.status.candidate_version is None
    assert result.status.stable_predictor == record_predictor(cluster.spec.predictor)


def test_replica_counts_follow_the_spec_for_every_version_mid_rollout() -> None:
    cluster = serving_v1(CANARY)
    to_v2_on_ray(cluster)
    cluster.tick()
    assert cluster.status.candidate_version == 2
    predictor_body = {**RAY, "minReplicas": 2, "maxReplicas": 6}
    current = cluster.spec.model_dump(by_alias=True, exclude_none=True)
    cluster.spec = ModelDeploymentSpec.model_validate({**current, "predictor": predictor_body})
    cluster.tick()
    v1 = cluster.isvcs["churn-v1"]["spec"]["predictor"]
    assert (v1["minReplicas"], v1["maxReplicas"]) == (2, 6)
    assert engines(cluster)["churn-v1"] == "kserve"
    assert "minReplicas" not in (cluster.status.stable_predictor or {})


def test_blue_green_switch_back_restores_the_old_version_and_its_engine() -> None:
    cluster = serving_v1(BLUE_GREEN)
    v1 = generations(cluster)["churn-v1"]
    to_v2_on_ray(cluster)
    cluster.ready.add(2)
    cluster.until(lambda c: c.status.stable_version == 2)
    assert engines(cluster) == {"churn-v1": "kserve", "churn-v2": "ray-serve"}
    cluster.tick(30)
    cluster.commands = Commands(abort="a1")
    cluster.tick()
    cluster.tick()
    assert cluster.status.stable_version == 1 and cluster.status.phase == "Degraded"
    assert cluster.status.stable_predictor == record_predictor(predictor())
    assert engines(cluster) == {"churn-v1": "kserve", "churn-v2": "ray-serve"}
    assert generations(cluster)["churn-v1"] == v1  # warm all along, never restarted: an instant switch back


def test_kserve_traffic_runs_the_candidate_revision_on_its_engine_and_switches_back_on_the_stable_one() -> None:
    # One InferenceService: KServe keeps the stable version's revision as it was; the spec's revision
    # is the candidate's. A switch back after promotion serves the stable version's record again.
    cluster = serving_v1(BLUE_GREEN, traffic="kserve")
    to_v2_on_ray(cluster)
    cluster.tick()
    assert engines(cluster) == {"churn": "ray-serve"}
    cluster.ready.add(2)
    cluster.until(lambda c: c.status.stable_version == 2)
    assert engines(cluster) == {"churn": "ray-serve"}
    cluster.tick(5)
    cluster.commands = Commands(abort="a1")
    cluster.tick()
    cluster.tick()
    assert cluster.status.stable_version == 1 and cluster.kserve_split() == {1: 100}
    assert engines(cluster) == {"churn": "kserve"}


def test_the_recorded_predictors_survive_an_operator_restart_at_every_tick() -> None:
    live, restarted = serving_v1(CANARY), serving_v1(CANARY)
    for cluster in (live, restarted):
        to_v2_on_ray(cluster)
        cluster.ready.add(2)
    for _ in range(400):
        text = json.dumps(restarted.status.model_dump(by_alias=True, exclude_none=True))
        restarted.status = ModelDeploymentStatus.model_validate(json.loads(text))
        live.tick()
        restarted.tick()
        assert live.isvcs == restarted.isvcs
        assert live.status.model_dump() == restarted.status.model_dump()
        if live.status.previous_version is None and live.status.stable_version == 2:
            break
    assert live.status.stable_version == 2


def test_a_status_from_an_older_operator_falls_back_to_the_spec_and_is_recorded_once_stable() -> None:
    spec = md(version=2, predictor=RAY)
    status = ModelDeploymentStatus(stable_version=1, candidate_version=2)
    assert predictor_of(spec, status, 1) == spec.predictor  # nothing recorded: as before
    status.stable_predictor = {"image": "p:1", "engine": "gpu-magic"}  # not this schema's
    assert predictor_of(spec, status, 1) == spec.predictor
    cluster = established(md(), [mv(1)])
    cluster.status.stable_predictor = None
    cluster.tick()
    assert cluster.status.stable_predictor == record_predictor(cluster.spec.predictor)


def test_a_recorded_predictor_losing_a_key_is_patched_with_null() -> None:
    # Status goes out as a JSON merge patch, which merges objects key by key.
    autoscaled = {"image": "p:1", "engine": "ray-serve", "rayServe": {"replicas": 2, "autoscaling": {"maxReplicas": 4}}}
    current = ModelDeploymentStatus(stable_version=1, stable_predictor=autoscaled)
    desired = ModelDeploymentStatus(
        stable_version=1, stable_predictor={"image": "p:1", "engine": "ray-serve", "rayServe": {"replicas": 2}}
    )
    patch = status_patch(current.model_dump(by_alias=True, exclude_none=True), desired)
    assert patch == {"stablePredictor": {"rayServe": {"autoscaling": None}}}
