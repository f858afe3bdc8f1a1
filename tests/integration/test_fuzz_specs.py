"""Specs generated from the CRDs' own schemas, applied to a real API server, reconciled by the
real operator: it never crashes, never loops hot, and every accepted spec ends explained.

Per kind, SLIPWAY_FUZZ_EXAMPLES specs (default 40) are drawn with Hypothesis from
`spec.versions[*].schema.openAPIV3Schema.properties.spec` of its file in crds/ (see
tests/crd_fuzz.py for what is kept of the structural schema), seeded with SLIPWAY_FUZZ_SEED
(default 15; printed), and created in batches of BATCH per kind in namespaces of their own:
ModelVersions first, then TrainingRuns, then ModelDeployments, every other one of which is
pointed at a model an accepted ModelVersion of its namespace registered, so rollouts start too
(the rest name models that do not exist). The server refuses some (CEL rules are not generated
against): each refusal must be a 422 naming the field. The operator runs with default images, as
the chart's does, so a spec without one is built and applied too. tests.support.Controllers
plays KServe and the Gateway (status only) in each namespace, so first versions become Stable;
then a second version of each served model is registered, and every deployment on `latest`
rolls it out with its generated strategy. Prometheus is a closed local port (see PROMETHEUS).

"Ends in a phase with a reason", per kind, with status.observedGeneration the object's generation:
- TrainingRun: `status.phase` and the reason of the condition that explains it (Failed: the
  `Failed` condition, e.g. InvalidSpec; Pending/Running: the `Running` condition, e.g.
  RayJobPending, since no KubeRay runs here its RayJob never starts), and a message.
- ModelVersion: it has no phase; its terminal status is the `Registered` condition, True, with a
  reason, and `status.gatesPassed`.
- ModelDeployment: `status.phase` and `status.reason` (Pending with ModelVersionNotFound,
  NoVersionPassedGates or InvalidSpec; Stable with Promoted; Progressing, Paused or RollingBack
  with the rollout's reason while one is under way; Failed, e.g. ProgressDeadlineExceeded).

"Never crashes": the operator's process is alive throughout and its log has no traceback (Kopf
logs a handler's or an index's exception with one). "Never loops hot": over QUIET_S seconds after
everything settled (longer than a waiting deployment's 30 s retry), the operator's CPU time
(utime + stime from /proc) stays under CPU_BOUND of one core, and the audit log shows no status
written to an object at rest and no object written more than MAX_WRITES times.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from kubernetes.client.exceptions import ApiException

from slipway.handlers.settings import PEERING_LIFETIME_S
from tests.crd_fuzz import from_schema, generable, spec_schema
from tests.support import OPERATOR_USER, Cluster, Controllers, audited_cluster, wait_for

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("SLIPWAY_FUZZ_EXAMPLES", "40"))
SEED = int(os.environ.get("SLIPWAY_FUZZ_SEED", "15"))
BATCH = 20  # objects of each kind per namespace
GROUP, VERSION = "slipway.dev", "v1alpha1"
KINDS = {"ModelVersion": "modelversions", "TrainingRun": "trainingruns", "ModelDeployment": "modeldeployments"}
PREFIX = {"ModelVersion": "mv", "TrainingRun": "tr", "ModelDeployment": "md"}
SETTLE_S = 120
QUIET_S = 35.0  # more than RETRY_DELAY (30 s) of a deployment with nothing to serve
# Idle, the operator costs a few percent of a core: Kopf's watches, the peering keepalive, and a
# 0.5 s timer per deployment whose rollout is under way (time moves a rollout). A hot loop
# (a handler retried at once, a status write that triggers itself) burns a whole core.
CPU_BOUND = 0.25
# Writes to one object in the quiet window: a deployment with nothing to serve retries every
# 30 s, and Kopf records each retry on the object (two patches of its annotations); its status
# must not change. A loop would show as many writes as it went round.
MAX_WRITES = 2


def max_writes(key: str) -> int:
    """The peering record is the operator's heartbeat, not an object at rest: a keep-alive at least
    10 s before each expiry of its PEERING_LIFETIME_S, and one more for the window's edges."""
    if " clusterkopfpeerings " in f" {key} ":
        return math.ceil(QUIET_S / (PEERING_LIFETIME_S - 10)) + 1
    return MAX_WRITES


