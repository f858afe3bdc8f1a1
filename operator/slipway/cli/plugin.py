"""`kubectl slipway`: inspect and drive ModelDeployment rollouts, and ask a TrainingSchedule to retrain.

kubectl finds this as `kubectl-slipway` on PATH and passes its arguments through. Every action
goes through the API: promote, abort and retry set a request annotation with a fresh id, pause
and resume set or clear the paused annotation, and the operator's rollout engine acts on them.
`retrain` sets a TrainingSchedule's retrain annotation to a fresh request id; the operator makes
one run for it (named after the id, so never two) and records the id as consumed in the status.

`status` also shows the features whose served values drift most from the training data, for the
stable and the candidate version, as the predictors' input monitors report them now. It asks the
deployment's Prometheus (`spec.prometheus.url`, or `--prometheus`) directly: live figures, which
the operator does not copy into the status (they change with every request; the status records
analysis results only). From outside the cluster, port-forward Prometheus and pass its local URL.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api.resources import (
    MODEL_DEPLOYMENTS,
    PAUSED_ANNOTATION,
    RETRAIN_ANNOTATION,
    ROLLOUT_REQUEST_PREFIX,
    TRAINING_SCHEDULES,
)
from ..prometheus import InputFigures, input_figures

ACTIONS = {
    "promote": "promote the candidate to stable now (skipping the remaining steps and analysis)",
    "abort": "roll the candidate back; after a blue-green switch, switch back to the previous version",
    "retry": "roll out a rolled-back version again",
    "pause": "hold the rollout where it is",
    "resume": "continue a paused rollout (the current step's pause starts over)",
}
# Commands on a TrainingSchedule.
SCHEDULE_ACTIONS = {
    "retrain": "make a TrainingSchedule start a run now (suspend and concurrencyPolicy apply; cooldown does not)",
}


def render_status(md: dict[str, Any]) -> str:
    """A human view of a ModelDeployment's rollout: phase, weights, steps, analysis, history."""
    spec, status = md.get("spec", {}), md.get("status") or {}
    meta = md["metadata"]
    strategy = spec.get("strategy", {})
    stable, candidate = status.get("stableVersion"), status.get("candidateVersion")
    weight = status.get("canaryWeight", 0) if candidate is not None else 0
    lines = [
        f"ModelDeployment {meta['namespace']}/{meta['name']}  model={spec.get('model')}  "
        f"strategy={strategy.get('type')}  requested={spec.get('version')}  traffic={spec.get('traffic')}",
        f"  phase:     {status.get('phase', 'Pending')}" + (f" ({status['reason']})" if status.get("reason") else ""),
        f"  stable:    {'-' if stable is None else stable}  weight={100 - weight if stable is not None else 0}%",
        f"  candidate: {'-' if candidate is None else candidate}  weight={weight}%",
        f"  url:       {status.get('url') or '-'}",
    ]
    if (meta.get("annotations") or {}).get(PAUSED_ANNOTATION) == "true":
        lines.append("  paused by a user (kubectl slipway resume continues)")
    if status.get("shadowPercent") is not None and candidate is not None:  # the shadow stage
        lines.append(f"  shadow:    {status['shadowPercent']}% mirrored to version {candidate}, answers discarded")
    steps = (strategy.get("canary") or {}).get("steps", [])
    if steps and strategy.get("type") == "Canary":
        current = status.get("step") if candidate is not None else None
        lines.append("  steps:")
        for index, step in enumerate(steps):
            marker = " " if current is None else ">" if index == current else "x" if index < current else " "
            lines.append(f"    {marker} {index}: weight {step['weight']}%  pause {step.get('pause', '0s')}")
    if status.get("analysis"):
        lines.append(
            f"  analysis (failures {status.get('analysisFailures', 0)}, "
            f"inconclusive {status.get('analysisInconclusive', 0)}, at {status.get('lastAnalysisAt', '-')}):"
        )
        for result in status["analysis"]:
            value = result.get("value")
            shown = "-" if value is None else f"{value:g}"
            lines.append(
                f"    {result.get('metric'):<22} {result.get('verdict'):<12} {shown:<10} {result.get('message', '')}"
            )
    if status.get("rolledBackVersion") is not None:
        lines.append(f"  rolled back: version {status['rolledBackVersion']} (kubectl slipway retry tries it again)")
    if status.get("previousVersion") is not None:
        lines.append(f"  warm:      version {status['previousVersion']} until {status.get('scaleDownAt', '-')}")
    for cond in status.get("conditions", []):
        lines.append(f"  {cond['type']}={cond['status']} ({cond.get('reason', '')}): {cond.get('message', '')}")
    history = status.get("history", [])[-5:]
    if history:
        lines.append("  history:")
        for entry in history:
            lines.append(
                f"    {entry.get('time', '')}  v{entry['version']}  {entry['outcome']}  {entry.get('reason', '')}"
            )
    if status.get("message"):
        lines.append(f"  message:   {status['message']}")
    return "\n".join(lines)


