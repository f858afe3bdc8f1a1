"""Serving overhead: the predictor against a raw TorchScript forward and a stock KServe model.

In one run, on one generated data set (Feast: generated, applied, materialized into SQLite) and one
example model (the pipeline's ChurnMLP, default hidden units 64,32, standardized on the data):
  raw          in this process: the TorchScript forward of one row (c=1) or a batch of 16 rows
               (c=16: the best any server could do with 16 requests); "with Feast": the same online
               lookup the predictor makes (`get_online_features` of churn_v1 for the same keys),
               then the forward;
  stock        a minimal per-request `kserve.Model` (JSON list in, forward, list out; with Feast a
               `get_online_features` call per request) under KServe's ModelServer with its
               defaults (per-request log lines on);
  stock-quiet  the same with KServe's per-request log lines off (what the predictor does), to
               show how much of the difference is logging;
  predictor    `python -m pipelines.predictor` (dynamic batching, direct JSON path, input monitoring
               against the model's training profile);
  predictor-nomonitor  the same with SLIPWAY_INPUT_MONITOR=0: what the input monitor costs;
  predictor-kserve-routes  the predictor with `--direct=false` (through KServe's FastAPI routes).
Each server is measured without and (stock, predictor) with Feast enrichment, at concurrency 1
and 16, with an aiohttp client in this process: one instance per request (a row of 9 feature
values, or {"customer_id": k}), a warm-up first. The servers run side by side and are measured
round-robin for `--rounds` rounds (the starting one rotates), so slow drifts of the machine hit all
of them; figures are the median over the rounds. The server process's CPU time per request
(psutil, all its threads) is reported too: on a 2-core machine shared with other work it is a
steadier measure of a server's cost than wall-clock throughput.
Targets (issue 4): predictor p50 at c=1 <= raw forward p50 + 1 ms; predictor throughput at c=16 >=
2x stock; Feast enrichment adds (predictor p50 with - without, c=1) <= 3x a raw lookup of the same
keys (p50). Issue 13: input monitoring adds <= 0.1 ms to the p50 at c=1 and costs <= 5% of the
throughput at c=16 (predictor against predictor-nomonitor, per round and as medians).
`--only NAME,...` measures only those servers (and no raw figures), e.g.
`--only predictor,predictor-nomonitor,predictor-again --rounds 9` for the monitoring comparison
alone; predictor-again (a second predictor identical to the first, only with --only) shows what
the machine's noise alone does to the same comparison. The input monitor's own cost per call is
also timed in this process (`input_monitor_us`).

`--engines` (issue 7) measures the engine as a dimension instead, at concurrency 16 and 64, on a
model of `--hidden` widths (the pipeline's 64,32 by default; e.g. 512x128 for one whose forward pass
outweighs the request handling): the predictor with SLIPWAY_ENGINE=kserve (one process; also with
SLIPWAY_TORCH_THREADS=2), the stock model under KServe with 1 and 2 worker processes (KServe's
own `--workers`, which the predictor refuses), and the predictor with SLIPWAY_ENGINE=ray-serve and
2 replicas. Server CPU counts every process of a server (KServe's workers, Ray's replicas and
services). Target: ray-serve throughput at c=64 >= 1.6x kserve's, with p99 <= 2x kserve's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import kserve  # noqa: E402  (module level: `StockModel` must be importable in KServe's worker processes)

MODEL = "churn"
SERVICE, ENTITY_KEY = "churn_v1", "customer_id"
DATA_SEED = 7
CONCURRENCY = (1, 16)


# --- the stock server (this file run with `stock ...`) ----------------------------------------


class StockModel(kserve.Model):  # type: ignore[misc]
    """A minimal per-request kserve.Model: what a KServe user writes first.

    Module-level and picklable (the TorchScript and the Feast store are reopened after unpickling):
    KServe's `--workers N` pickles the model into each spawned worker process.
    """

    def __init__(self, model_dir: str, feast_data: str | None) -> None:
        super().__init__(MODEL)
        self.model_dir, self.feast_data = model_dir, feast_data
        self._open()
        self.ready = True

    def _open(self) -> None:
        import torch

        manifest = json.loads((Path(self.model_dir) / "manifest.json").read_text())
        self.features = manifest["features"]
        self.net = torch.jit.load(str(Path(self.model_dir) / manifest["modelFile"]))  # type: ignore[no-untyped-call]
        self.store: Any = None
        if self.feast_data:
            from feature_repo import store as fs

            self.store = fs.open_store(fs.REPO_DIR, self.feast_data)
            self.service = fs.feature_service(self.store, SERVICE)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("net", "store", "service")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def predict(self, payload: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
        import torch

        instances = payload["instances"]
        if self.store is not None:
            rows = [{ENTITY_KEY: inst[ENTITY_KEY]} for inst in instances]
            found = self.store.get_online_features(features=self.service, entity_rows=rows).to_dict()
            instances = [
                [float("nan") if found[f][i] is None else found[f][i] for f in self.features] for i in range(len(rows))
            ]
        with torch.inference_mode():
            out = self.net(torch.tensor(instances, dtype=torch.float32))
        return {"predictions": out.tolist()}


def quiet_log_config(path: Path) -> Path:
    """KServe's logging configuration without the per-request lines, as a file: KServe's worker
    processes (`--workers`) configure their logging from `--log_config_file`, not from the parent."""
    from kserve.logging import KSERVE_LOG_CONFIG

    config = json.loads(json.dumps(KSERVE_LOG_CONFIG))
    for name in ("uvicorn.access", "kserve.trace"):
        config["loggers"][name]["level"] = "WARNING"
    path.write_text(json.dumps(config))
    return path


def serve_stock(argv: list[str]) -> None:
    """The stock model under KServe's ModelServer, with `--stock-workers` uvicorn worker processes."""
    p = argparse.ArgumentParser()
    p.add_argument("--stock-port", type=int, required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--feast-data")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--stock-workers", type=int, default=1)
    args, _ = p.parse_known_args(argv)  # KServe reads its own (--log_config_file) from sys.argv
    import logging

    server = kserve.ModelServer(
        http_port=args.stock_port,
        enable_grpc=False,
        enable_latency_logging=not args.quiet,
        workers=args.stock_workers,
    )
    if args.quiet:
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([StockModel(args.model_dir, args.feast_data)])


