"""Events on the parent object, posted from child watches too."""

from __future__ import annotations

from typing import cast

import kopf


def owner_of(child: kopf.Body, kind: str) -> kopf.Body | None:
    """An object reference (enough for kopf.event) to the child's owner of `kind`."""
    metadata = child.get("metadata", {})
    for ref in metadata.get("ownerReferences", []):
        if ref.get("kind") == kind:
            return reference(ref["apiVersion"], kind, metadata.get("namespace"), ref["name"], ref["uid"])
    return None


def reference(api_version: str, kind: str, namespace: str | None, name: str, uid: str) -> kopf.Body:
    """A minimal body: enough for kopf.adopt (owner references) and kopf.event."""
    raw = {"apiVersion": api_version, "kind": kind, "metadata": {"name": name, "namespace": namespace, "uid": uid}}
    return kopf.Body(cast(kopf.RawBody, raw))


def announce(obj: kopf.Body | None, failed: bool, reason: str, message: str) -> None:
    if obj is None:
        return
    if failed:
        kopf.warn(obj, reason=reason, message=message)
    else:
        kopf.info(obj, reason=reason, message=message)
