"""All Kopf settings, in one startup hook; each value says why it is what it is."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from typing import Any

import kopf
import prometheus_client
from kubernetes.client import CustomObjectsApi, VersionApi
from kubernetes.client.exceptions import ApiException

from ..api.defaults import OperatorDefaults
from ..builders.httproute import Routing
from ..kube import Kube
from ..kube.peers import Peers
from .persistence import HandledInMemory, UnmarkedProgress

PEERING_NAME = "slipway"
PEERING_LIFETIME_S = 20
PREFIX = "slipway.dev"
HANDLER_THREADS = 16
HANDLER_BACKOFF_S = 10
CONSISTENCY_TIMEOUT_S = 60
WORKER_IDLE_S = 0.1


# Start-up calls the API server (the peering, below). One refused or failed while the server, its
# RBAC or its CRDs settle is tried again a few times; after that the operator exits, so a pod that
# cannot work restarts where `kubectl get pods` shows it, instead of running and doing nothing.
STARTUP_RETRIES = 6
STARTUP_BACKOFF_S = 5


@kopf.on.startup(retries=STARTUP_RETRIES, backoff=STARTUP_BACKOFF_S)
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Kopf's settings and the operator's own; safe to run again (Kopf retries it on an error)."""
    # Leader election: every replica joins one peering; the highest priority works, the rest
    # stand by. Priority is the start time, so a restarted or newly rolled-out replica takes
    # over at once instead of waiting for a dead peer's record to expire.
    settings.peering.name = PEERING_NAME
    settings.peering.clusterwide = True
    settings.peering.priority = time.time_ns() // 1000
    settings.peering.mandatory = os.environ.get("SLIPWAY_STANDALONE", "") != "1"
    settings.peering.standalone = not settings.peering.mandatory
    # A replica killed without its farewell (SIGKILL, a lost node) holds the lead until its record
    # expires: 20 s instead of Kopf's 60 bounds the takeover. Keep-alives still come 5-10 s
    # before expiry, as with the default, so a live leader is never taken for dead sooner.
    settings.peering.lifetime = PEERING_LIFETIME_S
    # Handler progress (a failing handler's retries) lives in our annotations, so it survives a
    # restart; the last handled spec is kept in the process, which costs no call
    # (handlers/persistence.py says why that is enough).
    settings.persistence.progress_storage = UnmarkedProgress(prefix=PREFIX)
    settings.persistence.diffbase_storage = memo.handled = HandledInMemory()
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    # Handlers are sync and block on API calls in threads; one per pooled API connection. At 2,000
    # new parents 16 finished as fast as 32 with 11 MiB less peak memory; 8 were 14% slower
    # (bench/operator_scale.py, one run each, then with a worker limit since taken out). A thread
    # also waits out an API server restart (handlers/retries.py) or a Prometheus query, so fewer
    # would let a few slow calls stall all.
    settings.execution.max_workers = HANDLER_THREADS
    # Kopf keeps a worker task per object that had an event, 5 s past its last one by default: at
    # 2,000 new parents, thousands of live workers. One that lets go at once costs only a new task
    # on the next event. (No `worker_limit`: with indexes it deadlocks a restart among more objects
    # than the limit, as each worker waits for every object to be indexed, holding its slot.)
    settings.queueing.idle_timeout = WORKER_IDLE_S
    # A failed handler (the API server away longer than a call waits) is retried after 10 s, not
    # Kopf's 60: an outage of seconds should delay the work by seconds.
    settings.execution.default_backoff = HANDLER_BACKOFF_S
    # After Kopf patches an object it skips that object's older events until its watch shows the
    # patch, for at most this long, then acts on the stale body: at 2,000 parents the watches lag
    # tens of seconds, and with Kopf's 5 s one in three TrainingRuns had its create handler run
    # again (bench/operator_scale.py). Waiting costs nothing but that object's turn.
    settings.persistence.consistency_timeout = CONSISTENCY_TIMEOUT_S
    # Bounded watch calls, so a silently dropped connection is noticed within minutes.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Events for info and above reach `kubectl describe`.
    settings.posting.level = 20

    # The platform team's defaults and routing (chart values), read once: a bad value stops start-up.
    try:
        memo.defaults = OperatorDefaults.from_env(os.environ)
    except ValueError as error:
        raise kopf.PermanentError(str(error)) from error
    memo.routing = Routing.parse(
        os.environ.get("SLIPWAY_GATEWAY", "slipway-system/slipway-gateway"),
        os.environ.get("SLIPWAY_INGRESS_DOMAIN", "example.com"),
    )
    _serve_metrics(memo)
    memo.kube = Kube.connect(pool_size=HANDLER_THREADS)
    memo.locks = defaultdict(threading.Lock)
    memo.written = {}  # uid -> the status we last wrote
    memo.written_at = {}  # uid -> the resourceVersion that write returned (reconcile.status.fresher_status)
    # Whether a deployment must be read live before it is written (handlers/modeldeployment.py).
    memo.peers = None
    if settings.peering.mandatory:
        _ensure_peering(memo.kube, logger)
        memo.peers = Peers(memo.kube, PEERING_NAME, settings.peering.priority)
        memo.peers.start()


def _serve_metrics(memo: kopf.Memo) -> None:
    """/metrics on SLIPWAY_METRICS_PORT, once: a retried start-up must not bind the port it holds."""
    port = os.environ.get("SLIPWAY_METRICS_PORT")
    if not port or memo.get("metrics_server") is not None:
        return
    try:
        memo.metrics_server, _ = prometheus_client.start_http_server(int(port))
    except (ValueError, OSError) as error:  # not a number, or the port is taken: no retry helps
        raise kopf.PermanentError(f"SLIPWAY_METRICS_PORT: cannot serve metrics on {port!r}: {error}") from error


def _ensure_peering(kube: Kube, logger: kopf.Logger) -> None:
    """Replicas can only find each other through a peering object; make it if it is missing."""
    api = CustomObjectsApi(kube.api_client)
    body = {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": PEERING_NAME}}
    try:
        api.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
        logger.info("created ClusterKopfPeering %s", PEERING_NAME)
    except ApiException as error:
        if error.status != 409:
            raise


@kopf.on.probe(id="api")
def api_reachable(memo: kopf.Memo, **_: Any) -> bool:
    """Liveness: the API server answers us."""
    VersionApi(memo.kube.api_client).get_code()
    return True