# --- measuring -----------------------------------------------------------------------------------


@dataclass
class Figures:
    """One measurement: latencies of every request (seconds) and the wall time of the whole run."""

    latencies: list[float]
    wall: float
    instances: int
    server_cpu: float | None = None  # CPU seconds the server process used during the run

    def summary(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        out = {
            "p50_ms": 1000 * quantile(ordered, 0.50),
            "p99_ms": 1000 * quantile(ordered, 0.99),
            "throughput_per_s": self.instances / self.wall,
        }
        if self.server_cpu is not None:
            out["server_cpu_ms_per_request"] = 1000 * self.server_cpu / len(self.latencies)
        return out


def quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def http_load(
    url: str, bodies: list[bytes], concurrency: int, requests: int, warmup: int, cpu: Callable[[], float]
) -> Figures:
    """`requests` POSTs from `concurrency` workers after a warm-up; `cpu()` reads the server's CPU time."""
    import aiohttp

    headers = {"content-type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker(start: int, count: int, latencies: list[float]) -> None:
            for i in range(start, start + count):
                began = time.perf_counter()
                async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as response:
                    body = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{url}: {response.status} {body[:200]!r}")
                latencies.append(time.perf_counter() - began)

        async def run(total: int) -> tuple[list[float], float]:
            latencies: list[float] = []
            per = total // concurrency
            began = time.perf_counter()
            await asyncio.gather(*(worker(k * per, per, latencies) for k in range(concurrency)))
            return latencies, time.perf_counter() - began

        await run(max(warmup, concurrency))
        cpu_before = cpu()
        latencies, wall = await run(requests)
        return Figures(latencies, wall, len(latencies), cpu() - cpu_before)


def timed_calls(call: Callable[[int], object], requests: int, warmup: int, per_call: int) -> Figures:
    for i in range(warmup):
        call(i)
    latencies = []
    began = time.perf_counter()
    for i in range(requests):
        start = time.perf_counter()
        call(i)
        latencies.append(time.perf_counter() - start)
    return Figures(latencies, time.perf_counter() - began, requests * per_call)


def monitor_cost(run_dir: Path, rows: Any) -> dict[str, float]:
    """The input monitor's own cost in this process, on the served model's profile: amortized us per
    `observe` call (counting included) at a few batch sizes, and us per scrape (`figures`)."""
    import numpy as np
    from pipelines.predictor import artifact
    from pipelines.predictor.monitor import InputMonitor, Reference

    manifest = artifact.read_manifest(str(run_dir))
    monitor = InputMonitor(Reference(manifest.features, manifest.profile))
    out: dict[str, float] = {}
    for n in (1, 16, 64):
        batches = [np.ascontiguousarray(np.resize(rows[i:], (n, rows.shape[1]))) for i in range(64)]
        calls = 20000 if n == 1 else 4000
        began = time.perf_counter()
        for i in range(calls):
            monitor.observe(batches[i % 64])
        monitor.window()  # what is still kept uncounted
        out[f"observe, batch of {n}, us per call"] = round((time.perf_counter() - began) / calls * 1e6, 2)
    began = time.perf_counter()
    for _ in range(200):
        monitor.figures()
    out["scrape (figures), us"] = round((time.perf_counter() - began) / 200 * 1e6, 1)
    return out


def forward_threads(model: Any, rows: Any) -> dict[str, dict[str, float]]:
    """Mean forward time (us) at a few batch sizes with 1 and 2 torch threads."""
    import numpy as np
    import torch

    out: dict[str, dict[str, float]] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out[f"{threads} thread{'s' if threads > 1 else ''}"] = figures = {}
        for n in (1, 16, 64, 1024):
            x = torch.from_numpy(np.ascontiguousarray(np.resize(rows, (n, rows.shape[1]))))
            calls = max(50, 20000 // n)
            with torch.inference_mode():
                for _ in range(50):
                    model(x)
                began = time.perf_counter()
                for _ in range(calls):
                    model(x)
            figures[str(n)] = round((time.perf_counter() - began) / calls * 1e6, 1)
    return out


# --- set-up --------------------------------------------------------------------------------------


def make_data(workdir: Path, customers: int) -> tuple[Path, list[int], Any]:
    """Generated data in a fresh Feast data dir, applied and materialized; (dir, keys, feature rows)."""
    import pandas as pd
    from feature_repo import generate as gen
    from feature_repo import store as fs

    data = workdir / "feast"
    gen.generate(data, customers, DATA_SEED)
    store = fs.apply_repo(fs.REPO_DIR, data)
    end = gen.DEFAULT_START + timedelta(days=gen.DEFAULT_DAYS + 1)
    fs.materialize_bounded(store, gen.DEFAULT_START, end, timedelta(days=30))
    keys = sorted(int(k) for k in pd.read_parquet(data / f"{gen.LABELS}.parquet")[ENTITY_KEY].unique())
    online = fs.online_features(store, keys[:512])
    return data, keys, online[fs.feature_names(store)].to_numpy(dtype="float32")


def make_model(workdir: Path, rows: Any, features: list[str], hidden: tuple[int, ...] = (64, 32)) -> Path:
    """The example model: the pipeline's ChurnMLP (default widths 64, 32), standardized on the data."""
    import pandas as pd
    import torch
    from pipelines.churn import model as churn
    from pipelines.churn import validation
    from pipelines.predictor import artifact

    from slipway.api.artifacts import Manifest

    mean, std = churn.standardization(rows)
    torch.manual_seed(0)
    net = churn.ChurnMLP(len(features), hidden=hidden, mean=mean, std=std).eval()
    run_dir = workdir / "runs" / "churn-bench"
    profile = validation.profile(pd.DataFrame(rows, columns=features), features)  # what training writes
    manifest = Manifest(metrics={}, features=features, profile=profile)
    artifact.write(str(run_dir), churn.torchscript_bytes(net), manifest)
    return run_dir


@dataclass
class Server:
    name: str
    cmd: list[str]
    env: dict[str, str]
    url: str
    log: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                self.cmd, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **self.env}, stdout=out, stderr=out
            )

    def wait_ready(self, timeout: float = 120) -> None:
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models/{MODEL}", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout}s; see {self.log}")

    def cpu_seconds(self) -> float:
        """User + system CPU time so far of the server process (all its threads) and of the processes it
        started that are still running (KServe's workers, Ray's replicas and services)."""
        import psutil  # type: ignore[import-untyped]

        assert self.process is not None
        root = psutil.Process(self.process.pid)
        total = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def running(started: dict[str, Server]) -> Iterator[None]:
    """Start the servers one at a time (start-up is CPU-bound on 2 cores); stop them all after."""
    try:
        for server in started.values():
            server.start()
            server.wait_ready()
        yield
    finally:
        for server in started.values():
            server.stop()


