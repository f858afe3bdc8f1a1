"""Smoke test on the kind cluster: the API contract's manifests are accepted as written, and the
contract's TrainingRun becomes a KubeRay RayJob owned by the run.

The contract asks for GPUs and 16Gi workers, so its Ray pods stay pending on kind; only the RayJob
is checked. Runs in a namespace of its own (see conftest.py for when it is skipped).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.kind.cluster import Kind
from tests.support import contract_manifests, wait_for

pytestmark = [pytest.mark.kind, pytest.mark.timeout(600)]
RUN = "churn-2026-11-22"


def test_contract_manifests_are_accepted_and_the_training_run_becomes_a_rayjob(kind: Kind, namespace: str) -> None:
    manifests = contract_manifests()
    for manifest in manifests:
        manifest["metadata"]["namespace"] = namespace
    kind.apply(*manifests)

    def rayjobs() -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = kind.custom.list_namespaced_custom_object(
            "ray.io", "v1", namespace, "rayjobs", label_selector=f"slipway.dev/training-run={RUN}"
        )["items"]
        return listed

    found = wait_for(rayjobs, timeout=180, interval=2, what=f"a RayJob for TrainingRun {namespace}/{RUN}")
    assert len(found) == 1, [job["metadata"]["name"] for job in found]
    owners = found[0]["metadata"].get("ownerReferences", [])
    assert [(owner["kind"], owner["name"]) for owner in owners] == [("TrainingRun", RUN)]
    workers = found[0]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 2
    assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
