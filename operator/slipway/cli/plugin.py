"""`kubectl slipway`: inspect (and, with the rollout engine, drive) ModelDeployments.

kubectl finds this as `kubectl-slipway` on PATH and passes its arguments through.
"""

from __future__ import annotations

import argparse
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.resources import MODEL_DEPLOYMENTS


def render_status(md: dict[str, Any]) -> str:
    """A human view of a ModelDeployment's rollout."""
    spec, status = md.get("spec", {}), md.get("status") or {}
    meta = md["metadata"]
    lines = [
        f"ModelDeployment {meta['namespace']}/{meta['name']}  model={spec.get('model')}  "
        f"strategy={spec.get('strategy', {}).get('type')}  requested={spec.get('version')}",
        f"  phase:     {status.get('phase', 'Pending')}",
        f"  stable:    {status.get('stableVersion', '-')}",
        f"  candidate: {status.get('candidateVersion', '-')}  weight={status.get('canaryWeight', 0)}%",
        f"  url:       {status.get('url') or '-'}",
    ]
    steps = (spec.get("strategy", {}).get("canary") or {}).get("steps", [])
    if steps:
        current = status.get("step")
        for index, step in enumerate(steps):
            marker = ">" if index == current else " "
            lines.append(f"  {marker} step {index}: weight {step['weight']}% pause {step.get('pause', '0s')}")
    for result in status.get("analysis", []):
        lines.append(f"  analysis {result.get('metric')}: {result.get('verdict')} {result.get('value', '')}")
    for cond in status.get("conditions", []):
        lines.append(f"  {cond['type']}={cond['status']} ({cond.get('reason', '')}): {cond.get('message', '')}")
    if status.get("message"):
        lines.append(f"  message:   {status['message']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl slipway", description=__doc__)
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig's)")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="show a ModelDeployment's rollout")
    status.add_argument("name")
    args = parser.parse_args(argv)

    config.load_kube_config()  # type: ignore[no-untyped-call]
    namespace = args.namespace or config.list_kube_config_contexts()[1]["context"].get("namespace", "default")  # type: ignore[no-untyped-call]
    api = client.CustomObjectsApi()
    try:
        md = api.get_namespaced_custom_object(
            *MODEL_DEPLOYMENTS.ref[:2], namespace, MODEL_DEPLOYMENTS.plural, args.name
        )
    except ApiException as error:
        print(f"error: ModelDeployment {namespace}/{args.name}: {error.reason}")
        return 1
    print(render_status(cast(dict[str, Any], md)))
    return 0
