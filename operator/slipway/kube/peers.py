"""Whether another operator replica has ever shared this replica's Kopf peering.

A replica that stood by (Kopf paused it for a peer of higher priority) holds indexes and a memory
of its own writes that are as old as the pause, until its watches list again; it must read what
it is about to act on live. A replica that has been alone since it started has no such gap: its
watches have seen every write. The answer is sticky: once a peer was seen, it stays "shared".

Watched on a thread of its own, not through a Kopf handler: Kopf pauses its handlers' watches
with the operator, and resumes them together, so a handler could not learn in time.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from kubernetes import watch
from kubernetes.client import CustomObjectsApi

from .client import Kube

PEERINGS = ("kopf.dev", "v1", "clusterkopfpeerings")
logger = logging.getLogger(__name__)


def others_in(status: Mapping[str, Any] | None, own_priority: int) -> bool:
    """Whether a peering's status lists a replica other than the one with `own_priority`
    (each replica's priority is its start time in microseconds: unique to it)."""
    return any(isinstance(peer, Mapping) and peer.get("priority") != own_priority for peer in (status or {}).values())


class Peers:
    def __init__(self, kube: Kube, peering: str, own_priority: int) -> None:
        self.api = CustomObjectsApi(kube.api_client)
        self.peering = peering
        self.own_priority = own_priority
        self.shared = threading.Event()

    def start(self) -> None:
        """Reads the peering now (before any handler runs), then follows it on a daemon thread."""
        version = self._read()
        if not self.shared.is_set():
            threading.Thread(target=self._follow, args=(version,), name="slipway-peers", daemon=True).start()

    def _read(self) -> str | None:
        """Lists the peering (the chart grants list and watch, as Kopf needs, and no get)."""
        found: Any = self.api.list_cluster_custom_object(*PEERINGS, field_selector=f"metadata.name={self.peering}")
        for peering in found.get("items", []):
            self._see(peering)
        version: str | None = found.get("metadata", {}).get("resourceVersion")
        return version

    def _see(self, peering: Mapping[str, Any]) -> None:
        if others_in(peering.get("status"), self.own_priority):
            self.shared.set()

    def _follow(self, version: str | None) -> None:
        while not self.shared.is_set():
            try:
                stream = watch.Watch().stream(  # type: ignore[no-untyped-call]
                    self.api.list_cluster_custom_object,
                    *PEERINGS,
                    field_selector=f"metadata.name={self.peering}",
                    resource_version=version,
                    timeout_seconds=300,
                )
                for event in stream:
                    self._see(event["object"])
                    version = event["object"].get("metadata", {}).get("resourceVersion", version)
                    if self.shared.is_set():
                        return
            except Exception as error:  # an outage, or a version too old: list again and go on
                logger.info("following the peering %s again after: %s", self.peering, error)
                time.sleep(1)
                try:
                    version = self._read()
                except Exception:  # still away; the next turn tries again
                    version = None
