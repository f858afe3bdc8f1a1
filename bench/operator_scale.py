"""Operator scale: 1,000 TrainingRuns + 1,000 ModelDeployments against a real control plane.

In one run and on one control plane:
  baseline  a bare asyncio client makes the calls the operator makes for each object (create the
            parent, server-side apply the child, patch the parent's status; since issue 15 Kopf
            keeps the last handled spec in the process, not in an annotation) at the same
            concurrency;
  operator  the same parents are created at the same concurrency with the operator running; the
            time until every child exists, create->child latency, and the operator's RSS are taken.
Targets (issue 2): operator time <= 1.3x baseline; p99 create->child <= 3x a single create's p99;
peak RSS at 2,000 objects <= 1.5x idle RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from kubeapi import AsyncKube  # noqa: E402
from slipway.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus  # noqa: E402
from slipway.api.modelversion import ModelVersionSpec  # noqa: E402
from slipway.api.trainingrun import TrainingRunSpec, TrainingRunStatus  # noqa: E402
from slipway.builders.httproute import Routing  # noqa: E402
from slipway.builders.rayjob import build_rayjob  # noqa: E402
from slipway.controlplane import ControlPlane  # noqa: E402
from slipway.devstack.cluster import OperatorProcess, install_crds, kubectl  # noqa: E402
from slipway.reconcile.conditions import now_rfc3339  # noqa: E402
from slipway.reconcile.modeldeployment import Observed, plan_deployment  # noqa: E402
from slipway.reconcile.status import status_patch  # noqa: E402
from slipway.reconcile.trainingrun import training_status  # noqa: E402

SLIPWAY = ("slipway.dev", "v1alpha1")
TR_PLURAL, MD_PLURAL, MV_PLURAL = "trainingruns", "modeldeployments", "modelversions"
RAYJOB = ("ray.io", "v1", "rayjobs")
ISVC = ("serving.kserve.io", "v1beta1", "inferenceservices")
ROUTE = ("gateway.networking.k8s.io", "v1", "httproutes")
ROUTING = Routing()
CONTRACT = [d for d in yaml.safe_load_all((REPO / "tests/manifests/contract.yaml").read_text()) if d]


def parents(namespace: str, count: int) -> list[tuple[str, dict[str, Any]]]:
    """(plural, object) for `count` TrainingRuns and `count` ModelDeployments, interleaved."""
    tr, _, md = CONTRACT
    out = []
    for i in range(count):
        run = copy.deepcopy(tr)
        run["metadata"] = {"name": f"run-{i}", "namespace": namespace}
        dep = copy.deepcopy(md)
        dep["metadata"] = {"name": f"dep-{i}", "namespace": namespace}
        dep["spec"]["strategy"] = {"type": "Direct"}
        out += [(TR_PLURAL, run), (MD_PLURAL, dep)]
    return out


def owner_ref(stored: dict[str, Any]) -> list[dict[str, Any]]:
    meta = stored["metadata"]
    return [
        {
            "apiVersion": stored["apiVersion"],
            "kind": stored["kind"],
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


async def baseline(kube: AsyncKube, namespace: str, count: int, concurrency: int) -> dict[str, Any]:
    """The operator's calls, made directly: create, apply the child(ren), patch the status."""
    version = ModelVersionSpec.model_validate(CONTRACT[1]["spec"])
    gate = asyncio.Semaphore(concurrency)
    creates: list[float] = []
    children: list[float] = []

    async def chain(plural: str, obj: dict[str, Any]) -> None:
        async with gate:
            latency, stored = await kube.create(*SLIPWAY, plural, obj)
            creates.append(latency)
            name = obj["metadata"]["name"]
            if plural == TR_PLURAL:
                child = build_rayjob(name, namespace, TrainingRunSpec.model_validate(stored["spec"]), 0)
                child["metadata"]["ownerReferences"] = owner_ref(stored)
                observed = await kube.apply(*RAYJOB, child)
                status = training_status(
                    TrainingRunStatus(), child["metadata"]["name"], observed.get("status"), 1, now_rfc3339()
                )
            else:
                spec = ModelDeploymentSpec.model_validate(stored["spec"])
                plan = plan_deployment(
                    name,
                    namespace,
                    spec,
                    ModelDeploymentStatus(),
                    [version],
                    Observed({}),
                    1,
                    datetime.now(UTC),
                    ROUTING,
                )
                for child in plan.children:  # the InferenceService, then the HTTPRoute
                    child["metadata"]["ownerReferences"] = owner_ref(stored)
                    await kube.apply(*(ROUTE if child["kind"] == "HTTPRoute" else ISVC), child)
                status = plan.status
            children.append(time.perf_counter())
            await kube.patch_status(*SLIPWAY, namespace, plural, name, status_patch({}, status))

    start, cpu_before = time.perf_counter(), cpu_seconds()
    await asyncio.gather(*(chain(plural, obj) for plural, obj in parents(namespace, count)))
    cpu = {k: round(v - cpu_before.get(k, 0), 1) for k, v in cpu_seconds().items()}
    return {
        "seconds": max(children) - start,
        "all_calls_seconds": time.perf_counter() - start,
        "creates": creates,
        "cpu_seconds": cpu,
    }


