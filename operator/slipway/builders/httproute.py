"""ModelDeployment (traffic: gateway) -> a Gateway API HTTPRoute splitting over versions by weight."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ..api.resources import DEPLOYMENT_LABEL, HTTP_ROUTES, MANAGED_BY, MODEL_LABEL
from .inferenceservice import predictor_service

SERVICE_PORT = 80  # KServe's predictor Service port


class Routing(NamedTuple):
    """Where routes attach and which host they answer; operator settings, not per deployment."""

    gateway_namespace: str = "slipway-system"
    gateway_name: str = "slipway-gateway"
    domain: str = "example.com"

    @classmethod
    def parse(cls, gateway: str, domain: str) -> Routing:
        """`gateway` as `namespace/name` (or just a name, in slipway-system)."""
        namespace, _, name = gateway.rpartition("/")
        return cls(namespace or cls().gateway_namespace, name, domain)


def hostname(deployment_name: str, namespace: str, routing: Routing) -> str:
    return f"{deployment_name}.{namespace}.{routing.domain}"


def build_httproute(
    name: str,
    namespace: str,
    model: str,
    backends: Mapping[str, int],
    routing: Routing,
    mirror: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """One rule over every backend InferenceService (name -> weight); weight 0 keeps one warm.

    `mirror` (InferenceService, percent): the shadow stage's copy of that share of the requests,
    with Gateway API's standard RequestMirror filter; the Gateway discards its answers.
    """
    refs = [
        {"kind": "Service", "name": predictor_service(isvc), "port": SERVICE_PORT, "weight": weight}
        for isvc, weight in sorted(backends.items())
    ]
    rule: dict[str, Any] = {"backendRefs": refs}
    if mirror is not None:
        isvc, percent = mirror
        target = {"kind": "Service", "name": predictor_service(isvc), "port": SERVICE_PORT}
        rule["filters"] = [{"type": "RequestMirror", "requestMirror": {"backendRef": target, "percent": percent}}]
    return {
        "apiVersion": HTTP_ROUTES.api_version,
        "kind": HTTP_ROUTES.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {**MANAGED_BY, MODEL_LABEL: model, DEPLOYMENT_LABEL: name},
        },
        "spec": {
            "parentRefs": [{"name": routing.gateway_name, "namespace": routing.gateway_namespace}],
            "hostnames": [hostname(name, namespace, routing)],
            "rules": [rule],
        },
    }


def route_weights(route: Mapping[str, Any]) -> dict[str, int]:
    """Backend Service name -> weight, as the route's spec says."""
    weights: dict[str, int] = {}
    for rule in route.get("spec", {}).get("rules", []):
        for ref in rule.get("backendRefs", []):
            weights[ref["name"]] = weights.get(ref["name"], 0) + int(ref.get("weight", 1))
    return weights


def route_mirrors(route: Mapping[str, Any]) -> dict[str, int]:
    """Backend Service name -> percent of requests mirrored to it, as the route's spec says."""
    mirrors: dict[str, int] = {}
    for rule in route.get("spec", {}).get("rules", []):
        for item in rule.get("filters") or []:
            mirror = item.get("requestMirror") or {}
            if item.get("type") != "RequestMirror" or "backendRef" not in mirror:
                continue
            fraction = mirror.get("fraction")
            if fraction is not None:
                percent = 100 * int(fraction.get("numerator", 0)) // max(int(fraction.get("denominator", 100)), 1)
            else:
                percent = int(mirror.get("percent", 100))  # neither: everything is mirrored
            name = mirror["backendRef"]["name"]
            mirrors[name] = mirrors.get(name, 0) + percent
    return mirrors


def route_in_effect(route: Mapping[str, Any]) -> bool:
    """Whether a Gateway has accepted the route's current generation and resolved all its backends.

    Accepted alone is not enough: a route can be Accepted with ResolvedRefs=False (BackendNotFound),
    and the share of traffic on the unresolved backend then gets 500s. Both conditions must come
    from the same parent (Gateway), for this generation.
    """
    generation = route.get("metadata", {}).get("generation", 1)
    for parent in (route.get("status") or {}).get("parents", []):
        current = {
            cond.get("type"): cond.get("status")
            for cond in parent.get("conditions", [])
            if cond.get("observedGeneration", 0) >= generation
        }
        if current.get("Accepted") == "True" and current.get("ResolvedRefs") == "True":
            return True
    return False
