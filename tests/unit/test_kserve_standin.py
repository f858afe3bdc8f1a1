"""The integration tests' KServe stand-in (tests/kserve_standin.py): revisions, Serverless traffic
and rollout bookkeeping, status; and the dev stack's Prometheus targets."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from slipway.devstack.prometheus import ScrapeTarget, config, targets_content
from tests import kserve_standin as kserve
from tests.kserve_standin import Rollout, TrafficTarget

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
LATER = datetime(2026, 11, 22, 12, 5, 0, tzinfo=UTC)


def isvc(
    generation: int = 1, mode: str = "RawDeployment", canary: int | None = None, status: dict[str, Any] | None = None
) -> dict[str, Any]:
    predictor: dict[str, Any] = {
        "minReplicas": 1,
        "maxReplicas": 1,
        "containers": [
            {
                "name": "kserve-container",
                "image": "ghcr.io/example/slipway-predictor:0.1.0",
                "args": ["--model_name=churn", "--http_port=8080"],
                "env": [{"name": "STORAGE_URI", "value": "file:///models/runs/churn-2/"}],
            }
        ],
    }
    if canary is not None:
        predictor["canaryTrafficPercent"] = canary
    obj: dict[str, Any] = {
        "metadata": {
            "name": "churn",
            "namespace": "ml",
            "generation": generation,
            "annotations": {"serving.kserve.io/deploymentMode": mode},
        },
        "spec": {"predictor": predictor},
    }
    if status is not None:
        obj["status"] = status
    return obj


def test_revision_names_carry_the_generation() -> None:
    assert kserve.revision_name("churn-v2", 3) == "churn-v2-predictor-00003"


def test_only_the_template_makes_a_new_revision() -> None:
    base = isvc()["spec"]["predictor"]
    assert kserve.template_hash(base) == kserve.template_hash({**base, "canaryTrafficPercent": 10})
    changed = {**base, "containers": [{**base["containers"][0], "env": []}]}
    assert kserve.template_hash(base) != kserve.template_hash(changed)


def test_mode_defaults_to_serverless_as_kserve_does() -> None:
    assert kserve.deployment_mode(isvc(mode="Standard")) == kserve.STANDARD
    assert kserve.deployment_mode(isvc(mode="Knative")) == kserve.KNATIVE
    assert kserve.deployment_mode({"metadata": {}}) == kserve.KNATIVE
    # The legacy names, which KServe's defaulter rewrites, still mean the same modes.
    assert kserve.deployment_mode(isvc(mode="RawDeployment")) == kserve.STANDARD
    assert kserve.deployment_mode(isvc(mode="Serverless")) == kserve.KNATIVE


R1, R2, R3 = (kserve.revision_name("churn", g) for g in (1, 2, 3))


def percents(targets: list[TrafficTarget]) -> list[tuple[str, int, bool]]:
    return [(t.revision, t.percent, t.latest) for t in targets]


def test_the_first_revision_rolls_out_once_ready() -> None:
    assert kserve.settle(kserve.KNATIVE, None, Rollout(created=R1)) == (Rollout(created=R1), [])
    rollout, targets = kserve.settle(kserve.KNATIVE, None, Rollout(created=R1, ready=R1))
    assert rollout == Rollout(R1, R1, R1, None)
    assert percents(targets) == [(R1, 100, True)]


def test_a_canary_splits_between_the_latest_ready_and_the_rolled_out_revision() -> None:
    rollout, targets = kserve.settle(kserve.KNATIVE, 10, Rollout(R2, R2, R1, None))
    assert rollout == Rollout(R2, R2, R1, None)
    assert percents(targets) == [(R2, 10, True), (R1, 90, False)]
    assert [t.tag for t in targets] == ["latest", "prev"]


def test_while_the_canary_starts_all_traffic_stays_on_the_rolled_out_revision() -> None:
    rollout, targets = kserve.settle(kserve.KNATIVE, 10, Rollout(R2, R1, R1, None))
    assert rollout == Rollout(R2, R1, R1, None)  # not a rollback: the latest is not ready yet
    assert percents(targets) == [(R1, 10, True), (R1, 90, False)]


def test_a_canary_with_nothing_rolled_out_gets_everything() -> None:
    rollout, targets = kserve.settle(kserve.KNATIVE, 10, Rollout(R1, R1, None, None))
    # Rolled out at once; then both of KServe's targets name the one revision, as KServe reports it.
    assert rollout == Rollout(R1, R1, R1, None)
    assert percents(targets) == [(R1, 10, True), (R1, 90, False)]


def test_promotion_rolls_the_canary_out_and_remembers_the_previous() -> None:
    rollout, targets = kserve.settle(kserve.KNATIVE, None, Rollout(R2, R2, R1, None))
    assert rollout == Rollout(R2, R2, R2, R1)
    assert percents(targets) == [(R2, 100, True)]
    # canaryTrafficPercent 100 is a rollout too (100% on the latest revision)
    assert kserve.settle(kserve.KNATIVE, 100, Rollout(R2, R2, R1, None))[0] == Rollout(R2, R2, R2, R1)


def test_a_canary_split_on_a_rolled_out_revision_rolls_back_to_the_previous() -> None:
    rollout, targets = kserve.settle(kserve.KNATIVE, 0, Rollout(R2, R2, R2, R1))
    assert rollout == Rollout(R2, R2, R1, R1)
    assert percents(targets) == [(R2, 0, True), (R1, 100, False)]


def test_a_new_revision_during_a_canary_replaces_the_canary() -> None:
    rollout, targets = kserve.settle(kserve.KNATIVE, 20, Rollout(R3, R3, R1, None))
    assert percents(targets) == [(R3, 20, True), (R1, 80, False)] and rollout.rolled_out == R1


def test_raw_deployments_ignore_canary_traffic_percent() -> None:
    _, targets = kserve.settle(kserve.STANDARD, 10, Rollout(R2, R2, R1, None))
    assert percents(targets) == [(R2, 100, True)]


def test_rollout_from_status_forgets_unknown_revisions() -> None:
    status = {"components": {"predictor": {"latestCreatedRevision": R2, "latestRolledoutRevision": R1}}}
    assert Rollout.from_status(status) == Rollout(R2, None, R1, None)
    assert Rollout.from_status(status).known({R2}) == Rollout(R2, None, None, None)
    assert Rollout.from_status(None) == Rollout()


def conds(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_a_ready_raw_service_status() -> None:
    status = kserve.isvc_status(
        isvc(generation=5),  # five edits of the InferenceService, two of them to its pod template
        "example.com",
        Rollout(R2, R2, None, None),
        [TrafficTarget(R2, 100, True, "latest")],
        kserve.RevisionState(kserve.READY),
        "http://127.0.0.1:4000",
        True,
        NOW,
    )
    assert status == {
        # KServe copies the Deployment's generation (R2: its second template), never the ISVC's 5.
        "observedGeneration": 2,
        "deploymentMode": "Standard",
        # KServe's default domainTemplate, {{ .Name }}-{{ .Namespace }}.{{ .IngressDomain }}.
        "url": "http://churn-ml.example.com",
        "address": {"url": "http://127.0.0.1:4000"},
        "components": {
            "predictor": {
                "url": "http://churn-predictor-ml.example.com",
                "latestCreatedRevision": R2,
                "latestReadyRevision": R2,  # the executor's own bookkeeping: real KServe writes none here
            }  # and, in Standard mode, no address in the component (seen in tests/conformance)
        },
        "conditions": [
            {"type": "IngressReady", "status": "True", "lastTransitionTime": "2026-11-22T12:00:00Z"},
            {"type": "PredictorReady", "status": "True", "lastTransitionTime": "2026-11-22T12:00:00Z"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-11-22T12:00:00Z"},
        ],
        "modelStatus": {
            "transitionStatus": "UpToDate",
            "states": {"activeModelState": "Loaded", "targetModelState": "Loaded"},
        },
    }


def test_a_serverless_status_carries_revisions_and_traffic() -> None:
    targets = [TrafficTarget(R2, 10, True, "latest"), TrafficTarget(R1, 90, False, "prev")]
    status = kserve.isvc_status(
        isvc(mode="Knative", canary=10),
        "example.com",
        Rollout(R2, R2, R1, None),
        targets,
        kserve.RevisionState(kserve.READY),
        "http://127.0.0.1:4000",
        True,
        NOW,
    )
    predictor = status["components"]["predictor"]
    assert predictor["latestRolledoutRevision"] == R1 and "previousRolledoutRevision" not in predictor
    assert predictor["traffic"] == [
        {"revisionName": R2, "percent": 10, "latestRevision": True, "tag": "latest"},
        {"revisionName": R1, "percent": 90, "latestRevision": False, "tag": "prev"},
    ]


def test_a_starting_revision_is_unknown_and_a_failed_one_false_with_its_log() -> None:
    starting = kserve.isvc_status(
        isvc(), "example.com", Rollout(R1), [], kserve.RevisionState(kserve.STARTING), None, False, NOW
    )
    assert conds(starting)["Ready"]["status"] == "Unknown"
    assert "url" not in starting and "url" not in starting["components"]["predictor"]  # only once Ready
    assert conds(starting)["Ready"]["reason"] == "RevisionStarting"
    assert "address" not in starting and starting["modelStatus"]["transitionStatus"] == "InProgress"

    failed_state = kserve.RevisionState(kserve.FAILED, "revision churn-predictor-00001 exited: no manifest.json", 1)
    failed = kserve.isvc_status(isvc(), "example.com", Rollout(R1), [], failed_state, None, True, NOW)
    ready = conds(failed)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "RevisionFailed")
    assert "no manifest.json" in ready["message"]
    assert failed["modelStatus"]["lastFailureInfo"] == {
        "reason": "ModelLoadFailed",
        "message": failed_state.message,
        "exitCode": 1,
    }
    assert conds(failed)["IngressReady"]["status"] == "True"


def test_transition_times_move_only_when_a_condition_changes() -> None:
    ready = kserve.RevisionState(kserve.READY)
    first = kserve.isvc_status(isvc(), "example.com", Rollout(R1, R1), [], ready, "http://x", True, NOW)
    again = kserve.isvc_status(isvc(status=first), "example.com", Rollout(R1, R1), [], ready, "http://x", True, LATER)
    assert again == first
    starting = kserve.RevisionState(kserve.STARTING)
    moved = kserve.isvc_status(isvc(status=first), "example.com", Rollout(R1), [], starting, None, True, LATER)
    assert conds(moved)["PredictorReady"]["lastTransitionTime"] == "2026-11-22T12:05:00Z"
    assert conds(moved)["IngressReady"]["lastTransitionTime"] == "2026-11-22T12:00:00Z"


def test_prometheus_targets_are_labelled_as_kubernetes_sd_would() -> None:
    targets = [
        ScrapeTarget("127.0.0.1:4001", "ml", "churn-v2", "churn-v2-predictor-00001"),
        ScrapeTarget("127.0.0.1:4000", "ml", "churn-v1", "churn-v1-predictor-00003"),
    ]
    assert targets_content(targets) == [
        {
            "targets": ["127.0.0.1:4000"],
            "labels": {"namespace": "ml", "isvc": "churn-v1", "pod": "churn-v1-predictor-00003"},
        },
        {
            "targets": ["127.0.0.1:4001"],
            "labels": {"namespace": "ml", "isvc": "churn-v2", "pod": "churn-v2-predictor-00001"},
        },
    ]
    assert targets_content([]) == []


def test_prometheus_config_scrapes_the_targets_file() -> None:
    from pathlib import Path

    conf = config(Path("/w/prometheus-targets.json"), "1s")
    assert conf["global"]["scrape_interval"] == conf["global"]["scrape_timeout"] == "1s"
    (job,) = conf["scrape_configs"]
    assert job["file_sd_configs"][0]["files"] == ["/w/prometheus-targets.json"]


def test_revisions_are_numbered_by_template_not_by_the_inferenceservices_generation() -> None:
    assert kserve.next_revision("churn", Rollout()) == "churn-predictor-00001"
    assert kserve.next_revision("churn", Rollout(R2, R1, R1)) == "churn-predictor-00003"
    predictor = {"minReplicas": 1, "maxReplicas": 2, "containers": [{"image": "p:1"}]}
    scaled = {**predictor, "minReplicas": 2, "maxReplicas": 4}
    # Standard: the replica range goes to the HPA, the Deployment (and its generation) stays.
    assert kserve.template_hash(predictor, kserve.STANDARD) == kserve.template_hash(scaled, kserve.STANDARD)
    # Knative: min/max scale are annotations of the revision template: a new revision.
    assert kserve.template_hash(predictor, kserve.KNATIVE) != kserve.template_hash(scaled, kserve.KNATIVE)