async def with_operator(
    kube: AsyncKube, namespace: str, count: int, concurrency: int, operator_pid: int, census: bool = False
) -> dict[str, Any]:
    gate = asyncio.Semaphore(concurrency)
    created: dict[str, float] = {}
    seen: dict[str, float] = {}
    creates: list[float] = []
    expected = 2 * count
    done = asyncio.Event()
    process = psutil.Process(operator_pid)
    peak_rss = 0

    async def observe(group: str, version: str, plural: str, owner_label: str | None) -> None:
        async for event in kube.watch(group, version, namespace, plural):
            if event["type"] != "ADDED":
                continue
            meta = event["object"]["metadata"]
            parent = meta["ownerReferences"][0]["name"] if meta.get("ownerReferences") else meta["name"]
            seen.setdefault(parent, time.perf_counter())
            if len(seen) >= expected:
                done.set()

    async def sample_rss() -> None:
        nonlocal peak_rss
        while True:
            peak_rss = max(peak_rss, process.memory_info().rss)
            await asyncio.sleep(0.05)

    async def create(plural: str, obj: dict[str, Any]) -> None:
        async with gate:
            created[obj["metadata"]["name"]] = time.perf_counter()
            latency, _ = await kube.create(*SLIPWAY, plural, obj)
            creates.append(latency)

    watchers = [asyncio.create_task(observe(*RAYJOB, None)), asyncio.create_task(observe(*ISVC, None))]
    sampler = asyncio.create_task(sample_rss())
    await asyncio.sleep(0.5)  # let the watches open before the first create
    if census:
        watchers.append(asyncio.create_task(take_census(operator_pid)))
    start, cpu_before = time.perf_counter(), cpu_seconds(operator_pid)
    await asyncio.gather(*(create(plural, obj) for plural, obj in parents(namespace, count)))
    creates_seconds = time.perf_counter() - start
    await asyncio.wait_for(done.wait(), timeout=1800)
    seconds = max(seen.values()) - start
    cpu = {k: round(v - cpu_before.get(k, 0), 1) for k, v in cpu_seconds(operator_pid).items()}
    await asyncio.sleep(5)  # keep sampling RSS while the operator's trailing status writes land
    for task in (*watchers, sampler):
        task.cancel()
    latencies = [seen[name] - created[name] for name in created]
    return {
        "seconds": seconds,
        "latencies": latencies,
        "creates": creates,
        "peak_rss": peak_rss,
        "creates_seconds": creates_seconds,
        "cpu_seconds": cpu,
    }


async def take_census(operator_pid: int) -> None:
    """bench/census_operator.py: what holds the operator's memory, every 3 s."""
    while True:
        await asyncio.sleep(3)
        os.kill(operator_pid, signal.SIGUSR1)


