"""Training overhead: the pipeline's Ray Train path against plain torch DDP, and TrainingRun start-up.

In one run, on one generated data set joined with Feast the way the pipeline joins it:
  ddp       plain torch DDP: torch.multiprocessing spawns 2 processes (gloo, DistributedSampler),
            the pipeline's ChurnMLP (built by `trainer.build_model`), Adam, the same batch size,
            learning rate, seeds and epochs, on the same training rows;
  pipeline  the TrainingRun entrypoint, `python -m pipelines.churn.train`, unchanged (Feast join,
            validation, Ray Train `TorchTrainer` with 2 CPU workers and a checkpoint per epoch,
            evaluation) on a local Ray it starts; its history.json gives the epoch times;
            ddp and pipeline run `--rounds` times each, in ABBA order (ddp, pipeline, pipeline, ddp);
  devstack  `DevStack` (kube-apiserver, the operator, a local Ray with the RayJob executor) on the
            same data; TrainingRuns are created through the API one after the other and the time
            from the create call to the run's first training step (history.json `first_step_at`) is
            taken, with a breakdown from the RayJob, the Ray job and the pipeline's log lines.
Epoch time: the training loop of one epoch, measured the same way on both sides (the pipeline's
`epoch_seconds`: from the first batch request to the loss all-reduce), averaged over every epoch but
the first (warm-up). Both sides must report the same per-epoch losses (`max_loss_difference`).
Targets (issue 3): pipeline epoch time <= 1.10x plain DDP; TrainingRun create -> first training step
<= plain DDP start-up (spawn + init_process_group -> first step) + 10 s.
Every time here is wall-clock Unix time (`time.time()`, or the pipeline's log timestamps) taken on
this machine, so times from different processes compare. The CPU that processes outside the
benchmark took during each measured window is reported as `others_busy_percent`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Spawned DDP processes re-import this module: only light imports at the top.
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WORKERS = 2
CPUS_PER_WORKER = 1  # Ray sets OMP_NUM_THREADS to a worker's CPUs: 1 thread per worker on both sides
DATA_SEED = 7  # the dev stack's generator seed
SERVICE, LABEL, TIMESTAMP = "churn_v1", "churned", "event_timestamp"
NAMESPACE = "bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def after_warmup(*histories: list[dict[str, Any]]) -> list[float]:
    """Epoch seconds of every epoch but the first of each run."""
    return [float(h["epoch_seconds"]) for history in histories for h in history[1:]]


def training_window(first_step: float, history: list[dict[str, Any]]) -> tuple[float, float]:
    """From the first step to about the end of the last epoch's loop (the reports between epochs left out)."""
    return first_step, first_step + sum(float(h["epoch_seconds"]) for h in history)


def busy_percent(seconds: float = 3.0) -> float:
    """How busy the machine's CPUs are (all processes), over a few seconds."""
    import psutil

    return float(psutil.cpu_percent(interval=seconds))


class Monitor:
    """Samples the CPU time of every process on the machine once a second, to tell how much CPU the
    processes outside this benchmark's process tree took during a window (other work on the machine)."""

    def __init__(self, interval: float = 1.0) -> None:
        import threading

        self.interval = interval
        self.samples: list[tuple[float, dict[int, float]]] = []  # (time, {pid: CPU seconds}) outside the tree
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Monitor:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join()

    def _run(self) -> None:
        import psutil

        me = os.getpid()
        while not self.stopped.is_set():
            table: dict[int, tuple[int, float]] = {}
            for proc in psutil.process_iter(["pid", "ppid", "cpu_times"]):
                times = proc.info["cpu_times"]
                if times is not None:
                    table[proc.info["pid"]] = (proc.info["ppid"] or 0, times.user + times.system)
            outside: dict[int, float] = {}
            for pid, (_, cpu) in table.items():
                node = pid
                for _ in range(64):  # up the parent chain to this process, or to the root
                    if node == me or node not in table or table[node][0] in (0, node):
                        break
                    node = table[node][0]
                if node != me:
                    outside[pid] = cpu
            self.samples.append((time.time(), outside))
            self.stopped.wait(self.interval)

    def others_percent(self, start: float, end: float) -> float | None:
        """CPU used by processes outside the benchmark between two times, in % of all the machine's CPUs."""
        before = [sample for sample in self.samples if sample[0] <= start]
        after = [sample for sample in self.samples if sample[0] >= end]
        if not before or not after:
            return None
        (t0, first), (t1, last) = before[-1], after[0]  # the samples that bracket the window
        used = sum(cpu - first.get(pid, 0.0) for pid, cpu in last.items())
        return round(100 * used / ((t1 - t0) * (os.cpu_count() or 1)), 1)


