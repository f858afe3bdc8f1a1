"""End to end in the dev stack: the closed loop, with no human action.

Version 1 is trained and serves `version: latest` behind the gateway under steady load. A
TrainingSchedule watches the built-in feature drift (`max(slipway_input_psi)` in Prometheus). The
world then moves: the offline data gets a fresh period in which one feature sits at a single value
(the middle of its training bins, so predictions stay sensible while its PSI soars), materialized
to the online store, and the load sends that value too. The drift metric rises, the schedule makes
one TrainingRun named after the hold, the run trains on the fresh data and passes its gates:
`mustBeatServing` scores version 1 on the run's own held-out split (the new data) and compares the
two there, not with version 1's metric from its older data. The new ModelVersion rolls out as a
Prometheus-gated canary and is promoted. Version 2 learnt from mostly older data, so the shifted
traffic still drifts from its own profile: inside the cooldown that drift is held, and the
schedule says why, instead of retraining again at once.

The model servers' input window is shortened (`SLIPWAY_INPUT_WINDOW_S`, `SLIPWAY_INPUT_MIN_ROWS`)
so drift shows, and goes, within seconds rather than minutes. With `SLIPWAY_CLOSED_LOOP_TIMELINE`
set to a path, the stage times are written there as JSON (bench/closed_loop.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from slipway.devstack.stack import NAMESPACE, DevStack
from slipway.devstack.traffic import LoadGenerator
from tests.e2e.rollouts import GROUP, HOST, VERSION, canary, md_status, prometheus
from tests.support import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]  # two trainings and a rollout on 2 cores
TRAIN_TIMEOUT = 900
SCHEDULE = "churn-drift"
THRESHOLD = 0.5  # a PSI; one feature held at one value scores well above 2
HOLD = "15s"
DRIFTED_FEATURE = "monthly_charges"
CUSTOMERS = [{"customer_id": i} for i in range(1001, 1201)]  # ids in the online store (1001-3000)
SERVING_ENV = {"SLIPWAY_INPUT_WINDOW_S": "20", "SLIPWAY_INPUT_MIN_ROWS": "50"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevStack]:
    with DevStack(tmp_path_factory.mktemp("dev"), serving_env=SERVING_ENV) as running:
        yield running


@pytest.fixture(scope="module")
def core(stack: DevStack) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(str(stack.kubeconfig)))


def get(api: client.CustomObjectsApi, plural: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = api.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, plural, name)
    return obj


def schedule_status(api: client.CustomObjectsApi) -> dict[str, Any]:
    return get(api, "trainingschedules", SCHEDULE).get("status") or {}


def until_schedule(api: client.CustomObjectsApi, probe: Any, what: str, timeout: float = 120) -> dict[str, Any]:
    """Polls the schedule's status until `probe(status)`; a timeout shows the last status."""

    def matched() -> dict[str, Any] | None:
        status = schedule_status(api)
        return status if probe(status) else None

    try:
        found: dict[str, Any] = wait_for(matched, timeout=timeout, interval=0.5, what=what)
    except AssertionError as error:
        raise AssertionError(f"{error}; the schedule's status: {schedule_status(api)}") from None
    return found


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == kind), {})


def scheduled_runs(api: client.CustomObjectsApi) -> list[str]:
    items = api.list_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "trainingruns", label_selector=f"slipway.dev/training-schedule={SCHEDULE}"
    )["items"]
    return sorted(i["metadata"]["name"] for i in items)


def schedule_events(core: client.CoreV1Api, reason: str) -> list[str]:
    events = core.list_namespaced_event(NAMESPACE, field_selector=f"involvedObject.name={SCHEDULE}").items
    return [e.message for e in events if e.reason == reason]


def drift_value(stack: DevStack) -> float | None:
    result = prometheus(stack, f'max(slipway_input_psi{{namespace="{NAMESPACE}",model="churn"}})')
    return float(result[0]["value"][1]) if result else None