TOP_FEATURES = 5
NO_FIGURES = "no input figures (no traffic yet, too few rows for a PSI, or a model without a training profile)"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def render_inputs(role: str, version: int, figures: InputFigures, top: int = TOP_FEATURES) -> list[str]:
    """One version's most drifting features: largest PSI first, then the most missing."""
    if not figures.by_feature:
        return [f"    {role} v{version}: {NO_FIGURES}"]

    def rank(item: tuple[str, dict[str, float]]) -> tuple[float, float, str]:
        name, fig = item
        return (-fig.get("psi", -1.0), -fig.get("missing", 0.0), name)

    ranked = sorted(figures.by_feature.items(), key=rank)
    rows = "?" if figures.rows is None else str(figures.rows)
    lines = [
        f"    {role} v{version} ({rows} rows in the window; top {min(top, len(ranked))} of {len(ranked)} features):",
        f"      {'feature':<28} {'PSI':>7} {'missing':>8} {'out of range':>13}",
    ]
    for name, fig in ranked[:top]:
        psi = fig.get("psi")
        lines.append(
            f"      {name:<28} {'-' if psi is None else f'{psi:.3f}':>7} {_share(fig.get('missing')):>8}"
            f" {_share(fig.get('outOfRange')):>13}"
        )
    return lines


Fetch = Callable[[str, str, str, int], InputFigures]


def drift_section(md: dict[str, Any], prometheus: str | None, fetch: Fetch = input_figures) -> str:
    """The input-drift lines of `status`, queried from Prometheus (one line saying why when it cannot be)."""
    spec, status = md.get("spec", {}), md.get("status") or {}
    url = prometheus or (spec.get("prometheus") or {}).get("url")
    versions = [
        (role, int(status[key]))
        for role, key in (("stable", "stableVersion"), ("candidate", "candidateVersion"))
        if status.get(key) is not None
    ]
    if not versions:
        return ""
    header = "  input drift vs the training data (PSI on the training profile's bins; each predictor's window):"
    if not url:
        return f"{header}\n    no Prometheus URL (spec.prometheus.url or --prometheus)"
    lines = [header]
    for role, version in versions:
        try:
            figures = fetch(url, md["metadata"]["namespace"], spec.get("model", ""), version)
        except Exception as error:
            first = (str(error).splitlines() or [""])[0][:160]
            lines.append(
                f"    Prometheus at {url} did not answer ({type(error).__name__}: {first}); from outside the "
                "cluster, port-forward it and pass --prometheus http://127.0.0.1:9090"
            )
            break
        lines += render_inputs(role, version, figures)
    return "\n".join(lines)


def request_id() -> str:
    """A fresh request id: when it was asked, and a random part so two asks are two requests."""
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"


def request_patch(action: str) -> dict[str, Any]:
    """The metadata patch that asks the operator for `action`."""
    if action == "pause":
        return {"metadata": {"annotations": {PAUSED_ANNOTATION: "true"}}}
    if action == "resume":
        return {"metadata": {"annotations": {PAUSED_ANNOTATION: None}}}
    if action == "retrain":
        return {"metadata": {"annotations": {RETRAIN_ANNOTATION: request_id()}}}
    return {"metadata": {"annotations": {ROLLOUT_REQUEST_PREFIX + action: request_id()}}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kubectl slipway", description=__doc__)
    parser.add_argument("-n", "--namespace", default=None, help="namespace (default: the kubeconfig's)")
    parser.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    # `-n` is accepted after the command too (kubectl's own habit): `kubectl slipway status NAME -n ml`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", default=argparse.SUPPRESS, help="namespace")
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="show a ModelDeployment's rollout", parents=[common])
    status.add_argument("name")
    status.add_argument("-w", "--watch", action="store_true", help="refresh until interrupted")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes with --watch")
    status.add_argument(
        "--prometheus", default=None, help="Prometheus URL for the input-drift figures (default: spec.prometheus.url)"
    )
    status.add_argument("--no-drift", action="store_true", help="leave out the input-drift figures (no Prometheus)")
    for action, text in (ACTIONS | SCHEDULE_ACTIONS).items():
        commands.add_parser(action, help=text, parents=[common]).add_argument("name")
    args = parser.parse_args(argv)

    config.load_kube_config(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    contexts = config.list_kube_config_contexts(config_file=args.kubeconfig)  # type: ignore[no-untyped-call]
    namespace = args.namespace or contexts[1]["context"].get("namespace", "default")
    api = client.CustomObjectsApi()
    target = TRAINING_SCHEDULES if args.command in SCHEDULE_ACTIONS else MODEL_DEPLOYMENTS

    def call(fn: Callable[..., Any], *extra: Any) -> dict[str, Any] | None:
        try:
            return cast(dict[str, Any], fn(target.group, target.version, namespace, target.plural, args.name, *extra))
        except ApiException as error:
            print(f"error: {target.kind} {namespace}/{args.name}: {error.reason}")
            return None

    if args.command == "status":
        while True:
            md = call(api.get_namespaced_custom_object)
            if md is None:
                return 1
            if args.watch:
                print("\033[2J\033[H", end="")  # clear the terminal between frames
            print(render_status(md), flush=True)
            drift = "" if args.no_drift else drift_section(md, args.prometheus)
            if drift:
                print(drift, flush=True)
            if not args.watch:
                return 0
            try:
                time.sleep(args.interval)
            except KeyboardInterrupt:
                return 0
    if call(api.patch_namespaced_custom_object, request_patch(args.command)) is None:
        return 1
    print(f"{target.kind.lower()}.{target.group}/{args.name} {args.command} requested")
    return 0