def cpu_seconds(operator_pid: int | None = None) -> dict[str, float]:
    """CPU time so far of each process sharing the 2 cores: who is busy while the children lag."""
    named = {"bench": os.getpid(), **({"operator": operator_pid} if operator_pid else {})}
    for proc in psutil.Process().children(recursive=True):
        if proc.name() in ("kube-apiserver", "etcd"):
            named[proc.name()] = proc.pid
    out = {}
    for name, pid in named.items():
        times = psutil.Process(pid).cpu_times()
        out[name] = times.user + times.system
    return out


async def request_counts(kube: AsyncKube) -> dict[str, float]:
    """The apiserver's own count of requests by verb and resource (only the kinds we touch)."""
    text = await kube.session.get(kube.base + "/metrics")
    counts: dict[str, float] = {}
    for line in (await text.text()).splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("resource") in (TR_PLURAL, MD_PLURAL, "rayjobs", "inferenceservices", "httproutes", "events"):
            key = f"{labels['verb']} {labels['resource']}" + (
                f"/{labels['subresource']}" if labels.get("subresource") else ""
            )
            counts[key] = counts.get(key, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def per_parent(before: dict[str, float], after: dict[str, float], parents: int) -> dict[str, float]:
    return {k: round((after[k] - before.get(k, 0)) / parents, 2) for k in sorted(after) if after[k] - before.get(k, 0)}


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000, method="inclusive")[int(q * 1000) - 1]


