"""The dev stack's stand-in for KubeRay: runs each RayJob on a local Ray through the Ray Jobs API.

KubeRay submits a RayJob's entrypoint to its RayCluster with Ray's job submission and mirrors the
job's state into the RayJob's status; this does the same against one local Ray instance and
writes status the way KubeRay does (jobId, jobStatus, jobDeploymentStatus, startTime, endTime,
message, reason), so the operator cannot tell the difference.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.resources import RAY_JOBS

log = logging.getLogger("slipway.devstack.rayjobs")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def rfc3339(epoch_ms: int | None) -> str | None:
    if not epoch_ms:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def submission_id(rayjob: dict[str, Any]) -> str:
    """Stable per RayJob object, so a restarted executor finds the job it submitted."""
    meta = rayjob["metadata"]
    return f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"


def kuberay_status(
    job_status: str, message: str, start_ms: int | None, end_ms: int | None, job_id: str
) -> dict[str, Any]:
    """A RayJob status as KubeRay writes it for a Ray job in `job_status`."""
    deployment = "Complete" if job_status in TERMINAL else "Running"
    status: dict[str, Any] = {
        "jobId": job_id,
        "jobStatus": job_status,
        "jobDeploymentStatus": deployment,
        "rayClusterName": "local",
        "message": message or "",
    }
    if start_ms:
        status["startTime"] = rfc3339(start_ms)
    if end_ms and job_status in TERMINAL:
        status["endTime"] = rfc3339(end_ms)
    if job_status == "SUCCEEDED":
        status["succeeded"] = 1
    elif job_status in ("FAILED", "STOPPED"):
        status["failed"] = 1
    return status


def deadline_status(previous: dict[str, Any], now: datetime) -> dict[str, Any]:
    """KubeRay's status for a RayJob stopped by activeDeadlineSeconds."""
    return {
        **previous,
        "jobStatus": "STOPPED",
        "jobDeploymentStatus": "Failed",
        "reason": "DeadlineExceeded",
        "message": "the RayJob ran past its activeDeadlineSeconds",
        "endTime": now.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
    }


def runtime_env(rayjob: dict[str, Any], extra_env: dict[str, str]) -> dict[str, Any]:
    parsed = yaml.safe_load(rayjob["spec"].get("runtimeEnvYAML") or "") or {}
    env = {**parsed.get("env_vars", {}), **extra_env}
    return {**parsed, "env_vars": env}


class Executor:
    def __init__(
        self,
        custom: client.CustomObjectsApi,
        ray_address: str,
        extra_env: dict[str, str],
        headers: dict[str, str] | None = None,
    ) -> None:
        """`headers`: for a client in a process that did not start with LocalRay.env (Ray's auth)."""
        from ray.job_submission import JobSubmissionClient

        self.custom = custom
        self.jobs = JobSubmissionClient(ray_address, headers=headers)
        self.extra_env = extra_env

    def step(self) -> None:
        """One pass over every RayJob: submit the new ones, mirror the running ones."""
        listing: Any = self.custom.list_cluster_custom_object(RAY_JOBS.group, RAY_JOBS.version, RAY_JOBS.plural)
        for rayjob in listing["items"]:
            status = rayjob.get("status") or {}
            if status.get("jobStatus") in TERMINAL or status.get("jobDeploymentStatus") == "Failed":
                continue
            try:
                self._advance(rayjob, status)
            except Exception:  # one bad job must not stop the others
                log.exception("RayJob %s/%s", rayjob["metadata"]["namespace"], rayjob["metadata"]["name"])

    def _advance(self, rayjob: dict[str, Any], status: dict[str, Any]) -> None:
        sid = submission_id(rayjob)
        try:
            details = self.jobs.get_job_info(sid)
        except RuntimeError:  # not submitted yet
            self._write(rayjob, {"jobDeploymentStatus": "Initializing", "jobId": sid})
            self.jobs.submit_job(
                entrypoint=rayjob["spec"]["entrypoint"],
                submission_id=sid,
                runtime_env=runtime_env(rayjob, self.extra_env),
            )
            log.info("submitted %s", sid)
            return
        new = kuberay_status(details.status.value, details.message or "", details.start_time, details.end_time, sid)
        deadline = rayjob["spec"].get("activeDeadlineSeconds")
        running_for = time.time() - details.start_time / 1000 if details.start_time else 0
        if deadline and details.status.value not in TERMINAL and running_for > deadline:
            self.jobs.stop_job(sid)
            new = deadline_status(new, datetime.now(UTC))
        if any(status.get(key) != value for key, value in new.items()):
            self._write(rayjob, new)

    def _write(self, rayjob: dict[str, Any], status: dict[str, Any]) -> None:
        meta = rayjob["metadata"]
        try:
            self.custom.patch_namespaced_custom_object_status(
                RAY_JOBS.group, RAY_JOBS.version, meta["namespace"], RAY_JOBS.plural, meta["name"], {"status": status}
            )
        except ApiException as error:
            if error.status != 404:  # deleted meanwhile
                raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--ray-address", required=True, help="Ray dashboard URL, e.g. http://127.0.0.1:8265")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE added to every job's environment")
    parser.add_argument("--interval", type=float, default=0.5)
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("SLIPWAY_LOG_LEVEL", "INFO"), format="%(asctime)s %(name)s %(message)s")
    api = config.new_client_from_config(str(args.kubeconfig))  # type: ignore[no-untyped-call]
    extra = dict(item.split("=", 1) for item in args.env)
    executor = Executor(client.CustomObjectsApi(api), args.ray_address, extra)
    while True:
        executor.step()
        time.sleep(args.interval)


if __name__ == "__main__":
    raise SystemExit(main())
