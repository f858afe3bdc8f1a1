"""The dev stack's stand-in for KubeRay: runs each RayJob on a local Ray through the Ray Jobs API.

KubeRay submits a RayJob's entrypoint to its RayCluster with Ray's job submission and mirrors the
job's state into the RayJob's status; this does the same against one local Ray instance and
writes status the way KubeRay v1.6 does (jobId, jobStatus, jobDeploymentStatus with its reason,
startTime from the first write, rayJobInfo with the Ray job's times, endTime, message), so the
operator cannot tell the difference.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.resources import RAY_JOBS
from ..builders.rayjob import RAYJOB_NAME_LIMIT

log = logging.getLogger("slipway.devstack.rayjobs")
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# jobDeploymentStatus values after which KubeRay leaves a RayJob alone.
FINISHED = {"Complete", "Failed", "ValidationFailed"}
DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def rfc3339(moment: datetime) -> str:
    return moment.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def from_epoch_ms(epoch_ms: int | None) -> str | None:
    return rfc3339(datetime.fromtimestamp(epoch_ms / 1000, UTC)) if epoch_ms else None


def submission_id(rayjob: dict[str, Any]) -> str:
    """Stable per RayJob object, so a restarted executor finds the job it submitted."""
    meta = rayjob["metadata"]
    return f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"


def validation_status(rayjob: dict[str, Any], now: datetime) -> dict[str, Any] | None:
    """KubeRay's status for a RayJob it refuses before doing anything (None: it is fine)."""
    name = rayjob["metadata"]["name"]
    if DNS_1035.match(name) and len(name) <= RAYJOB_NAME_LIMIT:
        return None
    return {
        "jobDeploymentStatus": "ValidationFailed",
        "reason": "ValidationFailed",
        "message": f"The RayJob metadata is invalid: RayJob name should be no more than {RAYJOB_NAME_LIMIT} "
        f"characters and a DNS-1035 label: {name!r}",
        "startTime": rfc3339(now),
    }


def initializing_status(job_id: str, now: datetime) -> dict[str, Any]:
    """KubeRay's first write: startTime is always in it (the deadline is counted from it)."""
    return {
        "jobId": job_id,
        "jobDeploymentStatus": "Initializing",
        "rayClusterName": "local",
        "startTime": rfc3339(now),
    }


def kuberay_status(
    previous: dict[str, Any], job_status: str, message: str, start_ms: int | None, end_ms: int | None, now: datetime
) -> dict[str, Any]:
    """A RayJob status as KubeRay writes it for a Ray job in `job_status`.

    A final Ray job ends the attempt (this stand-in has no submitter Job to wait for): FAILED as
    Failed/AppFailed, SUCCEEDED and STOPPED as Complete. The Ray job's own times go to rayJobInfo;
    startTime stays the RayJob's, endTime is when the attempt ended.
    """
    status: dict[str, Any] = {**previous, "jobStatus": job_status, "message": message or ""}
    info = {
        key: value
        for key, value in (("startTime", from_epoch_ms(start_ms)), ("endTime", from_epoch_ms(end_ms)))
        if value
    }
    if info:
        status["rayJobInfo"] = info
    if job_status not in TERMINAL:
        status["jobDeploymentStatus"] = "Running"
        return status
    status["endTime"] = previous.get("endTime") or rfc3339(now)
    if job_status == "FAILED":
        status.update(jobDeploymentStatus="Failed", reason="AppFailed", failed=1)
    else:
        status.update(jobDeploymentStatus="Complete", succeeded=1 if job_status == "SUCCEEDED" else 0)
    return status


def past_deadline(rayjob: dict[str, Any], status: dict[str, Any], now: datetime) -> bool:
    """activeDeadlineSeconds counts from the RayJob's startTime, as KubeRay counts it."""
    deadline = rayjob["spec"].get("activeDeadlineSeconds")
    started = status.get("startTime")
    if not deadline or not started:
        return False
    return (now - datetime.fromisoformat(started.replace("Z", "+00:00"))).total_seconds() > float(deadline)


def deadline_status(previous: dict[str, Any], deadline: int, now: datetime) -> dict[str, Any]:
    """KubeRay's status for a RayJob stopped by activeDeadlineSeconds: jobStatus is left as it was."""
    return {
        **previous,
        "jobDeploymentStatus": "Failed",
        "reason": "DeadlineExceeded",
        "message": f"The RayJob has passed the activeDeadlineSeconds. StartTime: {previous.get('startTime')}. "
        f"ActiveDeadlineSeconds: {deadline}",
        "endTime": rfc3339(now),
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
            if status.get("jobDeploymentStatus") in FINISHED:
                continue
            try:
                self._advance(rayjob, status)
            except Exception:  # one bad job must not stop the others
                log.exception("RayJob %s/%s", rayjob["metadata"]["namespace"], rayjob["metadata"]["name"])

    def _advance(self, rayjob: dict[str, Any], status: dict[str, Any]) -> None:
        now = datetime.now(UTC)
        refused = validation_status(rayjob, now)
        if refused is not None:
            self._write(rayjob, refused)
            return
        sid = submission_id(rayjob)
        if not status.get("startTime"):
            status = initializing_status(sid, now)
            self._write(rayjob, status)
        if past_deadline(rayjob, status, now):
            with contextlib.suppress(RuntimeError):  # never submitted: nothing to stop
                self.jobs.stop_job(sid)
            self._write(rayjob, deadline_status(status, rayjob["spec"]["activeDeadlineSeconds"], now))
            return
        try:
            details = self.jobs.get_job_info(sid)
        except RuntimeError:  # not submitted yet
            self.jobs.submit_job(
                entrypoint=rayjob["spec"]["entrypoint"],
                submission_id=sid,
                runtime_env=runtime_env(rayjob, self.extra_env),
            )
            log.info("submitted %s", sid)
            return
        new = kuberay_status(
            status, details.status.value, details.message or "", details.start_time, details.end_time, now
        )
        if new != status:
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