async def wait_idle(process: psutil.Process, kube: AsyncKube, namespace: str) -> int:
    """Warms the operator with one object of each kind, then reads its idle RSS."""
    tr, _, md = CONTRACT
    for plural, obj in ((TR_PLURAL, tr), (MD_PLURAL, md)):
        obj = copy.deepcopy(obj)
        obj["metadata"] = {"name": "warmup", "namespace": namespace}
        await kube.create(*SLIPWAY, plural, obj)
    deadline = time.monotonic() + 60
    for group, version, plural in (RAYJOB, ISVC):
        while not (await kube.request("GET", kube.path(group, version, namespace, plural)))["items"]:
            if time.monotonic() > deadline:
                raise TimeoutError("the operator did not make the warm-up children")
            await asyncio.sleep(0.1)
    samples = []
    for _ in range(30):
        samples.append(process.memory_info().rss)
        await asyncio.sleep(0.1)
    return max(samples)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="slipway-bench-"))
    with ControlPlane(workdir / "plane") as plane:
        install_crds(plane.assets.kubectl, plane.kubeconfig, workdir)
        for ns in ("baseline", "floor", "bench", "warmup"):
            kubectl(plane.assets.kubectl, plane.kubeconfig, "create", "namespace", ns)
            mv = copy.deepcopy(CONTRACT[1])
            mv["metadata"]["namespace"] = ns
            kube_mv = AsyncKube(plane.kubeconfig)
            await kube_mv.create(*SLIPWAY, MV_PLURAL, mv)
            await kube_mv.close()
        kube = AsyncKube(plane.kubeconfig, limit=args.concurrency * 2)
        try:
            print(
                f"baseline: bare asyncio client, {2 * args.count} parents, concurrency {args.concurrency}", flush=True
            )
            counts = await request_counts(kube)
            base = await baseline(kube, "baseline", args.count, args.concurrency)
            base_calls = per_parent(counts, await request_counts(kube), 2 * args.count)
            await clear(kube, "baseline")
            floor = None
            if args.floor:
                print(f"floor: a bare Kopf operator (bench/kopf_floor.py, {args.floor} handlers)", flush=True)
                env = {"SLIPWAY_FLOOR_HANDLERS": args.floor, "SLIPWAY_STANDALONE": "1"}  # no peering to share
                env |= dict(pair.split("=", 1) for pair in args.floor_env)
                argv = [sys.executable, str(REPO / "bench" / "kopf_floor.py")]
                floor = await operator_phase(
                    kube, OperatorProcess(plane.kubeconfig, workdir / "floor.log", env, argv=argv), "floor", args
                )
                await clear(kube, "floor")
                await clear(kube, "warmup")
            run = None
            if not args.floor_only:
                print("operator: slipway operator", flush=True)
                env = dict(pair.split("=", 1) for pair in args.operator_env)
                operator = OperatorProcess(plane.kubeconfig, workdir / "operator.log", env)
                if args.census:
                    operator.argv = [sys.executable, str(REPO / "bench" / "census_operator.py")]
                    operator.env["SLIPWAY_CENSUS_OUT"] = str(args.census.resolve())
                run = await operator_phase(kube, operator, "bench", args)
        finally:
            await kube.close()
    single_p99 = quantile(base["creates"], 0.99)
    result = {
        "count": 2 * args.count,
        "concurrency": args.concurrency,
        "baseline_seconds": round(base["seconds"], 2),
        "baseline_all_calls_seconds": round(base["all_calls_seconds"], 2),
        "single_create_p99_ms": round(single_p99 * 1000, 1),
        "baseline_calls_per_parent": base_calls,
        "baseline_cpu_seconds": base["cpu_seconds"],
        # The machine's load (1-minute average) as the run ended: on 2 cores shared with the API
        # server and etcd, anything else running moves every figure.
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    if run:
        result |= {"operator_env": args.operator_env, **figures("operator", run, base["seconds"], single_p99)}
    if floor:
        result |= {"floor_handlers": args.floor, "floor_env": args.floor_env}
        result |= figures("floor", floor, base["seconds"], single_p99)
    if run and floor:
        result["operator_over_floor"] = round(run["seconds"] / floor["seconds"], 2)
    return result


def figures(phase: str, run: dict[str, Any], baseline_seconds: float, single_p99: float) -> dict[str, Any]:
    latencies = run["latencies"]
    out = {
        f"{phase}_seconds": round(run["seconds"], 2),
        "time_ratio": round(run["seconds"] / baseline_seconds, 2),
        "create_to_child_p50_ms": round(quantile(latencies, 0.50) * 1000, 1),
        "create_to_child_p99_ms": round(quantile(latencies, 0.99) * 1000, 1),
        "p99_ratio": round(quantile(latencies, 0.99) / single_p99, 2),
        "idle_rss_mib": round(run["idle_rss"] / 2**20, 1),
        "peak_rss_mib": round(run["peak_rss"] / 2**20, 1),
        "rss_ratio": round(run["peak_rss"] / run["idle_rss"], 2),
        f"{phase}_calls_per_parent": run["calls"],
        # The creates (one call each, 32 in flight) end long before the children: the rest of the
        # time the operator works off a queue. And the CPU each process took meanwhile.
        "creates_seconds": round(run["creates_seconds"], 2),
        "cpu_seconds": run["cpu_seconds"],
    }
    if run.get("profile"):
        out["profile"] = run["profile"]
    # The operator's own figures keep their historical names; the floor's are prefixed.
    return {(k if phase == "operator" or k.startswith(phase) else f"{phase}_{k}"): v for k, v in out.items()}


async def clear(kube: AsyncKube, namespace: str) -> None:
    """Deletes a phase's parents and children, so the next operator does not start on them."""
    for group, version, plural in ((*SLIPWAY, TR_PLURAL), (*SLIPWAY, MD_PLURAL), RAYJOB, ISVC, ROUTE):
        await kube.delete_all(group, version, namespace, plural)


async def operator_phase(
    kube: AsyncKube, operator: OperatorProcess, namespace: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Starts `operator`, reads its idle RSS, creates the parents, and stops it."""
    operator.start()
    assert operator.pid is not None
    try:
        idle_rss = await wait_idle(psutil.Process(operator.pid), kube, "warmup")
        print(f"  idle RSS {idle_rss / 2**20:.0f} MiB; creating {2 * args.count} parents", flush=True)
        counts = await request_counts(kube)
        profile_to = args.profile.with_suffix(f".{namespace}{args.profile.suffix}") if args.profile else None
        profiler = start_profile(operator.pid, profile_to) if profile_to else None
        census = namespace == "bench" and args.census is not None
        run = await with_operator(kube, namespace, args.count, args.concurrency, operator.pid, census)
        if profiler and profile_to:
            run["profile"] = stop_profile(profiler, profile_to)
        run["calls"] = per_parent(counts, await request_counts(kube), 2 * args.count)
        run["idle_rss"] = idle_rss
        return run
    finally:
        operator.stop()


def start_profile(pid: int, output: Path) -> subprocess.Popen[bytes]:
    """py-spy samples the operator while the parents are created: only the thread holding the GIL,
    so the samples are the operator's Python CPU (a thread blocked in an SSL read is not counted)."""
    argv = ["py-spy", "record", "--pid", str(pid), "--rate", "50", "--gil", "--format", "raw", "--output", str(output)]
    return subprocess.Popen([str(Path(sys.executable).parent / argv[0]), *argv[1:]], stdout=subprocess.DEVNULL)


def stop_profile(profiler: subprocess.Popen[bytes], output: Path) -> dict[str, Any]:
    profiler.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
    profiler.wait(timeout=60)
    return summarize_profile(output.read_text())


# Where the operator's CPU goes, by the outermost frame of these packages on a sample's stack
# (innermost first): our code, then the libraries it spends time in.
PROFILE_GROUPS = (
    ("json / yaml", ("json/", "yaml/")),
    ("pydantic", ("pydantic",)),
    ("kubernetes client + urllib3", ("kubernetes/", "urllib3/")),
    ("ssl / sockets", ("ssl.py", "socket.py", "selectors.py")),
    ("kopf", ("kopf/",)),
    ("aiohttp", ("aiohttp/",)),
    ("asyncio", ("asyncio/",)),
    ("slipway", ("slipway/",)),
)


def summarize_profile(collapsed: str) -> dict[str, Any]:
    """Shares of the samples by the first group found walking each stack from its leaf."""
    totals: dict[str, int] = {}
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = stack.split(";")[::-1]  # leaf first
        group = next(
            (name for frame in frames for name, marks in PROFILE_GROUPS if any(m in frame for m in marks)), "other"
        )
        totals[group] = totals.get(group, 0) + int(count)
        samples += int(count)
    shares = {k: round(v / samples, 3) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])} if samples else {}
    return {"samples": samples, "share_by_leaf_group": shares}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=1000, help="TrainingRuns, and as many ModelDeployments")
    parser.add_argument("--concurrency", type=int, default=32, help="parents in flight at once")
    parser.add_argument("--profile", type=Path, help="py-spy the operator while it works; collapsed stacks here")
    parser.add_argument(
        "--floor",
        choices=("create", "event", "async"),
        help="also run bench/kopf_floor.py, a bare Kopf operator with these handlers, as a yardstick",
    )
    parser.add_argument("--floor-env", action="append", default=[], help="KEY=VALUE for the floor operator")
    parser.add_argument("--floor-only", action="store_true", help="the baseline and the floor, not slipway")
    parser.add_argument("--operator-env", action="append", default=[], help="KEY=VALUE for the slipway operator")
    parser.add_argument(
        "--census", type=Path, help="run slipway as bench/census_operator.py; what holds its memory, every 3 s, here"
    )
    args = parser.parse_args()
    if args.floor_only and not args.floor:
        parser.error("--floor-only needs --floor")
    result = asyncio.run(main_async(args))
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "operator_scale.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    phase = "floor_" if args.floor_only else ""
    targets = {
        "operator time <= 1.3x baseline": result[f"{phase}time_ratio"] <= 1.3,
        "p99 create->child <= 3x single create p99": result[f"{phase}p99_ratio"] <= 3,
        "peak RSS <= 1.5x idle": result[f"{phase}rss_ratio"] <= 1.5,
    }
    for name, met in targets.items():
        print(f"{'MET ' if met else 'MISS'} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