ACTIVE_PHASES = ("Progressing", "Paused", "RollingBack")
WRITE_VERBS = {"create", "update", "patch", "delete"}
# The chart always sets these: with them every accepted spec reaches the builders and its
# children are applied (test_operator.py covers a spec with no image and no default).
# Analysis queries go to a closed port on this machine, never to a generated host: a spec's
# prometheus.url is replaced by it, and it is the operator's default (measurements: Inconclusive).
PROMETHEUS = "http://127.0.0.1:9"
OPERATOR_ENV = {
    "SLIPWAY_TRAINER_IMAGE": "trainer:fuzz",
    "SLIPWAY_PREDICTOR_IMAGE": "predictor:fuzz",
    "SLIPWAY_PROMETHEUS_URL": PROMETHEUS,
}


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane of its own, with an audit log of the operator's requests, and the operator
    alone on it: its CPU time is then this test's specs' only."""
    with audited_cluster(tmp_path_factory.mktemp("fuzz")) as cluster:
        yield cluster
        if os.environ.get("SLIPWAY_SHOW_OPERATOR_LOG"):
            print(cluster.operator_log())


def generate(kind: str) -> list[dict[str, Any]]:
    """EXAMPLES specs for `kind`, the same ones for the same SEED (generation only: no shrinking)."""
    drawn: list[dict[str, Any]] = []

    @seed(SEED)
    @settings(
        max_examples=EXAMPLES,
        derandomize=False,  # @seed decides; CI's profile would otherwise derandomize
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(from_schema(generable(spec_schema(kind))))
    def collect(spec: dict[str, Any]) -> None:
        drawn.append(spec)

    collect()
    return drawn


def operator_log_ends(cluster: Cluster, chars: int = 4000) -> str:
    """The start of the operator's log (start-up, peering, the first watches) and its end, for a
    failure that only the log explains."""
    log = cluster.operator_log()
    if len(log) <= 2 * chars:
        return f"\n--- the operator's log ---\n{log}"
    head, tail = log[:chars], log[-chars:]
    return f"\n--- the operator's log, first {chars} characters ---\n{head}\n--- last {chars} ---\n{tail}"


def explained(kind: str, obj: dict[str, Any]) -> tuple[str, str] | None:
    """(phase, reason) once the object's status explains its current generation, else None."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return None
    conditions = {c["type"]: c for c in status.get("conditions", [])}
    if kind == "ModelVersion":
        registered = conditions.get("Registered", {})
        ok = registered.get("status") == "True" and isinstance(status.get("gatesPassed"), bool)
        return ("Registered", registered["reason"]) if ok and registered.get("reason") else None
    phase = status.get("phase")
    if kind == "TrainingRun":
        explaining = {"Failed": "Failed", "Succeeded": "Complete"}.get(phase or "", "Running")
        reason = conditions.get(explaining, {}).get("reason")
        return (phase, reason) if phase and reason and status.get("message") else None
    return (phase, status["reason"]) if phase and status.get("reason") else None


def field_named(error: ApiException) -> bool:
    """A 422 Invalid with a cause naming a spec field (the server may add field-less ones after
    it, e.g. "some validation rules were not checked because the object was invalid")."""
    if error.status != 422:
        return False
    causes = json.loads(error.body).get("details", {}).get("causes", [])
    return any(c.get("field", "").startswith("spec") for c in causes)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def writes(log: Path, start: int, end: int) -> Counter[str]:
    """The operator's writes per object between two offsets of the audit log (events apart)."""
    with log.open("rb") as handle:
        handle.seek(start)
        lines = handle.read(end - start).decode().splitlines()
    counts: Counter[str] = Counter()
    for event in (json.loads(line) for line in lines if line.strip()):
        ref = event.get("objectRef", {})
        if event["user"]["username"] != OPERATOR_USER or event["verb"] not in WRITE_VERBS:
            continue
        resource = ref.get("resource", "") + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        counts[f"{event['verb']} {resource} {ref.get('namespace', '')}/{ref.get('name', '')}"] += 1
    return counts


