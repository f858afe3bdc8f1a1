"""`slipway`: generate CRDs, run the operator, run the dev stack, play the demo."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..api.crds import rendered_files
from ..api.docs import DEFAULT_API_MD, write_api_md

DEFAULT_CRD_DIRS = ("crds", "helm/slipway/crds")


def write_crds(dirs: list[Path], check: bool) -> int:
    """Writes the CRDs from the typed source; with check, reports drift instead."""
    drift = []
    for folder in dirs:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in rendered_files().items():
            path = folder / name
            if check:
                if not path.exists() or path.read_text() != text:
                    drift.append(str(path))
            else:
                path.write_text(text)
    if drift:
        print("CRDs out of date with operator/slipway/api (run `slipway crds`):\n  " + "\n  ".join(drift))
        return 1
    return 0


def run_operator(liveness: str | None, namespaces: list[str]) -> int:
    import kopf

    from .. import handlers  # noqa: F401 - registers the handlers with Kopf

    level = os.environ.get("SLIPWAY_LOG_LEVEL", "INFO").upper()
    kopf.configure(debug=level == "DEBUG")
    logging.getLogger().setLevel(level)
    kopf.run(clusterwide=not namespaces, namespaces=namespaces, liveness_endpoint=liveness)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="slipway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    crds = commands.add_parser("crds", help="write crds/ and the chart's CRDs from the typed API source")
    crds.add_argument("--check", action="store_true", help="fail if the committed YAML drifts from the source")
    crds.add_argument("dirs", nargs="*", type=Path, default=[Path(d) for d in DEFAULT_CRD_DIRS])

    docs = commands.add_parser("docs", help="write docs/api.md (the API reference) from the typed API source")
    docs.add_argument("--check", action="store_true", help="fail if the committed page drifts from the source")
    docs.add_argument("path", nargs="?", type=Path, default=Path(DEFAULT_API_MD))

    op = commands.add_parser("operator", help="run the operator (as in a pod)")
    op.add_argument("--liveness", default=None, help="liveness endpoint, e.g. http://0.0.0.0:8080/healthz")
    op.add_argument("--namespace", action="append", default=[], help="watch only these namespaces")

    dev = commands.add_parser("dev", help="the one-machine dev stack")
    dev_commands = dev.add_subparsers(dest="dev_command", required=True)
    for name, text in (("up", "start the control plane and the operator"), ("down", "stop a running dev stack")):
        sub = dev_commands.add_parser(name, help=text)
        sub.add_argument("--workdir", type=Path, default=Path(".dev"), help="state, logs and kubeconfig")

    commands.add_parser("controlplane", help="build (once) and print the control-plane binaries")

    demo = commands.add_parser(
        "demo",
        help="the whole platform in a few minutes: train, serve, canary promoted, faulty version rolled back",
    )
    demo.add_argument("--workdir", type=Path, default=Path(".dev"), help="the demo runs in <workdir>/demo")
    demo.add_argument(
        "--keep",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the stack up after the summary until Ctrl-C (default: when run from a terminal)",
    )
    demo.add_argument(
        "--closed-loop",
        action="store_true",
        help="also play the closed loop (a few minutes more): drift in live traffic triggers a retraining "
        "on fresh data that rolls out by itself",
    )

    args = parser.parse_args(argv)
    if args.command == "crds":
        return write_crds(args.dirs, args.check)
    if args.command == "docs":
        return write_api_md(args.path, args.check)
    if args.command == "operator":
        return run_operator(args.liveness, args.namespace)
    if args.command == "dev":
        from ..devstack import stack

        return stack.up(args.workdir) if args.dev_command == "up" else stack.down(args.workdir)
    if args.command == "demo":
        from ..devstack import demo as demo_module
        from .plugin import render_status

        return demo_module.run(args.workdir, keep=args.keep, render=render_status, closed_loop=args.closed_loop)
    if args.command == "controlplane":
        from ..controlplane import find_assets

        print(find_assets())
        return 0
    parser.print_help(sys.stderr)
    return 2
