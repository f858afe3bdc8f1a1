"""The Ray instance a job runs on: the RayJob's cluster (RAY_ADDRESS), or a small local one."""

from __future__ import annotations

import math
import os


def local_cpus(workers: int, cpus_per_worker: float, num_cpus: float | None) -> int:
    """Logical CPUs of a local Ray instance: what the workers ask for, plus one for the driver's
    tasks, unless $SLIPWAY_RAY_NUM_CPUS (`num_cpus`) says more."""
    needed = math.ceil(workers * cpus_per_worker)
    return max(needed, math.ceil(num_cpus)) if num_cpus else needed + 1


def init_ray(workers: int, cpus_per_worker: float, num_cpus: float | None) -> None:
    """Join the Ray cluster the job runs in (RAY_ADDRESS), or start a local one (see `local_cpus`)."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return
    cpus = local_cpus(workers, cpus_per_worker, num_cpus)
    ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=True)
