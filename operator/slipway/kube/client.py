"""Kubernetes API access with the official client.

Children are written with server-side apply under our field manager: one idempotent call that
creates or updates, and touches only the fields Slipway owns (other controllers' fields and
defaults stay), so an operator restart or a retried handler never makes a duplicate.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.resources import Resource
from ..reconcile.registry import next_version

FIELD_MANAGER = "slipway"
VERSION_COUNTER = "slipway-model-versions"
APPLY_PATCH = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
# A restarting API server refuses connections for a few seconds; a call waits that out (about 25 s
# at most) instead of failing its handler, which Kopf would retry only after its backoff, or never
# for an event handler. Only what cannot have reached the server is sent again, and reads: a PUT
# or a create whose answer was lost may have been applied (the version counter's PUT would then
# allocate a second number).
OUTAGE_RETRIES = urllib3.Retry(
    total=20,
    connect=15,
    read=2,
    status=0,
    other=0,
    allowed_methods=frozenset({"GET"}),
    backoff_factor=0.2,
    backoff_max=2.0,
    raise_on_status=False,
)
# What YAML may hold unescaped (its printable set) less its line breaks beyond ASCII (NEL, LS, PS),
# which a double-quoted scalar would fold, and the byte-order mark.
_YAML_UNSAFE = re.compile("[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd\U00010000-\U0010ffff]")


def apply_body(obj: dict[str, Any]) -> bytes:
    """`obj` as an apply-patch body: JSON that YAML reads back the same.

    The API server parses an apply patch as YAML, whose escapes cannot spell a UTF-16 surrogate:
    the client's own `json.dumps` writes a character beyond U+FFFF (an emoji in a spec's
    hyperparameter, say) as a surrogate pair, and the server refused the whole patch (400, "found
    invalid Unicode character escape code"). So characters are written as themselves (UTF-8),
    and only those YAML must not see raw are escaped, each with a \\uXXXX it accepts.
    """
    text = json.dumps(obj, ensure_ascii=False)  # escapes the C0 controls, quotes and backslashes
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m[0]):04x}", text).encode()


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
        configuration.retries = OUTAGE_RETRIES
        return cls(client.ApiClient(configuration))

    def apply(self, resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply of `obj` (create or update the fields we own).

        The request is built here rather than by `patch_namespaced_custom_object`, which takes
        only a dict and serializes it with the surrogate escapes YAML refuses (`apply_body`)."""
        meta = obj["metadata"]
        path = (
            f"/apis/{resource.group}/{resource.version}/namespaces/{meta['namespace']}/{resource.plural}/{meta['name']}"
        )
        request = self.api_client.param_serialize(
            "PATCH",
            path,
            # force: we are the only writer of these fields; take them back if someone edited
            query_params=[("fieldManager", FIELD_MANAGER), ("force", True)],
            header_params={"Content-Type": APPLY_PATCH, "Accept": "application/json"},
            body=apply_body(obj),  # bytes go out as they are
            auth_settings=["BearerToken"],
        )
        response: Any = self.api_client.call_api(*request)
        data: bytes = response.read()
        if not 200 <= response.status <= 299:  # 201 when the apply created the object
            raise ApiException.from_response(http_resp=response, body=data.decode(errors="replace"), data=None)
        return cast(dict[str, Any], json.loads(data))

    def patch_status(self, resource: Resource, namespace: str, name: str, status: dict[str, Any]) -> str:
        """Merge-patch the status subresource; returns the object's resourceVersion after the patch."""
        patched: Any = self.custom.patch_namespaced_custom_object_status(
            resource.group,
            resource.version,
            namespace,
            resource.plural,
            name,
            {"status": status},
            field_manager=FIELD_MANAGER,
            _content_type=MERGE_PATCH,
        )
        return str(patched.get("metadata", {}).get("resourceVersion", ""))

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

    def list_objects(self, resource: Resource, namespace: str, field_selector: str = "") -> list[dict[str, Any]]:
        """The objects of `resource` in `namespace` now (a read, not a watch's view)."""
        found: Any = self.custom.list_namespaced_custom_object(
            resource.group, resource.version, namespace, resource.plural, field_selector=field_selector
        )
        return cast(list[dict[str, Any]], found["items"])

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
