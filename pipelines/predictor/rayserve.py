"""The ray-serve engine: the model in Ray Serve replicas, KServe's model server still the front.

The predictor process starts its own Ray instance (never a cluster named by RAY_ADDRESS): no
dashboard, no Serve HTTP/gRPC proxies (KServe's server answers every request), a small object
store, a fresh temporary directory and only OS-chosen ports, so several predictors and a training
Ray can share a machine. Serve runs one deployment, `ScoringReplica`: each replica loads the run
directory (and opens the online store when enrichment is on), and scores with `@serve.batch`
(`SLIPWAY_MAX_BATCH_SIZE` rows, waiting up to `SLIPWAY_MAX_BATCH_WAIT_MS`).

The front keeps everything that is per request: HTTP, parsing and validation (so a bad request
is the same 400 as with the kserve engine), the batcher and every metric (replica processes cannot
reach the front's `/metrics`; a replica answers the probabilities and each row's missing-value
count, which the front records, and with enrichment the rows as filled, which the front's input
monitor counts). A handle call costs milliseconds, far more than a small model's
forward pass, so the front does not call the deployment per request: its batcher gathers
concurrent requests, as with the kserve engine, and keeps one batch in flight per replica the
deployment may have (`SLIPWAY_RAY_MAX_REPLICAS` when autoscaling); what queues meanwhile is the
next batch. Calls that land on one replica while it is busy (fewer replicas running than the
maximum) are merged by its `@serve.batch`. Calls go straight to the replica over gRPC
(`_by_reference=False`). bench/README.md has the measurements behind each choice.

`kserve.ray.RayModel` is not used: it sends each raw request body to the deployment, so parsing,
errors and metrics would happen in replicas and every request would be a handle call.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import signal
import tempfile
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import ray
import torch
from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from . import artifact
from .enrich import online_lookup
from .instances import Instances, Key, Schema
from .metrics import ModelMetrics
from .monitor import monitor_for
from .scorer import BatchScorer, Computed, LocalCompute, warm_up
from .settings import RaySettings, Settings, SettingsError

log = logging.getLogger("slipway.predictor.rayserve")

APP = "slipway"
DEPLOYMENT = "scorer"
NAMESPACE = "slipway-predictor"
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; only handle arguments and answers pass through it
IN_FLIGHT_PER_REPLICA = 1  # two per replica made smaller batches and cost more CPU per request (bench/README.md)
# Ray services that listen on fixed ports unless told otherwise (0: the OS picks one).
RAY_PORT_VARIABLES = {"AUTOSCALER_METRIC_PORT": "0", "DASHBOARD_METRIC_PORT": "0"}


def batch_rows(items: Sequence[Instances]) -> int:
    """`@serve.batch`'s size of a batch: its rows, not its calls."""
    return sum(len(item) for item in items)


async def score_together(compute: LocalCompute, items: Sequence[Instances]) -> list[Computed | Exception]:
    """One forward pass for several calls' rows; if it fails, each call alone (so a bad call fails only itself).

    A failed call's entry is its exception, which the replica raises to that caller only.
    """
    values = np.concatenate([item.values for item in items])  # a copy: Ray hands arguments over read-only
    keys = [key for item in items for key in item.keys]
    try:
        computed = await compute(values, keys)
    except Exception as exc:
        if len(items) == 1:
            return [exc]
        log.warning("a batch of %d calls failed (%s); scoring each alone", len(items), exc)
        out: list[Computed | Exception] = []
        for item in items:
            out.extend(await score_together(compute, [item]))
        return out
    return list(computed.split([len(item) for item in items]))


def device_for(ray_settings: RaySettings) -> str:
    return "cuda" if ray_settings.gpus_per_replica > 0 else "cpu"