@contextmanager
def servers(workdir: Path, run_dir: Path, feast: Path, only: set[str] | None = None) -> Iterator[dict[str, Server]]:
    from slipway.controlplane.server import free_port

    def stock(name: str, *extra: str) -> Server:
        port = free_port()
        cmd = [sys.executable, __file__, "stock", f"--stock-port={port}", f"--model-dir={run_dir}", *extra]
        return Server(name, cmd, {}, f"http://127.0.0.1:{port}", workdir / f"{name}.log")

    def ours(name: str, enrich: bool, *extra: str, monitor: bool = True) -> Server:
        port = free_port()
        env = {"SLIPWAY_MODEL_DIR": str(run_dir), "SLIPWAY_MODEL_VERSION": "1", "SLIPWAY_FEAST_DATA": str(feast)}
        if not monitor:
            env["SLIPWAY_INPUT_MONITOR"] = "0"
        if enrich:
            env.update(SLIPWAY_FEATURE_SERVICE=SERVICE, SLIPWAY_ENTITY_KEY=ENTITY_KEY)
        cmd = [sys.executable, "-m", "pipelines.predictor", f"--model_name={MODEL}", f"--http_port={port}", *extra]
        return Server(name, cmd, env, f"http://127.0.0.1:{port}", workdir / f"{name}.log")

    started = {
        s.name: s
        for s in (
            stock("stock"),
            stock("stock-quiet", "--quiet"),
            stock("stock+feast", f"--feast-data={feast}"),
            ours("predictor", False),
            ours("predictor-nomonitor", False, monitor=False),
            ours("predictor-again", False),  # only with --only: a second identical predictor, the noise floor
            ours("predictor-kserve-routes", False, "--direct=false"),
            ours("predictor+feast", True),
        )
        if (s.name in only if only is not None else s.name not in OPTIONAL)
    }
    with running(started):
        yield started


