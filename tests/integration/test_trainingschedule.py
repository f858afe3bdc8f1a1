"""TrainingSchedule against the real kube-apiserver: admission, a manual retrain and a due cron make
exactly one owned TrainingRun each under its deterministic name, and a restarted operator (even one
whose last status write was lost) makes no second one."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from slipway.cli.plugin import main as kubectl_slipway
from slipway.reconcile.trainingschedule import run_name
from tests.support import Cluster, contract_manifests, wait_for

pytestmark = pytest.mark.integration

TR, _, _ = contract_manifests()
GROUP, VERSION = "slipway.dev", "v1alpha1"


def schedule(name: str, **spec: Any) -> dict[str, Any]:
    template = copy.deepcopy(TR["spec"])
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingSchedule",
        "metadata": {"name": name},
        "spec": {"template": template, **spec},
    }


def apply(cluster: Cluster, namespace: str, obj: dict[str, Any], dry_run: bool = False) -> tuple[int, str]:
    obj = copy.deepcopy(obj)
    obj["metadata"]["namespace"] = namespace
    args = ["apply", "-f", "-"] + (["--dry-run=server"] if dry_run else [])
    result = cluster.kubectl(*args, stdin=yaml.safe_dump(obj))
    return result.returncode, result.stdout + result.stderr


def runs(cluster: Cluster, namespace: str, owner: str) -> list[dict[str, Any]]:
    items = cluster.custom.list_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingruns", label_selector=f"slipway.dev/training-schedule={owner}"
    )["items"]
    return sorted(items, key=lambda r: r["metadata"]["name"])


def get_schedule(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "trainingschedules", name
    )
    return found


def events_for(cluster: Cluster, namespace: str, name: str) -> list[str]:
    items = cluster.core.list_namespaced_event(namespace).items
    return [e.reason for e in items if e.involved_object.name == name]


@pytest.mark.parametrize(
    ("case", "spec", "expected"),
    [
        ("cron not five fields", {"schedule": "every day"}, ["spec.schedule", "should match"]),
        ("cooldown not a duration", {"cooldown": "soon"}, ["spec.cooldown", "must be a duration"]),
        ("drift hold not a duration", {"drift": {"threshold": 0.2, "for": "ages"}}, ["spec.drift.for"]),
        ("zero PSI threshold", {"drift": {"threshold": 0}}, ["spec.drift.threshold", "greater than 0"]),
        ("no threshold", {"drift": {"for": "5m"}}, ["spec.drift.threshold", "Required"]),
        ("unknown policy", {"concurrencyPolicy": "Allow"}, ["spec.concurrencyPolicy", "Unsupported value"]),
        ("negative history", {"failedRunsHistoryLimit": -1}, ["spec.failedRunsHistoryLimit"]),
        ("bad template", {"template": {**TR["spec"], "model": "Churn"}}, ["spec.template.model", "DNS-1123"]),
        ("template missing a field", {"template": {"model": "churn"}}, ["spec.template.features", "Required"]),
        ("time zone not a zone name", {"schedule": "@daily", "timeZone": "Europe Berlin"}, ["spec.timeZone"]),
        ("time zone without a schedule", {"timeZone": "Europe/Berlin"}, ["spec.timeZone", "set spec.schedule too"]),
    ],
)
def test_bad_schedules_are_refused_naming_the_field(
    cluster: Cluster, case: str, spec: dict[str, Any], expected: list[str]
) -> None:
    obj = schedule("nightly")
    obj["spec"].update(spec)
    code, output = apply(cluster, "default", obj, dry_run=True)
    assert code != 0, f"{case}: accepted"
    for text in expected:
        assert text in output, f"{case}: {text!r} not in {output!r}"


def test_names_too_long_for_the_runs_are_refused(cluster: Cluster) -> None:
    assert apply(cluster, "default", schedule("s" * 47), dry_run=True)[0] == 0
    code, output = apply(cluster, "default", schedule("s" * 48), dry_run=True)
    assert code != 0 and "metadata.name" in output and "at most 47" in output, output


def test_good_schedules_are_accepted_with_defaults(cluster: Cluster, namespace: str) -> None:
    custom = {"threshold": 0, "query": "sum(up)", "prometheus": {"url": "http://prometheus:9090"}}
    for obj in (schedule("plain"), schedule("cron", schedule="@daily", drift=custom)):
        code, output = apply(cluster, namespace, obj)
        assert code == 0, output
    spec = get_schedule(cluster, namespace, "plain")["spec"]
    assert (spec["cooldown"], spec["concurrencyPolicy"], spec["suspend"]) == ("1h", "Forbid", False)
    assert (spec["successfulRunsHistoryLimit"], spec["failedRunsHistoryLimit"]) == (3, 1)
    assert get_schedule(cluster, namespace, "cron")["spec"]["drift"]["for"] == "10m"
    zoned = schedule("zoned", schedule="0 9 * * *", timeZone="America/Argentina/Buenos_Aires")
    assert apply(cluster, namespace, zoned)[0] == 0
    # The template can change (each run gets its own, immutable copy).
    changed = schedule("plain")
    changed["spec"]["template"]["scaling"]["workers"] = 4
    assert apply(cluster, namespace, changed)[0] == 0


def test_an_unknown_time_zone_is_a_false_ready_condition_naming_the_field(operator: Cluster, namespace: str) -> None:
    """The schema checks a zone name's shape; whether the zone exists is the operator's to say."""
    assert apply(operator, namespace, schedule("zoned", schedule="0 9 * * *", timeZone="Mars/Olympus_Mons"))[0] == 0

    def ready() -> dict[str, Any] | None:
        conditions = get_schedule(operator, namespace, "zoned").get("status", {}).get("conditions", [])
        return next((c for c in conditions if c["type"] == "Ready" and c["reason"] == "InvalidTimeZone"), None)

    found = wait_for(ready, what="Ready=False InvalidTimeZone")
    assert found["status"] == "False" and "spec.timeZone 'Mars/Olympus_Mons'" in found["message"], found
    assert "InvalidTimeZone" in wait_for(lambda: events_for(operator, namespace, "zoned"), what="an event")
    assert runs(operator, namespace, "zoned") == []


def test_manual_and_cron_make_one_owned_run_each_and_a_restart_makes_no_second(
    operator: Cluster, namespace: str
) -> None:
    assert apply(operator, namespace, schedule("manual"))[0] == 0
    assert apply(operator, namespace, schedule("cron", schedule="* * * * *", cooldown="0s"))[0] == 0
    manual = get_schedule(operator, namespace, "manual")

    # `kubectl slipway retrain`: the plugin sets the request annotation; the operator makes the run.
    assert kubectl_slipway(["--kubeconfig", str(operator.kubeconfig), "-n", namespace, "retrain", "manual"]) == 0
    request = get_schedule(operator, namespace, "manual")["metadata"]["annotations"]["schedule.slipway.dev/retrain"]
    expected = run_name("manual", "manual", request)
    made = wait_for(lambda: runs(operator, namespace, "manual"), what="the manual run")
    assert [r["metadata"]["name"] for r in made] == [expected]
    owner = made[0]["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "TrainingSchedule",
        "manual",
        manual["metadata"]["uid"],
        True,
    )
    assert made[0]["metadata"]["labels"]["slipway.dev/trigger"] == "manual"
    assert made[0]["spec"]["model"] == "churn" and made[0]["spec"]["scaling"]["workers"] == 2
    status = wait_for(lambda: get_schedule(operator, namespace, "manual").get("status", {}).get("lastTrigger"))
    assert status == {"type": "manual", "time": status["time"], "value": request, "run": expected}
    assert "RunTriggered" in events_for(operator, namespace, "manual")

    # The cron schedule fires at the next minute, once; later minutes are skipped (Forbid: it is active).
    cron_runs = wait_for(lambda: runs(operator, namespace, "cron"), timeout=90, what="the cron run")
    cron_name = cron_runs[0]["metadata"]["name"]
    last = get_schedule(operator, namespace, "cron")["status"]
    assert cron_name.startswith("cron-cron-") and last["lastTrigger"]["type"] == "cron"
    assert cron_runs[0]["metadata"]["ownerReferences"][0]["kind"] == "TrainingSchedule"

    # Kill the operator, and lose the manual schedule's status as if its last write never landed.
    assert operator.operator is not None
    operator.operator.kill()
    operator.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "trainingschedules", "manual", {"status": {"lastManualRequest": None}}
    )
    operator.start_operator()
    # The restarted operator consumes the request again (the run exists: no second one) ...
    wait_for(
        lambda: get_schedule(operator, namespace, "manual").get("status", {}).get("lastManualRequest") == request,
        timeout=60,
        what="the request consumed again",
    )
    # ... and the cron schedule skips the next minute's time instead of making a run.
    skipped = events_for(operator, namespace, "cron").count("SkippedRunActive")
    wait_for(
        lambda: events_for(operator, namespace, "cron").count("SkippedRunActive") > skipped,
        timeout=90,
        what="a cron time skipped by the restarted operator",
    )
    assert [r["metadata"]["name"] for r in runs(operator, namespace, "manual")] == [expected]
    assert [r["metadata"]["name"] for r in runs(operator, namespace, "cron")] == [cron_name]

    out = operator.kubectl("get", "ts", "-n", namespace).stdout
    assert out.split("\n")[0].split() == [
        "NAME",
        "MODEL",
        "SCHEDULE",
        "SUSPEND",
        "LAST-TRIGGER",
        "TRIGGERED",
        "LAST-VERSION",
        "AGE",
    ], out