def next_versions(cluster: Cluster, deployments: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    """Registers version N+1 of each model a Stable deployment serves; returns the deployments
    on `latest` that should roll it out, with N+1."""
    bumped: dict[tuple[str, str], int] = {}  # (namespace, model) -> the new version
    rolling: dict[tuple[str, str], int] = {}
    for md in deployments:
        meta, spec, status = md["metadata"], md["spec"], md.get("status") or {}
        key = (meta["namespace"], spec["model"])
        if status.get("phase") != "Stable":
            continue
        if key not in bumped:
            versions = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, key[0], "modelversions")["items"]
            bumped[key] = 1 + max(v["spec"]["version"] for v in versions if v["spec"]["model"] == key[1])
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ModelVersion",
                "metadata": {"name": f"next-{len(bumped)}"},
                "spec": {"model": key[1], "version": bumped[key], "uri": "s3://fuzz/next/"},
            }
            cluster.custom.create_namespaced_custom_object(GROUP, VERSION, key[0], "modelversions", body)
        if spec.get("version", "latest") == "latest":
            rolling[(meta["namespace"], meta["name"])] = bumped[key]
    return rolling


def test_fuzzed_specs_end_explained_without_crash_or_hot_loop(audited: Cluster) -> None:
    cluster = audited
    specs = {kind: generate(kind) for kind in KINDS}
    print(f"\nfuzz seed {SEED} (SLIPWAY_FUZZ_SEED), {EXAMPLES} examples per kind (SLIPWAY_FUZZ_EXAMPLES)")
    operator = cluster.start_operator(env=OPERATOR_ENV)
    assert operator.pid is not None and operator.proc is not None

    def alive() -> None:
        assert operator.proc is not None and operator.proc.poll() is None, cluster.operator_log()[-5000:]

    accepted: dict[str, list[tuple[str, str]]] = {kind: [] for kind in KINDS}  # (namespace, name)
    refused: dict[str, list[str]] = {kind: [] for kind in KINDS}
    unexplained_refusals: list[str] = []
    paired = 0
    controllers: list[Controllers] = []  # KServe and the Gateway, as far as status goes
    for batch in range((EXAMPLES + BATCH - 1) // BATCH):
        namespace = f"fuzz-{batch}"
        cluster.core.create_namespace({"metadata": {"name": namespace}})
        controllers.append(Controllers(cluster, namespace))
        controllers[-1].thread.start()
        models: list[str] = []  # of the accepted ModelVersions here
        for kind, plural in KINDS.items():
            for index, spec in enumerate(specs[kind][batch * BATCH : (batch + 1) * BATCH]):
                name = f"{PREFIX[kind]}-{batch * BATCH + index}"
                if kind == "ModelDeployment" and models and index % 2 == 0:
                    spec = {**spec, "model": models[index % len(models)]}
                    paired += 1
                if kind == "ModelDeployment" and "prometheus" in spec:
                    spec = {**spec, "prometheus": {"url": PROMETHEUS}}
                body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name}, "spec": spec}
                try:
                    cluster.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
                except ApiException as error:
                    refused[kind].append(name)
                    if not field_named(error):
                        unexplained_refusals.append(f"{kind} {json.dumps(spec)}: {error.status} {error.body}")
                    continue
                accepted[kind].append((namespace, name))
                if kind == "ModelVersion":
                    models.append(spec["model"])
            alive()
    assert not unexplained_refusals, "refused without naming a field:\n" + "\n".join(unexplained_refusals)

    def get(kind: str, namespace: str, name: str) -> dict[str, Any]:
        obj: dict[str, Any] = cluster.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, KINDS[kind], name)
        return obj

    def pending() -> list[str]:
        alive()
        return [
            f"{kind} {ns}/{name}: {get(kind, ns, name).get('status')}"
            for kind, objs in accepted.items()
            for ns, name in objs
            if explained(kind, get(kind, ns, name)) is None
        ]

    left: list[str] = []

    def settled() -> bool:
        left[:] = pending()
        return not left

    try:
        wait_for(settled, timeout=SETTLE_S, interval=1, what="every accepted spec explained")
    except AssertionError:
        pytest.fail(
            f"{len(left)} of {sum(map(len, accepted.values()))} accepted specs not explained after {SETTLE_S}s:\n"
            + "\n".join(left[:20])
            + operator_log_ends(cluster)
        )
    # A second version of every model a deployment serves: each one on `latest` now rolls it out
    # with its generated strategy (steps, pauses, analysis against the closed port).
    rolling = next_versions(cluster, [get("ModelDeployment", ns, name) for ns, name in accepted["ModelDeployment"]])

    def taken_up() -> list[str]:
        alive()
        return [
            f"{ns}/{name}: {status}"
            for (ns, name), version in rolling.items()
            if version
            not in (
                (status := get("ModelDeployment", ns, name).get("status") or {}).get("stableVersion"),
                status.get("candidateVersion"),
            )
            and status.get("phase") not in ("RollingBack", "Degraded", "Failed")
        ]

    try:
        wait_for(lambda: not taken_up() or None, timeout=SETTLE_S, interval=1, what="new versions taken up")
    except AssertionError:
        pytest.fail(
            "deployments that never took up their model's new version:\n"
            + "\n".join(taken_up()[:20])
            + operator_log_ends(cluster)
        )
    wait_for(settled, timeout=SETTLE_S, interval=1, what="every accepted spec explained, after the new versions")
    outcomes = {
        kind: Counter(explained(kind, get(kind, ns, name)) for ns, name in objs) for kind, objs in accepted.items()
    }
    # Deployments time still moves (the engine's needs_ticks): a rollout under way, or an old
    # version kept warm after a promotion until its scale-down; their status may still change.
    statuses = {(ns, name): get("ModelDeployment", ns, name)["status"] for ns, name in accepted["ModelDeployment"]}
    moving = {
        f"{ns}/{n}" for (ns, n), st in statuses.items() if st["phase"] in ACTIVE_PHASES or "previousVersion" in st
    }

    time.sleep(2)  # the last events of settling (Kopf's own bookkeeping patches) pass
    assert cluster.plane.audit_log is not None
    start_offset, start_cpu = cluster.plane.audit_log.stat().st_size, cpu_seconds(operator.pid)
    time.sleep(QUIET_S)
    end_offset, end_cpu = cluster.plane.audit_log.stat().st_size, cpu_seconds(operator.pid)
    alive()
    for stand_in in controllers:
        stand_in.stop.set()
    written = writes(cluster.plane.audit_log, start_offset, end_offset)
    cpu = (end_cpu - start_cpu) / QUIET_S

    for kind in KINDS:
        total = len(specs[kind])
        print(f"{kind}: {total} generated, {len(accepted[kind])} accepted, {len(refused[kind])} refused")
        for outcome, count in outcomes[kind].most_common():
            print(f"  {count:3d} {outcome}")
    print(f"ModelDeployments pointed at a registered model: {paired}; rolling out a second version: {len(rolling)}")
    strategies = Counter(
        (get("ModelDeployment", ns, name)["spec"]["strategy"]["type"], statuses[(ns, name)]["phase"])
        for ns, name in rolling
    )
    print(f"second-version rollouts by (strategy, phase): {dict(strategies)}")
    print(f"operator CPU over {QUIET_S:.0f}s quiet: {cpu:.1%} of a core; writes: {sum(written.values())}")
    for key, count in written.most_common(5):
        print(f"  {count} {key}")

    log = cluster.operator_log()
    assert "Traceback" not in log, log[log.index("Traceback") - 2000 : log.index("Traceback") + 4000]
    assert all(accepted.values()), f"a kind with no accepted spec tests nothing: {accepted}"
    assert cpu < CPU_BOUND, f"operator used {cpu:.1%} of a core while nothing changed"
    hot = {key: count for key, count in written.items() if count > max_writes(key) and " events " not in key}
    assert not hot, f"objects written more than {MAX_WRITES} times in {QUIET_S}s of quiet: {hot}"
    restless = {key: count for key, count in written.items() if "/status " in key and key.split()[-1] not in moving}
    assert not restless, f"status written to objects at rest during {QUIET_S}s of quiet: {restless}; {statuses}"
