"""The entrypoint: `python -m pipelines.batch` (see the package docstring for the contract)."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
from pydantic import ValidationError

from pipelines.churn import cluster, failures, sources, storage
from pipelines.churn.failures import UserError
from pipelines.predictor import artifact
from slipway.api.artifacts import EXIT_CONFIG
from slipway.api.batchprediction import BATCH_CONFIG_ENV, BATCH_FAILURE_FILE, BatchManifest

from . import config as configuration
from . import join, output
from .config import FIELDS
from .score import Scorer

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger("pipelines.batch")

BLOCKS_PER_WORKER = 4  # input blocks per actor: enough to keep every actor busy to the end


def blocks(rows: int, workers: int, batch_size: int) -> int:
    """How many blocks the scoring frame is cut into: each is one map_batches task and one output
    file, so a few per worker, and none smaller than a batch."""
    if rows == 0:
        return 1
    return max(1, min(workers * BLOCKS_PER_WORKER, math.ceil(rows / batch_size)))


def ray_path(uri: str) -> str:
    """What Ray Data's writer takes: a local path for file://, the URI itself for object stores."""
    return storage.ray_storage_path(uri)


def dataset(cfg: configuration.BatchConfig, frame: pd.DataFrame, blocks: int) -> ray.data.Dataset:
    """The frame as a Ray dataset of `blocks` blocks of Arrow tables."""
    import ray

    scaling = cfg.job.spec.scaling
    cluster.init_ray(scaling.workers, scaling.cpus_per_worker, cfg.runtime.ray_num_cpus)
    ray.data.DataContext.get_current().enable_progress_bars = False
    size = math.ceil(len(frame) / blocks) if len(frame) else 0
    parts = [frame.iloc[i : i + size] for i in range(0, len(frame), size)] if size else [frame]
    return ray.data.from_arrow([pa.Table.from_pandas(part, preserve_index=False) for part in parts])


def score(cfg: configuration.BatchConfig, joined: ray.data.Dataset, columns: list[str]) -> ray.data.Dataset:
    """The joined rows scored by `spec.scaling.workers` Scorer actors (lazily: nothing runs until
    the dataset is consumed)."""
    import ray

    job, scaling = cfg.job, cfg.job.spec.scaling
    return joined.map_batches(
        Scorer,
        fn_constructor_kwargs={
            "model_uri": storage.resolve(job.model_version.uri, cfg.runtime.pvc_root),
            "columns": columns,
            "version": job.model_version.version,
            "run": job.name,
            "device": cfg.device,
        },
        batch_size=scaling.batch_size,
        batch_format="pyarrow",
        # One block at a time per actor: the blocks spread over every actor, none queues behind another.
        compute=ray.data.ActorPoolStrategy(size=scaling.workers, max_tasks_in_flight_per_actor=1),
        num_cpus=scaling.cpus_per_worker,
        num_gpus=scaling.gpus_per_worker or None,
    )


def scored(cfg: configuration.BatchConfig, frame: pd.DataFrame, columns: list[str]) -> ray.data.Dataset:
    """The joined frame, cut into blocks (a few per worker), scored (the job, and the benchmark's
    Ray side of the scoring alone)."""
    scaling = cfg.job.spec.scaling
    return score(cfg, dataset(cfg, frame, blocks(len(frame), scaling.workers, scaling.batch_size)), columns)


def predict(cfg: configuration.BatchConfig, directory: str) -> int:
    job = cfg.job
    spec, version = job.spec, job.model_version
    started = time.monotonic()
    log.info(
        "batch prediction %s/%s attempt %d: %s (version %d) on %s -> %s",
        job.namespace,
        job.name,
        job.attempt,
        version.name,
        version.version,
        spec.input.uri,
        spec.output.uri,
    )
    output.prepare(directory, spec.output.uri)
    entities = sources.read_entities(spec.input.uri, cfg.runtime.pvc_root, FIELDS)
    store = sources.open_store(cfg.runtime.feature_repo, cfg.runtime.feast_config)
    service = sources.describe_service(store, version.feature_service, FIELDS)
    join.check_input(entities, service, spec.input.timestamp_column)
    manifest = artifact.read_manifest(storage.resolve(version.uri, cfg.runtime.pvc_root))
    frame = join.scoring_frame(store, entities.frame, service, spec.input.timestamp_column, manifest.features)
    log.info("%d rows joined with %s in %.1fs", len(frame), service.name, time.monotonic() - started)
    scored(cfg, frame, join.feature_columns(len(manifest.features))).write_parquet(ray_path(directory))
    files = output.parquet_files(directory)
    written = output.count_rows(directory, files)
    seconds = time.monotonic() - started
    output.write_manifest(
        directory,
        BatchManifest(
            batch_prediction=job.name,
            attempt=job.attempt,
            model=spec.model,
            version=version.version,
            model_version=version.name,
            feature_service=service.name,
            input=spec.input.uri,
            rows_read=len(entities.frame),
            rows_written=written,
            seconds=round(seconds, 3),
            files=files,
        ),
    )
    log.info("wrote %d rows in %d files in %.1fs (%.0f rows/s)", written, len(files), seconds, written / seconds)
    return 0


def run(cfg: configuration.BatchConfig) -> int:
    """Scores the input; a failure the user must fix becomes failure.json and its exit code."""
    directory = storage.resolve(cfg.job.spec.output.uri, cfg.runtime.pvc_root)
    try:
        return predict(cfg, directory)
    except UserError as error:
        return failures.conclude(error, directory, cfg.job.attempt, BATCH_FAILURE_FILE)


def main(env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = configuration.load(os.environ if env is None else env)
    except (ValueError, ValidationError) as error:
        log.error("bad $%s: %s", BATCH_CONFIG_ENV, error)
        return EXIT_CONFIG
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