# --- data: generated, registered and joined as the dev stack and the pipeline do ---------------------------


def prepare_data(data: Path, customers: int) -> None:
    """The generator and `feast apply`, as `DevStack.prepare_features` runs them."""
    env = {**os.environ, "SLIPWAY_FEAST_DATA": str(data)}
    generate = [sys.executable, "-m", "feature_repo.generate", "--out", str(data)]
    subprocess.run([*generate, "--customers", str(customers), "--seed", str(DATA_SEED)], cwd=REPO, env=env, check=True)
    subprocess.run([sys.executable, "-m", "feature_repo.store", "apply"], cwd=REPO, env=env, check=True)


def training_arrays(data: Path, hp: Any) -> tuple[np.ndarray, np.ndarray]:
    """The training rows the pipeline trains on: its Feast join, row order and held-out split."""
    os.environ["SLIPWAY_FEAST_DATA"] = str(data)  # where feature_repo.store finds the registry
    from pipelines.churn import dataset, sources

    entities = sources.read_entities(f"file://{data / 'labels.parquet'}")
    store = sources.open_store(str(REPO / "feature_repo"))
    service = sources.describe_service(store, SERVICE)
    frame = sources.historical_features(store, service, sources.entity_dataframe(entities.frame, TIMESTAMP))
    frame = dataset.canonical_order(frame, [*service.join_keys, sources.FEAST_TIMESTAMP])
    held_out = dataset.held_out_mask(frame[service.join_keys[0]], hp.held_out_fraction, hp.seed)
    features = dataset.feature_matrix(frame, service.features)
    labels = dataset.label_vector(frame, LABEL)
    return (
        np.ascontiguousarray(features[~held_out], dtype="float32"),
        np.ascontiguousarray(labels[~held_out], dtype="float32"),
    )


# --- (b) plain torch DDP -------------------------------------------------------------------------------------


def ddp_worker(rank: int, world: int, config: dict[str, Any], data: str, out: str) -> None:
    """One DDP process: the pipeline's training loop without Ray (same model, sampler, seeds, loss)."""
    entered = time.time()
    torch.set_num_threads(CPUS_PER_WORKER)
    import torch.distributed as dist
    from pipelines.churn.trainer import build_model
    from torch import nn
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

    dist.init_process_group("gloo", rank=rank, world_size=world)  # MASTER_ADDR/PORT set by the parent
    grouped = time.time()
    torch.manual_seed(config["seed"] + rank)
    model = DistributedDataParallel(build_model(config))  # broadcasts rank 0's weights
    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"], weight_decay=config["weight_decay"])
    arrays = np.load(data)
    dataset = TensorDataset(torch.from_numpy(arrays["features"]), torch.from_numpy(arrays["labels"]))
    sampler = DistributedSampler(dataset, shuffle=True)  # seed 0, as Ray Train's prepare_data_loader makes it
    generator = torch.Generator().manual_seed(config["seed"])
    loader = DataLoader(dataset, batch_size=config["batch_size"], sampler=sampler, generator=generator)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    first_step_at: float | None = None
    history: list[dict[str, float]] = []
    for epoch in range(config["epochs"]):
        generator.manual_seed(config["seed"] + epoch)
        sampler.set_epoch(epoch)
        model.train()
        started, total, count = time.time(), torch.zeros(()), 0
        for x, y in loader:
            if first_step_at is None:
                first_step_at = time.time()
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            (loss / len(y)).backward()
            optimizer.step()
            total += loss.detach()
            count += len(y)
        both = torch.stack([total.to(torch.float64), torch.tensor(float(count), dtype=torch.float64)])
        dist.all_reduce(both)
        history.append(
            {
                "epoch": float(epoch),
                "loss": float(both[0]) / max(float(both[1]), 1.0),
                "epoch_seconds": time.time() - started,
            }
        )
    ended = time.time()
    dist.destroy_process_group()
    marks = {"entered_at": entered, "group_at": grouped, "first_step_at": first_step_at, "ended_at": ended}
    Path(out, f"ddp-rank{rank}.json").write_text(json.dumps({**marks, "history": history}))


