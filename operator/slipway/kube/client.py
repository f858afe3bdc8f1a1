"""Kubernetes API access with the official client.

Children are written with server-side apply under our field manager: one idempotent call that
creates or updates, and touches only the fields Slipway owns (other controllers' fields and
defaults stay), so an operator restart or a retried handler never makes a duplicate.
"""

from __future__ import annotations

import json
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.resources import Resource
from ..reconcile.registry import next_version

FIELD_MANAGER = "slipway"
VERSION_COUNTER = "slipway-model-versions"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)

    @classmethod
    def connect(cls, pool_size: int = 32) -> Kube:
        """In-cluster credentials when running in a pod, else the kubeconfig ($KUBECONFIG)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        configuration.connection_pool_maxsize = pool_size  # one per handler thread
        return cls(client.ApiClient(configuration))

    def apply(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of `obj` (create or update the fields we own)."""
        meta = obj["metadata"]
        result = self.custom.patch_namespaced_custom_object(
            resource.group,
            resource.version,
            meta["namespace"],
            resource.plural,
            meta["name"],
            obj,
            field_manager=FIELD_MANAGER,
            force=True,  # we are the only writer of these fields; take them back if someone edited
            _content_type=APPLY_PATCH,
            # The generated client maps only 200 to a body; an apply that creates answers 201.
            _preload_content=False,
        )
        return cast(dict[str, Any], json.loads(cast(Any, result).data))

    def patch_status(self, resource: Resource, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge-patch the status subresource."""
        self.custom.patch_namespaced_custom_object_status(
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            name,
            {"status": status},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )

    def allocate_version(self, namespace: str, model: str, floor: int) -> int:
        """The next version number of `model`, from a per-namespace counter.

        A ConfigMap keeps the last number handed out per model; a compare-and-swap on its
        resourceVersion makes concurrent runs get distinct numbers, and a deleted
        ModelVersion's number is never handed out again. `floor` is the highest version known
        to exist (registered by hand, or before the counter existed).
        """
        core = client.CoreV1Api(self.api_client)
        while True:
            try:
                counter = core.read_namespaced_config_map(VERSION_COUNTER, namespace)
            except ApiException as error:
                if error.status != 404:
                    raise
                body = client.V1ConfigMap(
                    metadata=client.V1ObjectMeta(name=VERSION_COUNTER, namespace=namespace),
                    data={model: str(floor + 1)},
                )
                try:
                    core.create_namespaced_config_map(namespace, body, field_manager=FIELD_MANAGER)
                except ApiException as conflict:
                    if conflict.status == 409:
                        continue  # someone else made it first: read theirs
                    raise
                return floor + 1
            data = dict(counter.data or {})
            version = next_version([floor], int(data.get(model, "0")))
            data[model] = str(version)
            counter.data = data
            try:
                core.replace_namespaced_config_map(VERSION_COUNTER, namespace, counter, field_manager=FIELD_MANAGER)
            except ApiException as error:
                if error.status == 409:
                    continue  # lost the race: read the new value and try again
                raise
            return version

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            found = self.custom.get_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, name
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return cast(dict[str, Any], found)

    def create(self, resource: Resource, obj: dict[str, Any]) -> bool:
        """Create `obj`; False when it already exists."""
        try:
            self.custom.create_namespaced_custom_object(
                resource.group,
                resource.version,
                obj["metadata"]["namespace"],
                resource.plural,
                obj,
                field_manager=FIELD_MANAGER,
            )
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def delete(self, resource: Resource, namespace: str, name: str) -> None:
        """Delete if present (background propagation: its pods go with it)."""
        try:
            self.custom.delete_namespaced_custom_object(
                resource.group, resource.version, namespace, resource.plural, name, propagation_policy="Background"
            )
        except ApiException as error:
            if error.status != 404:
                raise
