"""Batch prediction: the BatchPrediction job's Ray Data scoring against a plain pandas + torch loop.

In one run, on one generated data set (`feature_repo.generate`, `feast apply`) and one entity table
of `--rows` (customer, time) pairs drawn from its customers and times, scored by one model (the
training pipeline's ChurnMLP, 64-32 hidden units, standardized on the data, as a TorchScript run
directory):

  (a) scoring, on the same joined frame in memory:
      loop  one process: `batch_size` rows at a time, the job's own `score_batch` (the predictor's
            forward pass, `LocalCompute.forward`, torch with its default threads), the scored
            batches concatenated into one frame;
      ray   the job's `scored()` dataset (the frame cut into blocks, `map_batches` over 2 `Scorer`
            actors of 1 CPU each, `batch_size` rows a batch), materialized in the object store;
            the actors' start (model load included) counts, `ray.init` does not (a RayJob's
            cluster is up before its entrypoint starts);
      in ABBA order (loop, ray, ray, loop, ...). Target (issue 14): ray >= 1.5x the loop's rows/s.
  (b) the whole job against the join and the loop:
      job       `pipelines.batch.job.predict` in this process (read the input, Feast join, Ray Data
                scoring, write_parquet, manifest.json): the entrypoint less the interpreter's start;
      join+loop the same read and join (the job's own functions), the loop of (a), and one
                `to_parquet` of the result;
      in ABBA order. Target: job <= 1.3x join+loop.
Both sides must give the same predictions (`max_prediction_difference`). The machine has 2 cores
and may be shared: the CPU that other processes took in each measured window is reported
(`others_busy_percent`, as in training_overhead.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from training_overhead import Monitor, busy_percent, prepare_data  # noqa: E402

WORKERS = 2
CPUS_PER_WORKER = 1
SERVICE = "churn_v1"
TIMESTAMP = "event_timestamp"
VERSION, RUN = 1, "bench"


def entity_table(data: Path, rows: int, seed: int) -> pd.DataFrame:
    """`rows` (customer, time) pairs: customers of the data set, times between its first label and
    its last source row (so most rows find features in every view's TTL)."""
    labels = pd.read_parquet(data / "labels.parquet")
    activity = pd.read_parquet(data / "customer_activity.parquet", columns=["customer_id", TIMESTAMP])
    rng = np.random.default_rng(seed)
    customers = labels["customer_id"].unique()
    start, end = labels[TIMESTAMP].min().value, activity[TIMESTAMP].max().value
    times = pd.to_datetime(rng.integers(start, end, size=rows), utc=True)
    return pd.DataFrame({"customer_id": rng.choice(customers, size=rows), TIMESTAMP: times})


def write_model(data: Path, run_dir: Path) -> list[str]:
    """The training pipeline's model (64-32, standardized on the data's features), untrained: scoring
    costs the same whatever the weights."""
    import torch
    from feature_repo.store import feature_names, historical_features, open_store
    from pipelines.churn import dataset
    from pipelines.churn.model import ChurnMLP, standardization, torchscript_bytes
    from pipelines.predictor import artifact

    from slipway.api.artifacts import Manifest

    store = open_store(data_dir=str(data))
    features = feature_names(store, SERVICE)
    sample = historical_features(store, data / "labels.parquet", SERVICE)
    mean, std = standardization(dataset.feature_matrix(sample, features))
    torch.manual_seed(0)
    net = ChurnMLP(len(features), hidden=(64, 32), mean=mean, std=std).eval()
    artifact.write(str(run_dir), torchscript_bytes(net), Manifest(metrics={"auc": 0.5}, features=features))
    return features


def config(workdir: Path, data: Path, entities: Path, out: Path, batch_size: int) -> Any:
    from pipelines.batch import config as batch_config

    from slipway.api.batchprediction import BATCH_CONFIG_ENV

    doc = {
        "name": RUN,
        "namespace": "bench",
        "attempt": 0,
        "spec": {
            "model": "churn",
            "input": {"uri": entities.as_uri(), "timestampColumn": TIMESTAMP},
            "output": {"uri": out.as_uri() + "/"},
            "scaling": {"workers": WORKERS, "cpusPerWorker": CPUS_PER_WORKER, "batchSize": batch_size},
        },
        "modelVersion": {
            "name": "churn-v1",
            "version": VERSION,
            "uri": (workdir / "model").as_uri(),
            "featureService": SERVICE,
        },
    }
    return batch_config.load({BATCH_CONFIG_ENV: json.dumps(doc), "SLIPWAY_FEAST_DATA": str(data)})


def loop(frame: pd.DataFrame, columns: list[str], model_dir: Path, batch_size: int) -> pd.DataFrame:
    """The plain single-process loop: pandas batches, the predictor's forward pass, one frame."""
    from pipelines.predictor import artifact
    from pipelines.predictor.scorer import LocalCompute

    compute = LocalCompute(artifact.load(str(model_dir)).model, len(columns))
    parts = []
    for i in range(0, len(frame), batch_size):
        batch = frame.iloc[i : i + batch_size]
        probabilities = compute.forward(np.ascontiguousarray(batch[columns].to_numpy(dtype=np.float32)))
        scored = batch.drop(columns=columns).assign(prediction=probabilities)
        parts.append(scored.assign(model_version=VERSION, batch_prediction=RUN))
    return pd.concat(parts, ignore_index=True)


def ray_scoring(cfg: Any, frame: pd.DataFrame, columns: list[str]) -> Any:
    """The job's scored dataset, materialized in the object store (Ray Data's stats kept)."""
    from pipelines.batch.job import scored

    return scored(cfg, frame, columns).materialize()


def scoring_seconds(stats: str) -> float | None:
    """The Scorer actors' own time on their blocks (Ray Data's remote wall time, summed over blocks)."""
    found = re.search(r"MapBatches\(Scorer\).*?Remote wall time:.*?([\d.]+)(us|ms|s) total", stats, re.S)
    if not found:
        return None
    return float(found.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0}[found.group(2)]


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    start = time.time()
    result = fn()
    end = time.time()
    return result, end - start, start, end


def join_and_loop(cfg: Any, columns: list[str], model_dir: Path, batch_size: int, out: Path) -> pd.DataFrame:
    """The job's read and join, the loop, and one parquet file."""
    from pipelines.batch import join
    from pipelines.batch.config import FIELDS
    from pipelines.churn import sources
    from pipelines.predictor import artifact

    spec = cfg.job.spec
    entities = sources.read_entities(spec.input.uri, fields=FIELDS)
    store = sources.open_store(cfg.runtime.feature_repo, cfg.runtime.feast_config)
    service = sources.describe_service(store, SERVICE, FIELDS)
    features = artifact.read_manifest(str(model_dir)).features
    frame = join.scoring_frame(store, entities.frame, service, spec.input.timestamp_column, features)
    result = loop(frame, columns, model_dir, batch_size)
    out.mkdir(parents=True, exist_ok=True)
    result.to_parquet(out / "predictions.parquet")
    return result


def whole_job(cfg: Any, out: Path) -> pd.DataFrame:
    from pipelines.batch.job import predict

    assert predict(cfg, str(out)) == 0
    return pd.concat([pd.read_parquet(p) for p in sorted(out.glob("*.parquet"))], ignore_index=True)


def difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    keys = ["customer_id", TIMESTAMP]
    left = a.sort_values(keys, kind="stable")["prediction"].to_numpy()
    right = b.sort_values(keys, kind="stable")["prediction"].to_numpy()
    return float(np.abs(left - right).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=20_000, help="customers generated")
    parser.add_argument("--rows", type=int, default=500_000, help="entity rows to score")
    parser.add_argument("--batch-size", type=int, default=4096, help="rows per batch (spec.scaling.batchSize)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side of (a) and (b), in ABBA order")
    parser.add_argument("--skip-job", action="store_true", help="measure (a) only")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    import ray
    import torch
    from pipelines.batch import join
    from pipelines.batch.config import FIELDS
    from pipelines.churn import cluster, sources

    workdir = Path(tempfile.mkdtemp(prefix="slipway-bench-batch-"))
    load_before, busy_before = os.getloadavg(), busy_percent()
    print(f"machine: {busy_before:.0f}% busy before the benchmark, load average {load_before[0]:.2f}", flush=True)
    data = workdir / "feast"
    prepare_data(data, args.customers)
    os.environ["SLIPWAY_FEAST_DATA"] = str(data)  # where feature_repo.store finds the registry
    features = write_model(data, workdir / "model")
    entities_path = workdir / "entities.parquet"
    entity_table(data, args.rows, seed=1).to_parquet(entities_path)
    cfg = config(workdir, data, entities_path, workdir / "out", args.batch_size)
    columns = join.feature_columns(len(features))
    print(f"{args.rows} entity rows of {args.customers} customers; batch size {args.batch_size}", flush=True)

    store = sources.open_store(cfg.runtime.feature_repo, cfg.runtime.feast_config)
    service = sources.describe_service(store, SERVICE, FIELDS)
    entities = sources.read_entities(entities_path.as_uri(), fields=FIELDS)
    frame, join_seconds, _, _ = timed(lambda: join.scoring_frame(store, entities.frame, service, TIMESTAMP, features))
    print(f"join: {join_seconds:.1f}s for {len(frame)} rows", flush=True)
    cluster.init_ray(WORKERS, CPUS_PER_WORKER, None)  # the job's own local Ray: 3 logical CPUs

    results: dict[str, list[dict[str, Any]]] = {"loop": [], "ray": [], "join_loop": [], "job": []}
    outputs: dict[str, pd.DataFrame] = {}
    with Monitor() as monitor:

        def measure(kind: str, fn: Callable[[], Any]) -> None:
            result, seconds, start, end = timed(fn)
            record: dict[str, Any] = {
                "seconds": round(seconds, 3),
                "rows_per_second": round(len(frame) / seconds),
                "others_busy_percent": None,
                "_window": (start, end),
            }
            if not isinstance(result, pd.DataFrame):  # a materialized Ray dataset
                actors = scoring_seconds(result.stats())
                record["actor_scoring_seconds"] = round(actors, 3) if actors is not None else None
                result = result.to_pandas()
            outputs[kind] = result
            results[kind].append(record)
            print(f"  {kind}: {seconds:.2f}s, {len(frame) / seconds:,.0f} rows/s", flush=True)

        order = [k for r in range(args.rounds) for k in (("loop", "ray") if r % 2 == 0 else ("ray", "loop"))]
        print(f"(a) scoring: {order}", flush=True)
        for kind in order:
            if kind == "loop":
                measure(kind, lambda: loop(frame, columns, workdir / "model", args.batch_size))
            else:
                measure(kind, lambda: ray_scoring(cfg, frame, columns))
        if not args.skip_job:
            order_b = [
                k for r in range(args.rounds) for k in (("join_loop", "job") if r % 2 == 0 else ("job", "join_loop"))
            ]
            print(f"(b) the whole job: {order_b}", flush=True)
            for i, kind in enumerate(order_b):
                out = workdir / f"{kind}-{i}"
                if kind == "job":
                    job_cfg = config(workdir, data, entities_path, out, args.batch_size)
                    measure(kind, lambda: whole_job(job_cfg, out))  # noqa: B023 (called at once)
                else:
                    measure(kind, lambda: join_and_loop(cfg, columns, workdir / "model", args.batch_size, out))  # noqa: B023
        time.sleep(1.5)  # one more CPU sample after the last window
    for runs in results.values():
        for run in runs:
            run["others_busy_percent"] = monitor.others_percent(*run.pop("_window"))

    def mean(kind: str) -> float:
        return statistics.fmean(r["seconds"] for r in results[kind]) if results[kind] else float("nan")

    result: dict[str, Any] = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "ray": ray.__version__,
            "torch_threads_loop": torch.get_num_threads(),
        },
        "busy_percent_before": round(busy_before, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "customers": args.customers,
        "rows": len(frame),
        "batch_size": args.batch_size,
        "workers": WORKERS,
        "cpus_per_worker": CPUS_PER_WORKER,
        "join_seconds": round(join_seconds, 3),
        **{kind: runs for kind, runs in results.items()},
        "scoring_speedup": round(mean("loop") / mean("ray"), 3),
        "scoring_speedup_target": ">= 1.5",
        "max_prediction_difference": difference(outputs["loop"], outputs["ray"]),
    }
    if not args.skip_job:
        result["job_ratio"] = round(mean("job") / mean("join_loop"), 3)
        result["job_ratio_target"] = "<= 1.3"
        result["max_prediction_difference_job"] = difference(outputs["join_loop"], outputs["job"])
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "batch_prediction.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in results}, indent=2))
    ray.shutdown()
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