def run_ddp(config: dict[str, Any], data: Path, workdir: Path) -> dict[str, Any]:
    import torch.multiprocessing as mp

    saved = {k: os.environ.get(k) for k in ("MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS")}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), OMP_NUM_THREADS=str(CPUS_PER_WORKER))
    try:
        spawned = time.time()
        mp.spawn(ddp_worker, args=(WORKERS, config, str(data), str(workdir)), nprocs=WORKERS, join=True)
        joined = time.time()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    rank0 = json.loads((workdir / "ddp-rank0.json").read_text())
    history = rank0["history"]
    return {
        "history": history,
        "startup_seconds": round(rank0["first_step_at"] - spawned, 3),
        "startup": {  # rank 0's
            "spawn_to_worker_fn": round(rank0["entered_at"] - spawned, 2),  # interpreter, this module, torch
            "imports_and_init_process_group": round(rank0["group_at"] - rank0["entered_at"], 2),
            "ddp_model_data_loader_to_first_step": round(rank0["first_step_at"] - rank0["group_at"], 2),
        },
        "train_wall_seconds": round(rank0["ended_at"] - rank0["first_step_at"], 3),
        "total_seconds": round(joined - spawned, 2),
        "_window": training_window(rank0["first_step_at"], history),
    }


# --- (a) the pipeline, and the log lines both pipeline runs are timed with -----------------------------------


LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ pipelines\.churn\.train: (.*)$")


def pipeline_marks(log: str) -> dict[str, float]:
    """Unix times of the pipeline's progress lines (logging's asctime: local time on this machine's clock)."""
    marks: dict[str, float] = {}
    for line in log.splitlines():
        match = LOG_LINE.match(line.strip())
        if not match:
            continue
        at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        message = match[2]
        if message.startswith("run ") and "artifacts at" in message:
            marks.setdefault("configured", at)
        elif " rows, features " in message:
            marks["joined"] = at
        elif message.startswith("split:"):
            marks["split"] = at
        elif message.startswith("trained to epoch"):
            marks["fit_returned"] = at
            after = re.search(r"first step ([\d.]+)s after the trainer started", message)
            if after:
                marks["first_step_after_fit_start"] = float(after[1])
    return marks


def startup_breakdown(marks: dict[str, float], started: float, first_step: float) -> dict[str, float]:
    """Phases from `started` (process or Ray job start) to the first training step."""
    out: dict[str, float] = {}
    if {"configured", "joined", "split"} <= marks.keys():
        out["python_imports_config"] = marks["configured"] - started
        out["entities_and_feast_join"] = marks["joined"] - marks["configured"]
        out["validation_profile_split"] = marks["split"] - marks["joined"]
        if "first_step_after_fit_start" in marks:
            fit_started = first_step - marks["first_step_after_fit_start"]
            out["ray_init_and_checkpoint_lookup"] = fit_started - marks["split"]
            out["torchtrainer_to_first_step"] = marks["first_step_after_fit_start"]
    return {k: round(v, 2) for k, v in out.items()}


def run_spec(data: Path, artifacts: Path, hp: dict[str, str]) -> dict[str, Any]:
    return {
        "model": "churn",
        "image": "local-dev",
        "entrypoint": "pipelines.churn.train",
        "features": {
            "featureService": SERVICE,
            "entities": {"uri": f"file://{data / 'labels.parquet'}"},
            "label": LABEL,
        },
        "hyperparameters": hp,
        "scaling": {"workers": WORKERS, "gpusPerWorker": 0, "cpusPerWorker": CPUS_PER_WORKER, "memoryPerWorker": "1Gi"},
        "artifacts": {"uri": f"file://{artifacts}/"},
    }


def read_history(artifacts: Path, name: str) -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = json.loads((artifacts / "runs" / name / "history.json").read_text())
    return history