OPTIONAL = {"predictor-again"}

# --- engines (issue 7): kserve in one process, KServe's own 2 workers, ray-serve with 2 replicas ---

ENGINE_CONCURRENCY = (16, 64)
KSERVE, RAY_SERVE = "kserve", "ray-serve x2 replicas"


@contextmanager
def engine_servers(workdir: Path, run_dir: Path) -> Iterator[dict[str, Server]]:
    """The predictor with each engine, and the stock model with 1 and 2 KServe worker processes."""
    from slipway.controlplane.server import free_port

    quiet = quiet_log_config(workdir / "quiet-logging.json")

    def stock(name: str, workers: int) -> Server:
        port = free_port()
        cmd = [
            sys.executable,
            __file__,
            "stock",
            f"--stock-port={port}",
            f"--model-dir={run_dir}",
            "--quiet",
            f"--stock-workers={workers}",
            f"--log_config_file={quiet}",
        ]
        return Server(name, cmd, {}, f"http://127.0.0.1:{port}", workdir / f"{name.replace(' ', '_')}.log")

    def predictor(name: str, **extra: str) -> Server:
        port = free_port()
        env = {"SLIPWAY_MODEL_DIR": str(run_dir), "SLIPWAY_MODEL_VERSION": "1", **extra}
        cmd = [sys.executable, "-m", "pipelines.predictor", f"--model_name={MODEL}", f"--http_port={port}"]
        return Server(name, cmd, env, f"http://127.0.0.1:{port}", workdir / f"{name.replace(' ', '_')}.log")

    started = {
        s.name: s
        for s in (
            predictor(KSERVE),
            predictor("kserve torch-threads=2", SLIPWAY_TORCH_THREADS="2"),
            stock("stock x1 worker", 1),
            stock("stock x2 workers", 2),
            predictor(RAY_SERVE, SLIPWAY_ENGINE="ray-serve", SLIPWAY_RAY_REPLICAS="2"),
        )
    }
    with running(started):
        yield started