def stamp(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def drifted(run_uri: str) -> list[dict[str, Any]]:
    """The customers, with one feature overridden by the middle edge of its training bins."""
    manifest = json.loads((Path(run_uri.removeprefix("file://")) / "manifest.json").read_text())
    edges = manifest["profile"]["features"][DRIFTED_FEATURE]["edges"]
    value = float(edges[len(edges) // 2])
    return [{**c, DRIFTED_FEATURE: value} for c in CUSTOMERS]


def wait_registered(stack: DevStack, api: client.CustomObjectsApi, run: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        if (problem := stack.dead()) is not None:
            raise AssertionError(problem)
        status = get(api, "trainingruns", run).get("status") or {}
        assert status.get("phase") != "Failed", status
        return status if status.get("phase") == "Succeeded" and status.get("modelVersion") else None

    return wait_for(done, timeout=TRAIN_TIMEOUT, interval=2, what=f"{run} to succeed")


def test_drift_retrains_and_rolls_out_with_no_human_action(
    stack: DevStack, api: client.CustomObjectsApi, core: client.CoreV1Api
) -> None:
    api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "trainingruns", stack.training_run("churn-1"))
    v1 = get(api, "modelversions", wait_registered(stack, api, "churn-1")["modelVersion"])
    api.create_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "modeldeployments", stack.model_deployment(strategy=canary("180s"))
    )
    wait_for(lambda: md_status(api).get("stableVersion") == 1, timeout=180, interval=0.5, what="version 1 stable")

    # The retraining template: the dev stack's run, trained a little longer (it must beat version 1).
    template = stack.training_run("unused", hyperparameters={"epochs": "6", "batchSize": "256", "learningRate": "0.01"})
    schedule = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingSchedule",
        "metadata": {"name": SCHEDULE, "namespace": NAMESPACE},
        "spec": {
            "template": template["spec"],
            "drift": {"threshold": THRESHOLD, "for": HOLD, "prometheus": {"url": stack.prometheus_url}},
            "cooldown": "2h",
        },
    }
    with LoadGenerator(stack.gateway_url, HOST, "churn", CUSTOMERS, rate=25, max_seconds=2400) as load:
        api.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, "trainingschedules", schedule)

        def calm(status: dict[str, Any]) -> bool:
            return condition(status, "Drifting").get("status") == "False"

        baseline = until_schedule(api, calm, "drift measured within the threshold")
        assert baseline["driftValue"] <= THRESHOLD and scheduled_runs(api) == []

        # Drift: the fresh offline data (what the retrain learns from), the online store and every
        # request now carry one feature at one value.
        onset = time.time()
        instances = drifted(v1["spec"]["uri"])
        stack.refresh_offline({DRIFTED_FEATURE: instances[0][DRIFTED_FEATURE]})
        load.instances = instances
        wait_for(lambda: (drift_value(stack) or 0) > THRESHOLD, timeout=120, interval=1, what="the PSI to rise")
        held = until_schedule(api, lambda s: s.get("driftSince"), "a drift hold", timeout=60)
        since = held["driftSince"]
        expected = f"{SCHEDULE}-drift-{int(stamp(since)) // 60}"

        fired = until_schedule(api, lambda s: s.get("lastTrigger"), "the trigger")
        trigger = fired["lastTrigger"]
        assert trigger["type"] == "drift" and trigger["run"] == expected, trigger
        assert float(trigger["value"]) > THRESHOLD, trigger
        assert any(expected in m for m in schedule_events(core, "RunTriggered"))
        run = get(api, "trainingruns", expected)
        assert run["metadata"]["labels"]["slipway.dev/trigger"] == "drift"

        # It trains on the fresh data and passes its gates against version 1 scored on the same
        # held-out rows, then registers version 2.
        run_status = wait_registered(stack, api, expected)
        assert run_status.get("servingModel", {}).get("version") == 1, run_status
        v2 = get(api, "modelversions", run_status["modelVersion"])
        assert v2["spec"]["version"] == 2 and v2["spec"]["gates"]["passed"] is True, v2["spec"]
        gates = condition(run_status, "GatesPassed")
        assert gates.get("status") == "True", gates
        assert "on this run's held-out data, beating version 1's" in gates["message"], gates
        assert "on the same data" in v2["spec"]["gates"]["reason"], v2["spec"]["gates"]
        evaluation = run_status["evaluation"]
        assert evaluation["comparedOn"] == "thisRunsData" and evaluation["servingVersion"] == 1, evaluation
        assert evaluation["value"] > evaluation["servingValue"], evaluation
        print(f"gate: {gates['message']} (version 1 recorded {v1['spec']['metrics']['auc']} on its own data)")

        # `version: latest` rolls it out as a canary, analysed, and promotes it.
        canary_seen: set[int] = set()
        started: list[str] = []

        def promoted() -> dict[str, Any] | None:
            status = md_status(api)
            assert status.get("phase") not in ("Degraded", "RollingBack", "Failed"), status
            if status.get("candidateVersion") == 2 and status.get("rolloutStartedAt"):
                started[:] = started or [status["rolloutStartedAt"]]
                if status.get("stepStartedAt"):
                    canary_seen.add(status["canaryWeight"])
            return status if status.get("stableVersion") == 2 else None

        deployed = wait_for(promoted, timeout=300, interval=0.3, what="version 2 promoted")
        assert canary_seen & {25, 50}, canary_seen
        assert {r["verdict"] for r in deployed["analysis"]} == {"Passed"}, deployed["analysis"]
        promotion = next(h for h in deployed["history"] if h["version"] == 2)
        assert promotion["outcome"] == "Promoted", deployed["history"]
        complete = time.time()

        # Version 2 learnt from mostly older data (the fresh period is a small part of it), so the
        # shifted traffic still drifts from its own training profile. Inside the cooldown that drift
        # is held, and the schedule says so, instead of retraining again at once.
        def v2_drift() -> float | None:
            result = prometheus(stack, f'max(slipway_input_psi{{namespace="{NAMESPACE}",model="churn",revision="2"}})')
            return float(result[0]["value"][1]) if result else None

        wait_for(lambda: (v2_drift() or 0) > THRESHOLD, timeout=120, interval=1, what="version 2's own drift")
        held_again = until_schedule(
            api,
            lambda s: s.get("driftSkipped") == "SkippedCooldown" and s.get("driftSince"),
            "drift held by the cooldown",
        )
        assert condition(held_again, "Drifting").get("reason") == "DriftAboveThreshold", held_again
        assert any("cooldown 2h" in m for m in schedule_events(core, "SkippedCooldown"))
        assert held_again["lastTrigger"] == trigger
        assert scheduled_runs(api) == [expected]
        assert load.snapshot()[0] == 0, load.errors

    timeline = {
        "drift_injected": 0.0,
        "drift_detected": stamp(since) - onset,
        "trigger_fired": stamp(trigger["time"]) - onset,
        "training_done": stamp(run_status["completionTime"]) - onset,
        "version_registered": stamp(v2["metadata"]["creationTimestamp"]) - onset,
        "rollout_started": stamp(started[0]) - onset,
        "promoted": stamp(promotion["time"]) - onset,
        "observed_promoted": complete - onset,
    }
    print(json.dumps(timeline, indent=2))
    if out := os.environ.get("SLIPWAY_CLOSED_LOOP_TIMELINE"):
        Path(out).write_text(json.dumps(timeline, indent=2))