class ScoringReplica:
    """One Ray Serve replica: the model (and its online store) in a process of its own."""

    def __init__(self, settings: Settings) -> None:
        warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # as the front does
        torch.set_num_threads(settings.torch_threads)
        loaded = artifact.load(settings.model_dir)
        features = tuple(loaded.manifest.features)
        lookup, key_type = online_lookup(settings, features)
        device = device_for(settings.ray)
        model = loaded.model if device == "cpu" else loaded.model.to(device)
        self.compute = LocalCompute(model, len(features), lookup, device)
        warm_up(self.compute, settings.max_batch_size)
        self.max_rows = settings.max_batch_size
        batch_handler: Any = self.score_batch  # Serve's setters for the decorator's arguments
        batch_handler.set_max_batch_size(settings.max_batch_size)
        batch_handler.set_batch_wait_timeout_s(settings.max_batch_wait_s)
        self.description = {
            "features": list(features),
            "key_type": key_type.__name__,
            "device": device,
            "pid": os.getpid(),
        }

    def describe(self) -> dict[str, Any]:
        """What the front needs to parse requests: the features and the entity key's type."""
        return self.description

    async def score(self, instances: Instances) -> Computed:
        if len(instances) > self.max_rows:  # @serve.batch refuses an item larger than a batch: run it alone
            result = (await score_together(self.compute, [instances]))[0]
        else:
            result = await self.score_batch(instances)
        if isinstance(result, Exception):
            raise result
        return result

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002, batch_size_fn=batch_rows)
    async def score_batch(self, items: list[Instances]) -> list[Computed | Exception]:
        return await score_together(self.compute, items)


class RemoteCompute:
    """A batch's rows scored by the deployment; a replica's exception is raised as itself."""

    def __init__(self, handle: DeploymentHandle[Any]) -> None:
        # Straight to a replica over gRPC, pickled: under half the time per call of Ray's actor
        # tasks (bench/README.md); the answer is a value, never needed as an object reference.
        self.handle = handle.options(
            _by_reference=False, request_serialization="pickle", response_serialization="pickle"
        )

    async def __call__(self, values: np.ndarray, keys: Sequence[Key | None]) -> Computed:
        try:
            result: Computed = await self.handle.score.remote(Instances(values, tuple(keys)))
        except RayTaskError as exc:
            if isinstance(exc.cause, Exception):
                raise exc.cause from None
            raise
        return result

    def close(self) -> None:
        pass


def gpus_needed(ray_settings: RaySettings) -> int:
    """Whole GPUs for the most replicas (fractions of one GPU share it; Ray never splits a replica)."""
    share = ray_settings.gpus_per_replica
    if share <= 0:
        return 0
    if share > 1:
        return ray_settings.most_replicas * math.ceil(share)
    per_gpu = math.floor(1 / share + 1e-9)
    return math.ceil(ray_settings.most_replicas / per_gpu)


def init_options(ray_settings: RaySettings, temp_dir: str, gpus: int) -> dict[str, Any]:
    """`ray.init` arguments for a private Ray instance that holds exactly the replicas' resources."""
    return {
        "address": "local",
        "num_cpus": max(1, math.ceil(ray_settings.most_replicas * ray_settings.cpus_per_replica - 1e-9)),
        "num_gpus": gpus,
        "include_dashboard": False,
        "object_store_memory": OBJECT_STORE_BYTES,
        "namespace": NAMESPACE,
        "log_to_driver": True,  # replica errors belong in the predictor's own log
        "_temp_dir": temp_dir,
        # Ray lowers its workers' priority (nice 15) to favour its own services on shared nodes; here the
        # replicas do the model's work and must not yield the CPU to the front.
        "_system_config": {"worker_niceness": 0},
    }


def deployment_options(settings: Settings) -> dict[str, Any]:
    """`serve.deployment` options from the SLIPWAY_RAY_* settings."""
    r = settings.ray
    actor: dict[str, Any] = {"num_cpus": r.cpus_per_replica}
    if r.gpus_per_replica > 0:
        actor["num_gpus"] = r.gpus_per_replica
    options: dict[str, Any] = {
        "name": DEPLOYMENT,
        "ray_actor_options": actor,
        # The front keeps at most IN_FLIGHT_PER_REPLICA x the most replicas in flight; `@serve.batch`
        # wants room for a full batch's calls (it warns otherwise).
        "max_ongoing_requests": max(settings.max_batch_size, IN_FLIGHT_PER_REPLICA * r.most_replicas),
        "graceful_shutdown_wait_loop_s": 0.2,
        "graceful_shutdown_timeout_s": 5.0,
        "logging_config": {"enable_access_log": settings.access_log},
    }
    if r.autoscaling:
        options["autoscaling_config"] = {
            "min_replicas": r.min_replicas,
            "initial_replicas": r.min_replicas,
            "max_replicas": r.max_replicas,
            "target_ongoing_requests": IN_FLIGHT_PER_REPLICA,
        }
    else:
        options["num_replicas"] = r.replicas
    return options


