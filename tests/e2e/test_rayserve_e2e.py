"""End to end in the dev stack: a canary onto the ray-serve engine, under real traffic and analysis.

Real kube-apiserver, operator, model servers behind nginx and Prometheus (no training: two
ModelVersions of the same small model are registered by hand, so the candidate differs from the
stable version only in its engine). Version 1 serves on kserve; the spec then asks for version 2
on ray-serve with 2 replicas. The canary walks its steps on Prometheus analysis and is promoted,
while version 1's InferenceService stays exactly as it was; both engines' revisions export the
same series with the same labels; a predictor change with no new version applies to the stable
version directly, and the ray-serve revision it replaces leaves no process behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from slipway.devstack.modelserver import alive, family, marked
from slipway.devstack.serving import MARKER_ENV
from slipway.devstack.stack import NAMESPACE, DevStack
from slipway.devstack.traffic import LoadGenerator
from tests.e2e.rollouts import GROUP, HOST, PLAIN_INSTANCES, VERSION, canary, md_status, prometheus, register, until
from tests.support import wait_for, write_model_run

pytestmark = pytest.mark.e2e
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
RAY_START_TIMEOUT = 180  # Ray and its replicas start in 10-20 s here; more on a loaded machine
CANARY = canary(progress_deadline=f"{RAY_START_TIMEOUT}s")
RAY_SERVE = {"image": "local-dev", "engine": "ray-serve", "rayServe": {"replicas": 2}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("dev"), with_training=False) as running:
        yield running


def register_model(stack: DevStack, api: client.CustomObjectsApi, number: int) -> None:
    """Version `number`: the same small model each time (seed 1), registered by hand."""
    register(api, number, write_model_run(stack.artifacts / "runs" / f"churn-{number}", seed=1))


def isvc(api: client.CustomObjectsApi, name: str) -> dict[str, Any] | None:
    try:
        obj: Any = api.get_namespaced_custom_object(*ISVC[:2], NAMESPACE, ISVC[2], name)
    except client.ApiException as error:
        if error.status == 404:
            return None
        raise
    return dict(obj)


def engine_of(obj: dict[str, Any]) -> str:
    env = {e["name"]: e.get("value") for e in obj["spec"]["predictor"]["containers"][0]["env"]}
    return str(env["SLIPWAY_ENGINE"])


def series(stack: DevStack, revision: str) -> dict[str, set[frozenset[str]]]:
    """Every slipway_ series a revision's model servers export, as Prometheus stored them: metric
    name -> the label names it carries (and, for outcome, the outcomes seen)."""
    found: dict[str, set[frozenset[str]]] = {}
    query = f'{{__name__=~"slipway_.+",namespace="{NAMESPACE}",model="churn",revision="{revision}"}}'
    for sample in prometheus(stack, query):
        labels = dict(sample["metric"])
        name = labels.pop("__name__")
        for varying in ("revision", "instance", "pod", "isvc", "le"):  # per revision, per server, per bucket
            labels.pop(varying, None)
        keys = frozenset(f"{k}={v}" if k in ("model", "outcome") else k for k, v in labels.items())
        found.setdefault(name, set()).add(keys)
    return found


def server_processes(stack: DevStack) -> set[tuple[int, str]]:
    """Every process of every model server the executor runs now (Ray's included; not nginx)."""
    started = marked(MARKER_ENV, str(stack.workdir))  # every process the executor started, and theirs
    servers = [pid for pid in started if b"pipelines.predictor" in cmdline(pid)]
    return {p for pid in servers for p in family(pid)}


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # exited meanwhile
        return b""


@pytest.fixture(scope="module")
def load(stack: DevStack, api: client.CustomObjectsApi) -> Iterator[LoadGenerator]:
    """Version 1 serving on kserve, with steady traffic through the gateway."""
    register_model(stack, api, 1)
    deployment = stack.model_deployment(strategy=CANARY, features=False)
    deployment["spec"]["version"] = 1  # type: ignore[index]
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", deployment)
    until(api, "version 1 stable", phase="Stable", stableVersion=1)
    with LoadGenerator(stack.gateway_url, HOST, "churn", PLAIN_INSTANCES, rate=20, max_seconds=900) as generator:
        yield generator


def test_a_canary_onto_ray_serve_is_promoted_and_leaves_the_stable_version_as_it_was(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    v1 = isvc(api, "churn-v1")
    assert v1 is not None and engine_of(v1) == "kserve"
    generation = v1["metadata"]["generation"]
    register_model(stack, api, 2)
    patch = {"spec": {"version": 2, "predictor": RAY_SERVE}}
    api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", "churn", patch)

    steps_seen: set[tuple[int, int]] = set()
    candidate_engines: set[str] = set()

    def promoted() -> dict[str, Any] | None:
        status = md_status(api)
        assert status.get("phase") not in ("Degraded", "RollingBack", "Failed"), status
        if status.get("stableVersion") == 2:
            return status
        if status.get("candidateVersion") == 2 and status.get("stepStartedAt"):
            steps_seen.add((status["step"], status["canaryWeight"]))
        # The stable version mid-rollout: the same InferenceService, on the engine it was promoted with.
        stable = isvc(api, "churn-v1")
        assert stable is not None and stable["metadata"]["generation"] == generation, stable
        assert engine_of(stable) == "kserve" and status["stablePredictor"]["engine"] == "kserve", status
        if (candidate := isvc(api, "churn-v2")) is not None:
            candidate_engines.add(engine_of(candidate))
        return None

    status = wait_for(promoted, timeout=RAY_START_TIMEOUT + 120, interval=0.3, what="version 2 promoted")
    assert steps_seen == {(0, 25), (1, 50)}, steps_seen
    assert candidate_engines == {"ray-serve"}
    assert {r["metric"]: r["verdict"] for r in status["analysis"]} == {
        "error-rate": "Passed",
        "latency-p95": "Passed",
        "prediction-mean-shift": "Passed",
    }
    assert [h["outcome"] for h in status["history"] if h["version"] == 2] == ["Promoted"]
    assert status["stablePredictor"]["engine"] == "ray-serve"
    assert status["stablePredictor"]["rayServe"]["replicas"] == 2


def test_both_engines_export_the_same_series_with_the_same_labels(stack: DevStack, load: LoadGenerator) -> None:
    def both() -> tuple[dict[str, set[frozenset[str]]], dict[str, set[frozenset[str]]]] | None:
        kserve, ray = series(stack, "1"), series(stack, "2")
        outcomes = "slipway_requests_total"
        return (kserve, ray) if kserve.get(outcomes) and kserve.get(outcomes) == ray.get(outcomes) else None

    kserve, ray = wait_for(both, timeout=30, interval=1, what="both revisions' series in Prometheus")
    assert kserve == ray
    assert {"slipway_requests_total", "slipway_request_duration_seconds_bucket", "slipway_predictions_total"} <= set(
        ray
    ), ray
    assert frozenset({"model=churn", "namespace", "job", "outcome=success"}) in ray["slipway_requests_total"]


def test_an_engine_change_with_no_new_version_replaces_the_ray_processes(
    stack: DevStack, api: client.CustomObjectsApi, load: LoadGenerator
) -> None:
    until(api, "the former stable version drained", stableVersion=2, phase="Stable")
    wait_for(lambda: isvc(api, "churn-v1") is None, timeout=60, what="version 1 removed after the drain")
    ray_serve = server_processes(stack)
    assert len(ray_serve) > 3, ray_serve  # the server, Ray's GCS and raylet, its replicas
    patch = {"spec": {"predictor": {"engine": "kserve"}}}
    api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "modeldeployments", "churn", patch)

    def on_kserve() -> bool:
        obj = isvc(api, "churn-v2")
        status = md_status(api)
        return obj is not None and engine_of(obj) == "kserve" and status["stablePredictor"]["engine"] == "kserve"

    wait_for(on_kserve, timeout=30, interval=0.5, what="version 2's InferenceService on kserve")
    status = md_status(api)
    assert status["stableVersion"] == 2 and status.get("candidateVersion") is None  # no rollout: applied directly
    # The new revision takes over once ready; the old one stops, Ray and all.
    wait_for(
        lambda: not [p for p in ray_serve if alive(*p)], timeout=60, interval=0.5, what="the ray-serve revision gone"
    )


def test_the_load_saw_no_errors(load: LoadGenerator) -> None:
    outcomes = load.snapshot()
    assert outcomes[200] > 100, outcomes
    assert outcomes[0] == 0 and not [code for code in outcomes if code >= 500], (outcomes, load.errors)


def test_stopping_the_stack_leaves_no_model_server_or_ray_process_behind(stack: DevStack, load: LoadGenerator) -> None:
    load.stop()
    running = server_processes(stack)
    assert running
    stack.stop()  # the module's fixture stops it again: a no-op by then
    assert not [p for p in running if alive(*p)]