def forward_cost(model: Any, rows: Any) -> dict[str, float]:
    """Mean forward time (ms, 1 torch thread) of one row and of a batch of 64: how heavy the model is."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    out = {}
    for n in (1, 64):
        x = torch.from_numpy(np.ascontiguousarray(np.resize(rows, (n, rows.shape[1]))))
        with torch.inference_mode():
            for _ in range(5):
                model(x)
            calls, began = 0, time.perf_counter()
            while time.perf_counter() - began < 1.0:
                model(x)
                calls += 1
        out[f"{n} row{'s' if n > 1 else ''}"] = round((time.perf_counter() - began) / calls * 1000, 4)
    return out


def handle_calls(concurrency: tuple[int, ...] = (1, 16), seconds: float = 3.0) -> dict[str, dict[str, float]]:
    """What one Ray Serve handle call costs, whatever the model: calls/s and p50 of a deployment that
    returns its argument (a 1x9 float32 array), over Ray's actor calls and over gRPC, with and without
    `@serve.batch` (2 ms wait), from this process to 2 replicas in a private Ray set up as the
    predictor's is. Why the ray-serve front batches requests instead of calling per request."""
    import numpy as np

    os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")  # as the predictor: never a second Ray after shutdown
    import ray
    from pipelines.predictor import rayserve
    from pipelines.predictor.settings import RaySettings
    from ray import serve

    class Echo:
        async def plain(self, x: Any) -> Any:
            return x

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
        async def batched(self, xs: list[Any]) -> list[Any]:
            return xs

    temp = tempfile.mkdtemp(prefix="slipway-ray-")
    os.environ.update(rayserve.RAY_PORT_VARIABLES)
    out: dict[str, dict[str, float]] = {}
    try:
        with rayserve._private_ray_processes():
            ray.init(**rayserve.init_options(RaySettings(replicas=2), temp, 0) | {"log_to_driver": False})
        serve.start(proxy_location="Disabled")
        deployment: Any = serve.deployment(
            num_replicas=2, max_ongoing_requests=64, logging_config={"enable_access_log": False}
        )
        actor = serve.run(deployment(Echo).bind(), name="echo", route_prefix=None)
        grpc = actor.options(_by_reference=False, request_serialization="pickle", response_serialization="pickle")
        x = np.ones((1, 9), np.float32)

        async def measure(handle: Any, method: str, c: int) -> dict[str, float]:
            call = getattr(handle, method)
            latencies: list[float] = []
            stop = time.perf_counter() + seconds

            async def worker() -> None:
                while time.perf_counter() < stop:
                    began = time.perf_counter()
                    await call.remote(x)
                    latencies.append(time.perf_counter() - began)

            for _ in range(20):
                await call.remote(x)
            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(c)))
            wall = time.perf_counter() - began
            ordered = sorted(latencies)
            return {"calls_per_s": round(len(ordered) / wall, 1), "p50_ms": round(1000 * quantile(ordered, 0.5), 3)}

        for transport, handle in (("actor", actor), ("grpc", grpc)):
            for method in ("plain", "batched"):
                for c in concurrency:
                    out[f"{transport} {method} c={c}"] = asyncio.run(measure(handle, method, c))
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    return out


def hidden_widths(text: str) -> tuple[int, ...]:
    """`--hidden`: widths separated by commas ("1024,1024"), or WIDTHxDEPTH ("512x128")."""
    if "x" in text:
        width, depth = text.split("x")
        return (int(width),) * int(depth)
    return tuple(int(h) for h in text.split(","))