@contextlib.contextmanager
def _private_ray_processes() -> Iterator[None]:
    """Two adjustments to the processes `ray.init` starts (gcs_server, raylet, its agents, the
    monitors), for this call only; Ray has no argument for either:

    - the dashboard agent's HTTP server gets a port chosen by the OS instead of the fixed 52365,
      which a second Ray on the machine (another predictor, the training Ray) would find taken;
    - each process starts in a process group of its own, as Ray already does on Windows when the
      kernel kills its processes with their parent (Linux: PR_SET_PDEATHSIG). A signal to the
      predictor's process group (the dev stack stops a server so, as does `timeout`) then reaches
      the predictor only, which stops Serve and Ray in order; otherwise gcs_server and the raylet
      go first and Serve's shutdown waits on a controller that cannot answer.
    """
    from ray._private import parameter, services, utils

    params, popen = parameter.RayParams, services.ConsolePopen

    class Params(params):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("dashboard_agent_listen_port", 0)
            super().__init__(*args, **kwargs)

    class Popen(popen):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("process_group", 0)
            super().__init__(*args, **kwargs)

    parameter.RayParams = Params  # type: ignore[misc]
    fate_shared = utils.detect_fate_sharing_support()  # type: ignore[no-untyped-call]
    if os.name == "posix" and fate_shared:  # without it, Ray's reaper needs them in our group
        services.ConsolePopen = Popen  # type: ignore[misc]
    try:
        yield
    finally:
        parameter.RayParams = params  # type: ignore[misc]
        services.ConsolePopen = popen  # type: ignore[misc]