def run_pipeline(data: Path, workdir: Path, hp: dict[str, str], name: str) -> dict[str, Any]:
    """One run of the entrypoint; `name` is new each time (a run of the same name would resume)."""
    artifacts = workdir / "artifacts"
    run = {"name": name, "namespace": NAMESPACE, "attempt": 0, "spec": run_spec(data, artifacts, hp)}
    env = {
        **os.environ,
        "SLIPWAY_TRAINING_RUN": json.dumps(run),
        "SLIPWAY_FEAST_DATA": str(data),
        "PYTHONPATH": str(REPO),
    }
    env.pop("RAY_ADDRESS", None)  # the entrypoint starts its own local Ray (workers x CPUs + 1 logical CPUs)
    log_path = workdir / f"{name}.log"
    with open(log_path, "wb") as log:
        started = time.time()
        code = subprocess.run(
            [sys.executable, "-m", "pipelines.churn.train"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode
        ended = time.time()
    if code != 0:
        raise RuntimeError(f"the pipeline exited with {code}; see {log_path}")
    history = read_history(artifacts, name)
    first_step = float(history[0]["first_step_at"])
    marks = pipeline_marks(log_path.read_text())
    return {
        "history": history,
        "startup_seconds": round(first_step - started, 3),
        "startup": startup_breakdown(marks, started, first_step),
        "train_wall_seconds": round(marks["fit_returned"] - first_step, 3) if "fit_returned" in marks else None,
        "total_seconds": round(ended - started, 2),
        "_window": training_window(first_step, history),
    }


# --- (c) the dev stack: TrainingRun create -> first training step --------------------------------------------


def run_devstack(workdir: Path, customers: int, hp: dict[str, str], runs: int, keep: bool) -> dict[str, Any]:
    from kubernetes import client
    from kubernetes import config as kubeconfig

    from slipway.builders.rayjob import rayjob_name
    from slipway.devstack.stack import NAMESPACE as DEV_NAMESPACE
    from slipway.devstack.stack import DevStack

    class BenchStack(DevStack):
        def prepare_features(self, data: Path, *extra: str) -> None:  # the benchmark's data size
            super().prepare_features(data, "--customers", str(customers), *extra)

    results: list[dict[str, Any]] = []
    started = time.time()
    with BenchStack(workdir / "dev") as stack:
        up_seconds = time.time() - started
        from ray.job_submission import JobSubmissionClient

        api = client.CustomObjectsApi(kubeconfig.new_client_from_config(str(stack.kubeconfig)))
        jobs = JobSubmissionClient(stack.ray.address, headers=stack.ray.headers)
        operator_log = stack.workdir / "operator.log"
        deadline = time.monotonic() + 120
        while "Initial authentication has finished" not in operator_log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the operator did not log in within 120 s; see {operator_log}")
            time.sleep(0.5)
        time.sleep(5)  # let the operator's watches open and the stack settle before the first create
        for index in range(runs):
            name = f"overhead-{index + 1}"
            manifest = stack.training_run(
                name,
                hyperparameters=hp,
                scaling={"workers": WORKERS, "gpusPerWorker": 0, "cpusPerWorker": CPUS_PER_WORKER},
                evaluation={"metric": "auc", "minimum": 0.5},
            )
            print(f"devstack: creating TrainingRun {name}", flush=True)
            applied = time.time()
            api.create_namespaced_custom_object("slipway.dev", "v1alpha1", DEV_NAMESPACE, "trainingruns", manifest)
            created = time.time()
            rayjob, rayjob_seen = rayjob_name(name, 0), None
            phase, end = None, time.monotonic() + 900
            while phase not in ("Succeeded", "Failed"):
                if time.monotonic() > end:
                    raise TimeoutError(f"TrainingRun {name} did not finish in 900 s; see {stack.workdir}")
                if (problem := stack.dead()) is not None:
                    raise RuntimeError(problem)
                if rayjob_seen is None:
                    try:
                        api.get_namespaced_custom_object("ray.io", "v1", DEV_NAMESPACE, "rayjobs", rayjob)
                        rayjob_seen = time.time()
                    except client.ApiException as error:
                        if error.status != 404:
                            raise
                tr = api.get_namespaced_custom_object("slipway.dev", "v1alpha1", DEV_NAMESPACE, "trainingruns", name)
                phase = (tr.get("status") or {}).get("phase")
                time.sleep(0.1 if rayjob_seen is None else 1.0)
            status = api.get_namespaced_custom_object("ray.io", "v1", DEV_NAMESPACE, "rayjobs", rayjob)["status"]
            info = jobs.get_job_info(status["jobId"])
            job_started = info.start_time / 1000
            history = read_history(stack.artifacts, name)
            first_step = float(history[0]["first_step_at"])
            marks = pipeline_marks(jobs.get_job_logs(status["jobId"]))
            message = (tr.get("status") or {}).get("message")
            results.append(
                {
                    "name": name,
                    "phase": phase,
                    "message": message,
                    "create_call_seconds": round(created - applied, 3),
                    "create_to_first_step_seconds": round(first_step - applied, 3),
                    "breakdown": {
                        "operator_creates_rayjob": round(rayjob_seen - applied, 2) if rayjob_seen else None,
                        "executor_starts_ray_job": round(job_started - rayjob_seen, 2) if rayjob_seen else None,
                        **startup_breakdown(marks, job_started, first_step),
                    },
                    "history": history,
                    "_startup_window": (applied, first_step),
                    "_window": training_window(first_step, history),
                }
            )
    if not keep:
        shutil.rmtree(stack.ray.temp_dir, ignore_errors=True)  # LocalRay's session directory, logs included
    return {"up_seconds": round(up_seconds, 2), "runs": results}


# --- main ----------------------------------------------------------------------------------------------------


def summary(history: list[dict[str, Any]]) -> dict[str, Any]:
    seconds = [round(float(h["epoch_seconds"]), 3) for h in history]
    rest = after_warmup(history)
    return {
        "epoch_seconds": seconds,
        "losses": [round(float(h["loss"]), 6) for h in history],
        "mean_epoch_seconds_after_warmup": round(statistics.fmean(rest), 3),
        "median_epoch_seconds_after_warmup": round(statistics.median(rest), 3),
        "stdev_epoch_seconds_after_warmup": round(statistics.stdev(rest), 3) if len(rest) > 1 else 0.0,
    }


def described(run: dict[str, Any]) -> dict[str, Any]:
    """A run's epoch summary and its other figures, without the raw history."""
    return {**summary(run["history"]), **{k: v for k, v in run.items() if k != "history" and not k.startswith("_")}}


def max_loss_difference(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> float:
    return float(f"{max(abs(float(x['loss']) - float(y['loss'])) for x, y in zip(a, b, strict=True)):.3g}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=100_000, help="customers generated (2 labelled rows each)")
    parser.add_argument("--epochs", type=int, default=8, help="epochs (the first is warm-up, left out of the mean)")
    parser.add_argument("--batch-size", type=int, default=256, help="batch size per worker")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each of plain DDP and the pipeline")
    parser.add_argument("--dev-runs", type=int, default=2, help="TrainingRuns created one after the other (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (data, logs, artifacts)")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is warm-up)")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    from pipelines.churn.config import parse_hyperparameters
    from pipelines.churn.trainer import loop_config

    hp_strings = {
        "epochs": str(args.epochs),
        "batchSize": str(args.batch_size),
        "learningRate": str(args.learning_rate),
    }
    hp = parse_hyperparameters(hp_strings)
    workdir = Path(tempfile.mkdtemp(prefix="slipway-bench-train-"))
    load_before, busy_before = os.getloadavg(), busy_percent()
    print(f"machine: {busy_before:.0f}% busy before the benchmark, load average {load_before[0]:.2f}", flush=True)
    data = workdir / "feast"
    print(f"data: {args.customers} customers (seed {DATA_SEED}) in {data}", flush=True)
    prepare_data(data, args.customers)
    features, labels = training_arrays(data, hp)
    arrays = workdir / "train.npz"
    np.savez(arrays, features=features, labels=labels)
    config = loop_config(hp, features)  # what trainer.fit gives its workers, less the object refs
    steps = math.ceil(math.ceil(len(features) / WORKERS) / hp.batch_size)
    print(f"{len(features)} training rows, {steps} steps per worker per epoch, {hp.epochs} epochs", flush=True)

    # Plain DDP before and after the pipeline: its baseline brackets the pipeline's run in time.
    ddp_runs: list[dict[str, Any]] = []
    pipeline_runs: list[dict[str, Any]] = []
    dev = None
    # Rounds in ABBA order (ddp, pipeline, pipeline, ddp, ...), so slow drifts of the machine hit both alike.
    order = [kind for r in range(args.rounds) for kind in (("ddp", "pipeline") if r % 2 == 0 else ("pipeline", "ddp"))]
    with Monitor() as monitor:
        for kind in order:
            if kind == "ddp":
                number = len(ddp_runs) + 1
                print(f"ddp {number}: plain torch DDP, 2 gloo processes", flush=True)
                (workdir / f"ddp-{number}").mkdir()
                run = run_ddp(config, arrays, workdir / f"ddp-{number}")
                ddp_runs.append(run)
            else:
                number = len(pipeline_runs) + 1
                print(f"pipeline {number}: python -m pipelines.churn.train (TorchTrainer, 2 CPU workers)", flush=True)
                run = run_pipeline(data, workdir, hp_strings, f"overhead-direct-{number}")
                pipeline_runs.append(run)
            run["others_busy_percent"] = monitor.others_percent(*run["_window"])
            print(
                f"  epoch seconds {[round(h['epoch_seconds'], 2) for h in run['history']]}; "
                f"start-up {run['startup_seconds']:.2f}s; other processes {run['others_busy_percent']}% busy",
                flush=True,
            )
        if args.dev_runs > 0:
            print(f"devstack: starting the dev stack with {args.customers} customers", flush=True)
            dev = run_devstack(workdir, args.customers, hp_strings, args.dev_runs, keep=args.keep)
            for run in dev["runs"]:
                run["others_busy_percent_startup"] = monitor.others_percent(*run.pop("_startup_window"))
                run["others_busy_percent"] = monitor.others_percent(*run.pop("_window"))

    ddp_epochs = after_warmup(*(run["history"] for run in ddp_runs))
    pipeline_epochs = after_warmup(*(run["history"] for run in pipeline_runs))
    ddp_mean, pipeline_mean = statistics.fmean(ddp_epochs), statistics.fmean(pipeline_epochs)
    ddp_startup = statistics.fmean(run["startup_seconds"] for run in ddp_runs)
    result: dict[str, Any] = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
        "busy_percent_before": round(busy_before, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "customers": args.customers,
        "training_rows": len(features),
        "steps_per_worker_epoch": steps,
        "epochs": hp.epochs,
        "batch_size": hp.batch_size,
        "learning_rate": hp.learning_rate,
        "workers": WORKERS,
        "threads_per_worker": CPUS_PER_WORKER,
        "order": order,
        "warmup": "the first epoch of each run is left out of the epoch means",
        "ddp_runs": [described(run) for run in ddp_runs],
        "pipeline_runs": [described(run) for run in pipeline_runs],
        "max_loss_difference": max(
            max_loss_difference(p["history"], d["history"]) for p in pipeline_runs for d in ddp_runs
        ),
        "ddp_mean_epoch_seconds": round(ddp_mean, 3),
        "pipeline_mean_epoch_seconds": round(pipeline_mean, 3),
        "epoch_ratio": round(pipeline_mean / ddp_mean, 3),
        "epoch_ratio_of_medians": round(statistics.median(pipeline_epochs) / statistics.median(ddp_epochs), 3),
        "epoch_ratio_per_round": [
            round(statistics.fmean(after_warmup(p["history"])) / statistics.fmean(after_warmup(d["history"])), 3)
            for p, d in zip(pipeline_runs, ddp_runs, strict=True)
        ],
        "ddp_startup_seconds": round(ddp_startup, 3),
        "pipeline_startup_seconds": round(statistics.fmean(run["startup_seconds"] for run in pipeline_runs), 3),
    }
    pipeline_walls = [run["train_wall_seconds"] for run in pipeline_runs if run["train_wall_seconds"]]
    if pipeline_walls:
        ddp_wall = statistics.fmean(run["train_wall_seconds"] for run in ddp_runs)
        result["train_wall_ratio"] = round(statistics.fmean(pipeline_walls) / ddp_wall, 3)
    if dev is not None:
        for run in dev["runs"]:
            run.update(summary(run.pop("history")))
        result["devstack"] = dev
        result["create_to_first_step_seconds"] = [run["create_to_first_step_seconds"] for run in dev["runs"]]
        result["create_to_first_step_budget_seconds"] = round(ddp_startup + 10, 2)
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "training_overhead.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    if args.keep:
        print(f"kept {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"epoch time (mean of epochs 2..{hp.epochs}): pipeline {pipeline_mean:.3f}s, plain DDP {ddp_mean:.3f}s "
        f"({args.rounds} runs each) -> {pipeline_mean / ddp_mean:.2f}x; per round {result['epoch_ratio_per_round']}"
    )
    print(f"plain DDP start-up (spawn -> first step, mean of {args.rounds} runs): {ddp_startup:.2f}s")
    targets = {"pipeline epoch time <= 1.10x plain DDP": result["epoch_ratio"] <= 1.10}
    if dev is not None:
        budget = result["create_to_first_step_budget_seconds"]
        for index, run in enumerate(dev["runs"]):
            seconds = run["create_to_first_step_seconds"]
            print(f"TrainingRun {run['name']}: create -> first step {seconds:.2f}s (budget {budget:.2f}s)")
            which = f"{run['name']}, the first after the stack came up" if index == 0 else run["name"]
            targets[f"TrainingRun create -> first step <= plain DDP start-up + 10 s ({which})"] = seconds <= budget
    for name, met in targets.items():
        print(f"{'MET ' if met else 'MISS'} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
