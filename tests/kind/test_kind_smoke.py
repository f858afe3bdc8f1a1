"""Smoke test on a kind cluster made by hack/kind-up.sh: the contract's TrainingRun becomes a RayJob.

Runs only where Docker answers and kind and kubectl are on PATH (never on CI here). The
manifests it applies are left in namespace ml for inspection; applying them again is a no-op.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

from tests.support import CONTRACT, wait_for

CLUSTER = "slipway"
CONTEXT = f"kind-{CLUSTER}"
NAMESPACE = "ml"
RUN = "churn-2026-11-22"


def _why_not_runnable() -> str | None:
    """Why this cannot run here (every missing piece), or None when it can."""
    missing = [f"{tool} is not on PATH" for tool in ("docker", "kind", "kubectl") if shutil.which(tool) is None]
    if shutil.which("docker") is not None:
        try:
            docker = subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode
        except (OSError, subprocess.TimeoutExpired):
            docker = 1
        if docker != 0:
            missing.append("`docker info` fails (no Docker daemon reachable)")
    if missing:
        return "kind tests need Docker, kind and kubectl: " + "; ".join(missing)
    try:
        clusters = subprocess.run(["kind", "get", "clusters"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`kind get clusters` did not answer: {error}"
    if CLUSTER not in clusters.stdout.split():
        return f"no kind cluster named {CLUSTER!r}: run hack/kind-up.sh first"
    return None


_SKIP_REASON = _why_not_runnable()

pytestmark = [
    pytest.mark.kind,
    pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or ""),
]


def kubectl(*args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        ["kubectl", "--context", CONTEXT, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def test_contract_training_run_becomes_a_rayjob() -> None:
    kubectl("apply", "-f", "-", stdin=kubectl("create", "namespace", NAMESPACE, "--dry-run=client", "-o", "yaml"))
    kubectl("apply", "-f", str(CONTRACT))

    def rayjobs() -> list[dict[str, Any]]:
        listing = kubectl(
            "get", "rayjobs.ray.io", "-n", NAMESPACE, "-l", f"slipway.dev/training-run={RUN}", "-o", "json"
        )
        items: list[dict[str, Any]] = json.loads(listing)["items"]
        return items

    found = wait_for(rayjobs, timeout=180, interval=2, what=f"a RayJob for TrainingRun {NAMESPACE}/{RUN}")
    assert len(found) == 1, [job["metadata"]["name"] for job in found]
    owners = found[0]["metadata"].get("ownerReferences", [])
    assert [(owner["kind"], owner["name"]) for owner in owners] == [("TrainingRun", RUN)]