class RayServeEngine:
    """Starts the private Ray instance and the deployment; `shutdown` leaves no process behind."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.temp_dir: str | None = None
        self.handle: DeploymentHandle[Any] | None = None
        self.failed = False  # Ray broke under the predictor: it exits with status 1
        self._stopping = threading.Event()

    def start(self, metrics: ModelMetrics) -> tuple[Schema, BatchScorer]:
        """Ray, Serve and the replicas up (returns once every replica is running): the request schema
        and the scorer that sends batches to the replicas."""
        s = self.settings
        gpus = gpus_needed(s.ray)
        if gpus and torch.cuda.device_count() < gpus:
            raise SettingsError(
                f"SLIPWAY_RAY_GPUS_PER_REPLICA={s.ray.gpus_per_replica} for {s.ray.most_replicas} replica(s) "
                f"needs {gpus} GPU(s); this machine has {torch.cuda.device_count()}"
            )
        manifest = artifact.read_manifest(s.model_dir)  # fails fast, before Ray starts, on a bad run directory
        os.environ.pop("RAY_ADDRESS", None)  # ours is a private instance, whatever the pod's environment says
        os.environ.update(RAY_PORT_VARIABLES)
        self.temp_dir = tempfile.mkdtemp(prefix="slipway-ray-")
        options = init_options(s.ray, self.temp_dir, torch.cuda.device_count() if gpus else 0)
        with _private_ray_processes():
            ray.init(**options)
        threading.Thread(target=self._watch, name="slipway-ray-watch", daemon=True).start()
        serve.start(proxy_location="Disabled")
        deployment = serve.deployment(**deployment_options(s))(ScoringReplica)
        self.handle = serve.run(deployment.bind(s), name=APP, route_prefix=None)
        described = self.handle.describe.remote().result()
        features = tuple(described["features"])
        if features != tuple(manifest.features):
            raise RuntimeError(f"the replicas serve features {features}, the manifest lists {manifest.features}")
        key_type: type[int] | type[str] = str if described["key_type"] == "str" else int
        metrics.monitor_inputs(monitor_for(features, manifest.profile, s.monitor))
        remote = RemoteCompute(self.handle)
        scorer = BatchScorer(
            remote,
            len(features),
            metrics,
            s.max_batch_size,
            s.max_batch_wait_s,
            max_concurrent=IN_FLIGHT_PER_REPLICA * s.ray.most_replicas,
        )
        nan_row = Instances(np.full((1, len(features)), np.nan, dtype=np.float32), (None,))
        try:  # the front's path to the replicas, once, before readiness
            self.handle.score.remote(nan_row).result()
        except Exception as exc:  # a model that fails on some calls still serves the others
            log.warning("ray-serve: the warm-up call failed: %s", str(exc).splitlines()[0])
        log.info(
            "ray-serve: %s, %s CPU and %s GPU each, on %s; Ray in %s",
            f"{s.ray.min_replicas}-{s.ray.max_replicas} replicas (autoscaling)"
            if s.ray.autoscaling
            else f"{s.ray.replicas} replica(s)",
            s.ray.cpus_per_replica,
            s.ray.gpus_per_replica,
            described["device"],
            self.temp_dir,
        )
        return Schema(features, s.entity_key, key_type), scorer

    def shutdown(self) -> None:
        """Serve's replicas and controller, then Ray's processes, then the temporary directory.

        With Ray whole (SIGTERM or SIGINT to the predictor, or to its process group, which Ray's
        processes are not in): Serve stops its replicas, `ray.shutdown` Ray's services, and whatever
        outlives that is killed. With Ray broken (a service died, or was killed): Serve cannot
        answer, so the directory is removed and Ray's processes are stopped directly, and the
        process exits with status 1 at once.
        """
        self._stopping.set()
        family = _descendants()
        if ray.is_initialized():
            if self._answers():
                try:
                    serve.shutdown()  # type: ignore[no-untyped-call]
                except Exception:  # Ray is going down anyway; what matters is that it does
                    log.exception("Serve did not shut down cleanly")
                ray.shutdown()
            else:
                log.warning("ray-serve: Ray is not whole; stopping its processes directly")
                self._remove_temp_dir()
                _stop(family, grace_s=1.0)
                log.error("ray-serve: Ray stopped; exiting with status 1")
                logging.shutdown()
                # Not `ray.shutdown` (here, or at exit): Ray's core aborts leaving services that are gone.
                os._exit(1)
        left = _stop(family, grace_s=STOP_GRACE_S)
        if left:
            log.warning("ray-serve: killed %d Ray process(es) that outlived ray.shutdown", left)
        self._remove_temp_dir()
        log.info("ray-serve: Serve and Ray stopped")

    def _remove_temp_dir(self) -> None:
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None

    def _answers(self) -> bool:
        """Whether Ray's core processes run and a replica answers (quickly), if there are replicas yet."""
        if not _core_processes_alive(_descendants()):
            return False
        if self.handle is None:  # stopped while starting: Serve can still stop what it started
            return True
        try:
            self.handle.describe.remote().result(timeout_s=PROBE_TIMEOUT_S)
        except Exception:
            return False
        return True

    def _watch(self) -> None:
        """Stop the predictor (SIGTERM to itself, exit status 1) if gcs_server or the raylet exits under it:
        Ray does not notice by itself (a call in flight, a start-up, would wait forever), and a predictor
        without Ray answers nothing but 500s. The kubelet then restarts the container."""
        core = [p for p in _descendants() if _name(p) in CORE_PROCESSES]
        if not _core_processes_alive(core):  # not Ray as `ray.init` leaves it: nothing to watch
            log.warning("ray-serve: found no gcs_server and raylet among this process's children")
            return
        while not self._stopping.wait(WATCH_PERIOD_S):
            gone = sorted(name for name in CORE_PROCESSES if not any(_name(p) == name for p in core))
            if gone:
                log.error("ray-serve: Ray's %s exited; stopping the predictor", " and ".join(gone))
                self.failed = True
                os.kill(os.getpid(), signal.SIGTERM)
                return


STOP_GRACE_S = 3.0  # for Ray's processes to exit after SIGTERM before SIGKILL
PROBE_TIMEOUT_S = 2.0
WATCH_PERIOD_S = 0.5
CORE_PROCESSES = ("gcs_server", "raylet")


def _core_processes_alive(processes: Sequence[Any]) -> bool:
    return all(any(_name(p) == name for p in processes) for name in CORE_PROCESSES)


def _psutil() -> Any:
    import psutil  # a dependency of ours; Ray ships a copy too (ray/thirdparty_files)

    return psutil


def _descendants() -> list[Any]:
    psutil = _psutil()
    try:
        return list(psutil.Process().children(recursive=True))
    except psutil.Error:
        return []


def _name(process: Any) -> str:
    psutil = _psutil()
    try:
        return "" if process.status() == psutil.STATUS_ZOMBIE else str(process.name())
    except psutil.Error:
        return ""


def _stop(processes: Sequence[Any], grace_s: float) -> int:
    """SIGTERM the processes still running, SIGKILL those left after `grace_s`; returns how many were running.

    psutil checks each process's start time, so a pid reused since the snapshot is never signalled.
    """
    psutil = _psutil()
    running = [p for p in processes if _name(p)]
    for process in running:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(running, timeout=grace_s)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=grace_s)
    return len(running)