def engines_main(args: argparse.Namespace) -> int:
    """`--engines`: throughput and latency at concurrency 16 and 64 by engine (see bench/README.md)."""
    import orjson
    import torch

    started_at = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="slipway-engines-"))
    began = time.monotonic()
    hidden = hidden_widths(args.hidden)
    load: list[dict[str, Any]] = []

    def note_load(when: str) -> None:
        load.append({"when": when, "load_average": [round(x, 2) for x in os.getloadavg()]})

    try:
        from feature_repo import store as fs

        note_load("start")
        feast, _, rows = make_data(workdir, args.customers)
        features = fs.feature_names(fs.open_store(fs.REPO_DIR, feast))
        run_dir = make_model(workdir, rows, features, hidden)
        cost = forward_cost(torch.jit.load(str(run_dir / "model.pt")), rows)  # type: ignore[no-untyped-call]
        print(f"model: ChurnMLP hidden={args.hidden}; forward ms (1 thread): {cost}; {workdir}")
        calls = handle_calls() if not args.no_handle_calls else {}
        for name, call in calls.items():
            print(f"Ray Serve handle, {name}: {call['calls_per_s']:.0f} calls/s, p50 {call['p50_ms']:.2f} ms")
        bodies = [orjson.dumps({"instances": [[float(v) for v in row]]}) for row in rows[:256]]
        results: dict[str, list[dict[str, float]]] = {}
        with engine_servers(workdir, run_dir) as running:
            print(f"servers up after {time.monotonic() - began:.1f}s")
            names = list(running)
            for round_index in range(args.rounds):
                note_load(f"round {round_index + 1}")
                order = names[round_index % len(names) :] + names[: round_index % len(names)]
                for name in order:
                    server = running[name]
                    path = f"{server.url}/v1/models/{MODEL}:predict"
                    for c in ENGINE_CONCURRENCY:
                        n = args.requests
                        figures = asyncio.run(http_load(path, bodies, c, n, max(2 * c, n // 10), server.cpu_seconds))
                        results.setdefault(f"{name} c={c}", []).append(figures.summary())
                print(f"round {round_index + 1}/{args.rounds} done at {time.monotonic() - began:.1f}s, load {load[-1]}")
        note_load("end")
        table = {name: median_of(rounds) for name, rounds in results.items()}
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    def ratio(key: str, c: int, other: str = KSERVE) -> float:
        return table[f"{RAY_SERVE} c={c}"][key] / table[f"{other} c={c}"][key]

    per_round = [
        round(ray["throughput_per_s"] / ks["throughput_per_s"], 2)
        for ray, ks in zip(results[f"{RAY_SERVE} c=64"], results[f"{KSERVE} c=64"], strict=True)
    ]
    throughput, p99 = ratio("throughput_per_s", 64), ratio("p99_ms", 64)
    targets = {
        f"ray-serve throughput at c=64 >= 1.6x kserve ({throughput:.2f}x; per round {per_round})": throughput >= 1.6,
        f"ray-serve p99 at c=64 <= 2x kserve's ({p99:.2f}x)": p99 <= 2,
    }
    print()
    print(f"{'configuration':<36} {'p50 ms':>9} {'p99 ms':>9} {'instances/s':>12} {'server CPU ms/req':>18}")
    for name, row in table.items():
        print(
            f"{name:<36} {row['p50_ms']:>9.3f} {row['p99_ms']:>9.3f} {row['throughput_per_s']:>12.0f}"
            f" {row['server_cpu_ms_per_request']:>18.3f}"
        )
    print()
    for c in ENGINE_CONCURRENCY:
        for other in (n for n in names if n != KSERVE):
            base = table[f"{KSERVE} c={c}"]["throughput_per_s"]
            print(f"c={c}: {other} / kserve throughput {table[f'{other} c={c}']['throughput_per_s'] / base:.2f}x")
    print(f"load average: {[entry['load_average'] for entry in load]}")
    for name, met in targets.items():
        print(f"{'MET ' if met else 'MISS'} {name}")
    result = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - began, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "settings": vars(args) | {"json": str(args.json) if args.json else None},
        "model": {"hidden": args.hidden, "forward_ms_one_thread": cost},
        "handle_calls": calls,
        "throughput_ratio_c64_per_round": per_round,
        "figures": table,
        "rounds": results,
        "targets": targets,
        "load_average": load,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


# --- the run -------------------------------------------------------------------------------------


def median_of(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(r[key] for r in rounds), 4) for key in rounds[0]}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "stock":
        serve_stock(sys.argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=2000, help="customers in the generated data set")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin rounds over every configuration")
    parser.add_argument("--requests", type=int, default=1200, help="requests per measurement without Feast")
    parser.add_argument("--feast-requests", type=int, default=360, help="requests per measurement with Feast")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (data, logs)")
    parser.add_argument(
        "--engines",
        action="store_true",
        help="compare engines instead (kserve, KServe's 2 workers, ray-serve with 2 replicas; c=16 and 64)",
    )
    parser.add_argument(
        "--hidden", default="64,32", help="--engines: the model's hidden widths (1024,1024) or WIDTHxDEPTH (512x128)"
    )
    parser.add_argument("--no-handle-calls", action="store_true", help="--engines: skip the raw handle-call figures")
    parser.add_argument(
        "--only",
        help="measure only these servers, comma-separated (e.g. predictor,predictor-nomonitor); no raw figures",
    )
    args = parser.parse_args()
    if args.engines:
        return engines_main(args)

    import numpy as np
    import orjson
    import torch

    started_at = datetime.now(UTC)
    workdir = Path(tempfile.mkdtemp(prefix="slipway-serving-"))
    began = time.monotonic()
    try:
        from feature_repo import store as fs

        feast, keys, rows = make_data(workdir, args.customers)
        os.environ["SLIPWAY_FEAST_DATA"] = str(feast)
        store = fs.open_store(fs.REPO_DIR, feast)
        features = fs.feature_names(store)
        run_dir = make_model(workdir, rows, features)
        setup_seconds = time.monotonic() - began
        print(f"set-up {setup_seconds:.1f}s: {args.customers} customers, {len(features)} features, {workdir}")

        model = torch.jit.load(str(run_dir / "model.pt"))  # type: ignore[no-untyped-call]
        threads = forward_threads(model, rows)
        print("forward, mean us per call by torch threads and batch rows:", threads)
        monitor_us = monitor_cost(run_dir, rows)
        print("input monitor in this process:", monitor_us)
        torch.set_num_threads(1)  # what the predictor uses (SLIPWAY_TORCH_THREADS)
        service = fs.feature_service(store, SERVICE)
        key_rows = [keys[i % len(keys)] for i in range(4096)]
        singles = [rows[i % len(rows)][None, :] for i in range(256)]
        batches = [rows[(16 * i) % (len(rows) - 16) :][:16] for i in range(64)]

        def forward(x: Any) -> Any:
            with torch.inference_mode():
                return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()

        def lookup(ks: list[int]) -> Any:
            found = store.get_online_features(features=service, entity_rows=[{ENTITY_KEY: k} for k in ks]).to_dict()
            return np.array([[np.nan if v is None else v for v in found[f]] for f in features], np.float32).T

        raw: dict[str, Callable[[int], Figures]] = {
            "raw forward c=1": lambda n: timed_calls(lambda i: forward(singles[i % 256]), n, 200, 1),
            "raw forward c=16": lambda n: timed_calls(lambda i: forward(batches[i % 64]), n, 200, 16),
            "raw lookup c=1": lambda n: timed_calls(lambda i: lookup([key_rows[i]]), n // 3, 20, 1),
            "raw lookup c=16": lambda n: timed_calls(lambda i: lookup(key_rows[16 * (i % 256) :][:16]), n // 6, 10, 16),
            "raw lookup+forward c=1": lambda n: timed_calls(lambda i: forward(lookup([key_rows[i]])), n // 3, 20, 1),
            "raw lookup+forward c=16": lambda n: timed_calls(
                lambda i: forward(lookup(key_rows[16 * (i % 256) :][:16])), n // 6, 10, 16
            ),
        }
        plain_bodies = [orjson.dumps({"instances": [[float(v) for v in row]]}) for row in rows[:256]]
        key_bodies = [orjson.dumps({"instances": [{ENTITY_KEY: k}]}) for k in key_rows[:1024]]
        results: dict[str, list[dict[str, float]]] = {}
        only = set(args.only.split(",")) if args.only else None
        if only is not None:
            raw = {}
        with servers(workdir, run_dir, feast, only) as running:
            print(f"servers up after {time.monotonic() - began:.1f}s")
            names = list(running)
            for round_index in range(args.rounds):
                for name, measure in raw.items():
                    results.setdefault(name, []).append(measure(args.requests).summary())
                order = names[round_index % len(names) :] + names[: round_index % len(names)]
                for name in order:
                    server = running[name]
                    feast_on = "feast" in name
                    path = f"{server.url}/v1/models/{MODEL}:predict"
                    bodies = key_bodies if feast_on else plain_bodies
                    count = args.feast_requests if feast_on else args.requests
                    for c in CONCURRENCY:
                        n = count * (2 if c > 1 else 1)
                        figures = asyncio.run(http_load(path, bodies, c, n, max(100, n // 10), server.cpu_seconds))
                        results.setdefault(f"{name} c={c}", []).append(figures.summary())
                print(f"round {round_index + 1}/{args.rounds} done at {time.monotonic() - began:.1f}s")
        table = {name: median_of(rounds) for name, rounds in results.items()}
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    def fig(name: str, key: str) -> float:
        return table[name][key]

    def have(*names: str) -> bool:
        return all(f"{name} c=1" in table or name in table for name in names)

    targets: dict[str, bool] = {}
    per_round: list[float] = []
    if have("predictor", "raw forward"):
        ours_c1, raw_c1 = fig("predictor c=1", "p50_ms"), fig("raw forward c=1", "p50_ms")
        targets[f"predictor p50 at c=1 ({ours_c1:.3f} ms) <= raw forward p50 ({raw_c1:.3f} ms) + 1 ms"] = (
            ours_c1 <= raw_c1 + 1
        )
    if have("predictor", "stock"):
        throughput_ratio = fig("predictor c=16", "throughput_per_s") / fig("stock c=16", "throughput_per_s")
        per_round = [
            round(ours["throughput_per_s"] / stock["throughput_per_s"], 2)
            for ours, stock in zip(results["predictor c=16"], results["stock c=16"], strict=True)
        ]
        targets[f"predictor throughput at c=16 >= 2x stock ({throughput_ratio:.2f}x; per round {per_round})"] = (
            throughput_ratio >= 2
        )
    if have("predictor", "predictor+feast", "raw lookup"):
        added = fig("predictor+feast c=1", "p50_ms") - fig("predictor c=1", "p50_ms")
        raw_lookup = fig("raw lookup c=1", "p50_ms")
        enrichment = f"Feast enrichment adds ({added:.3f} ms) <= 3x a raw lookup ({raw_lookup:.3f} ms)"
        targets[f"{enrichment}: {added / raw_lookup:.2f}x"] = added <= 3 * raw_lookup
    monitoring: dict[str, Any] = {}
    if have("predictor", "predictor-nomonitor"):
        on, off = results["predictor c=1"], results["predictor-nomonitor c=1"]
        monitoring["p50_added_ms_per_round"] = [
            round(a["p50_ms"] - b["p50_ms"], 4) for a, b in zip(on, off, strict=True)
        ]
        on16, off16 = results["predictor c=16"], results["predictor-nomonitor c=16"]
        monitoring["throughput_ratio_c16_per_round"] = [
            round(a["throughput_per_s"] / b["throughput_per_s"], 3) for a, b in zip(on16, off16, strict=True)
        ]
        p50_added = fig("predictor c=1", "p50_ms") - fig("predictor-nomonitor c=1", "p50_ms")
        ratio16 = fig("predictor c=16", "throughput_per_s") / fig("predictor-nomonitor c=16", "throughput_per_s")
        cpu_added = {
            c: round(
                fig(f"predictor c={c}", "server_cpu_ms_per_request")
                - fig(f"predictor-nomonitor c={c}", "server_cpu_ms_per_request"),
                4,
            )
            for c in CONCURRENCY
        }
        monitoring |= {"p50_added_ms": round(p50_added, 4), "throughput_ratio_c16": round(ratio16, 3)}
        monitoring["server_cpu_added_ms_per_request"] = cpu_added
        targets[
            f"input monitoring adds <= 0.1 ms to p50 at c=1 ({p50_added:+.3f} ms; per round "
            f"{monitoring['p50_added_ms_per_round']})"
        ] = p50_added <= 0.1
        targets[
            f"input monitoring keeps >= 95% of throughput at c=16 ({ratio16:.3f}x; per round "
            f"{monitoring['throughput_ratio_c16_per_round']})"
        ] = ratio16 >= 0.95
        print(f"input monitoring: server CPU per request added (ms) by concurrency: {cpu_added}")
    if have("predictor", "predictor-again"):  # two identical servers: what the machine's noise alone gives
        same = results["predictor c=1"], results["predictor-again c=1"]
        same16 = results["predictor c=16"], results["predictor-again c=16"]
        monitoring["same_server_p50_diff_ms_per_round"] = [
            round(a["p50_ms"] - b["p50_ms"], 4) for a, b in zip(*same, strict=True)
        ]
        monitoring["same_server_throughput_ratio_c16_per_round"] = [
            round(a["throughput_per_s"] / b["throughput_per_s"], 3) for a, b in zip(*same16, strict=True)
        ]
        print(f"noise floor (predictor vs predictor-again): {monitoring}")
    print()
    print(f"{'configuration':<36} {'p50 ms':>9} {'p99 ms':>9} {'instances/s':>12} {'server CPU ms/req':>18}")
    for name, row in table.items():
        cpu = row.get("server_cpu_ms_per_request")
        print(
            f"{name:<36} {row['p50_ms']:>9.3f} {row['p99_ms']:>9.3f} {row['throughput_per_s']:>12.0f}"
            f" {'' if cpu is None else f'{cpu:.3f}':>18}"
        )
    print()
    cpu_ratio = None
    if have("stock"):
        for name in ("stock-quiet", "predictor-kserve-routes", "stock+feast", "predictor+feast", "predictor-nomonitor"):
            if have(name):
                ratio = fig(f"{name} c=16", "throughput_per_s") / fig("stock c=16", "throughput_per_s")
                print(f"throughput at c=16, {name} / stock: {ratio:.2f}x")
    if have("stock", "predictor"):
        cpu_ratio = fig("stock c=16", "server_cpu_ms_per_request") / fig("predictor c=16", "server_cpu_ms_per_request")
        print(f"server CPU per request at c=16, stock / predictor: {cpu_ratio:.2f}x (capacity per server core)")
    for name, met in targets.items():
        print(f"{'MET ' if met else 'MISS'} {name}")
    result = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - began, 1),
        "setup_seconds": round(setup_seconds, 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "settings": vars(args) | {"json": str(args.json) if args.json else None},
        "throughput_ratio_per_round": per_round,
        "server_cpu_ratio_c16": None if cpu_ratio is None else round(cpu_ratio, 3),
        "input_monitoring": monitoring,
        "figures": table,
        "forward_us_by_threads": threads,
        "input_monitor_us": monitor_us,
        "rounds": results,
        "targets": targets,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
