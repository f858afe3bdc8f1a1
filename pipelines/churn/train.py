"""The training entrypoint a RayJob runs: `python -m pipelines.churn.train --hp KEY=VALUE ...`.

Reads the TrainingRun from `$SLIPWAY_TRAINING_RUN`, checks that its artifact location can be
written, joins its entity dataset with the Feast feature service point in time, validates the data
(writing validation.json), trains with Ray Train, evaluates on the held-out split (and scores the
serving version on the same split, when the operator names one, for mustBeatServing) and writes,
under `run_uri(spec.artifacts.uri, name)`: model.pt (TorchScript), history.json (per-epoch training
metrics), checkpoints/ (Ray Train's) and, last, manifest.json.

Exit codes (slipway.api.artifacts): 0 done; 1 an unexpected failure (retried by the operator);
2 bad configuration; and for what the user must fix, with failure.json written where it can be:
3 data validation failed, 4 feature service not found, 5 entity dataset missing or unreadable,
6 a column not found, 7 an invalid hyperparameter, 8 the artifact location cannot be written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Mapping, Sequence

from pydantic import ValidationError

from slipway.api.artifacts import (
    CHECKPOINT_DIR,
    EXIT_CONFIG,
    FAILURE_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    VALIDATION_FILE,
    Manifest,
    ValidationReport,
    profile_uri,
    run_uri,
)
from slipway.api.modelversion import Lineage

from . import baseline, cluster, dataset, failures, metrics, sources, storage, trainer, validation
from . import config as configuration
from .failures import (
    DataValidationFailed,
    InvalidHyperparameter,
    UserError,
)
from .model import predict, torchscript_bytes

HISTORY_FILE = "history.json"
ARTIFACTS_FIELD = "spec.artifacts.uri"

log = logging.getLogger("pipelines.churn.train")


def init_ray(cfg: configuration.RunConfig) -> None:
    """Join the Ray cluster the job runs in (RAY_ADDRESS), or start a small local one."""
    # Ray Train's controller polls its workers this often (default 2 s), which also sets how long it
    # takes to notice that training finished; a short interval saves seconds on every run.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    cluster.init_ray(cfg.spec.scaling.workers, cfg.spec.scaling.cpus_per_worker, cfg.ray_num_cpus)


def write_report(run_dir: str, report: ValidationReport) -> None:
    storage.write_text(storage.join(run_dir, VALIDATION_FILE), report.model_dump_json(by_alias=True, indent=2))


def run(cfg: configuration.RunConfig) -> int:
    """Trains the run; a failure the user must fix becomes failure.json and its exit code."""
    run_dir = storage.resolve(run_uri(cfg.spec.artifacts.uri, cfg.name), cfg.pvc_root)
    try:
        return train(cfg, run_dir)
    except UserError as error:
        return conclude(error, run_dir, cfg.attempt)


def conclude(error: UserError, run_dir: str, attempt: int) -> int:
    """Reports a user error: failure.json in the run directory, and the exit code."""
    return failures.conclude(error, run_dir, attempt)


def prepare(cfg: configuration.RunConfig, run_dir: str) -> None:
    """Fails fast when the run's directory cannot be written, and clears what an earlier run of
    the same name left there that this attempt writes afresh (its failure, its validation)."""
    failures.prepare_directory(run_dir, [FAILURE_FILE, VALIDATION_FILE], ARTIFACTS_FIELD, cfg.spec.artifacts.uri)


def train(cfg: configuration.RunConfig, run_dir: str) -> int:
    spec, hp = cfg.spec, cfg.hyperparameters
    accepted_uri = storage.resolve(profile_uri(spec.artifacts.uri), cfg.pvc_root)
    log.info("run %s/%s attempt %d: artifacts at %s", cfg.namespace, cfg.name, cfg.attempt, run_dir)
    prepare(cfg, run_dir)

    entities = sources.read_entities(spec.features.entities.uri, cfg.pvc_root)
    store = sources.open_store(cfg.feature_repo, cfg.feast_config)
    service = sources.describe_service(store, spec.features.feature_service)
    timestamp = spec.features.entities.timestamp_column
    sources.check_columns(entities, service, timestamp, spec.features.label)
    try:
        entity_frame = sources.entity_dataframe(entities.frame, timestamp)
    except DataValidationFailed as error:
        write_report(run_dir, error.report)
        raise

    frame = sources.historical_features(store, service, entity_frame)
    frame = dataset.canonical_order(frame, [*service.join_keys, sources.FEAST_TIMESTAMP])
    log.info("%d rows, features %s", len(frame), ", ".join(service.features))

    reference = storage.read_json(accepted_uri)
    report = validation.validate(
        frame,
        service.features,
        spec.features.label,
        spec.data_validation.max_missing_fraction,
        spec.data_validation.max_drift,
        reference,
    )
    write_report(run_dir, report)
    if not report.passed:
        raise DataValidationFailed(*validation_field(cfg, report), report)
    data_profile = validation.profile(frame, service.features)
    storage.write_json(accepted_uri, data_profile)

    keys = frame[service.join_keys[0]] if service.join_keys else frame.index.to_series()
    held_out = dataset.held_out_mask(keys, hp.held_out_fraction, hp.seed)
    features = dataset.feature_matrix(frame, service.features)
    labels = dataset.label_vector(frame, spec.features.label)
    log.info("split: %d training rows, %d held out", int((~held_out).sum()), int(held_out.sum()))

    init_ray(cfg)
    checkpoints = storage.join(run_dir, CHECKPOINT_DIR)
    ray_name = training_name(cfg, service.features, entities.sha256)
    resume = storage.latest_checkpoint(storage.join(checkpoints, ray_name))
    if resume is not None:
        log.info("resuming from the checkpoint of epoch %d (%s)", resume[1], resume[0])
    elif cfg.attempt > 0:
        log.info("attempt %d found no checkpoint: training from the start", cfg.attempt)
    fit_started = time.time()
    fitted = trainer.fit(
        features[~held_out],
        labels[~held_out],
        hp,
        workers=spec.scaling.workers,
        cpus_per_worker=spec.scaling.cpus_per_worker,
        gpus_per_worker=spec.scaling.gpus_per_worker,
        storage_path=storage.ray_storage_path(checkpoints),
        name=ray_name,
        resume=resume,
    )

    first_step = next((h["first_step_at"] for h in reversed(fitted.history) if "first_step_at" in h), None)
    log.info(
        "trained to epoch %d in %.1fs%s",
        fitted.epoch,
        time.time() - fit_started,
        f" (first step {first_step - fit_started:.1f}s after the trainer started)" if first_step else "",
    )
    scores = metrics.evaluate(labels[held_out], predict(fitted.model, features[held_out]))
    log.info("held-out metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    serving = (
        baseline.score_serving(cfg.serving, frame[held_out], labels[held_out], cfg.pvc_root) if cfg.serving else None
    )
    storage.write_bytes(storage.join(run_dir, MODEL_FILE), torchscript_bytes(fitted.model))
    storage.write_json(storage.join(run_dir, HISTORY_FILE), fitted.history)
    manifest = Manifest(
        metrics=scores,
        features=service.features,
        model_file=MODEL_FILE,
        profile=data_profile,
        lineage=lineage(cfg, service, entities),
        validation=report,
        epochs=fitted.epoch + 1,
        resumed_from_epoch=fitted.resumed_from_epoch,
        serving=serving,
    )
    storage.write_text(storage.join(run_dir, MANIFEST_FILE), manifest.model_dump_json(by_alias=True, indent=2))
    log.info("wrote %s", storage.join(run_dir, MANIFEST_FILE))
    return 0


def validation_field(cfg: configuration.RunConfig, report: ValidationReport) -> tuple[str, object]:
    """The spec field behind the first failed check: the limit it broke, the label, or the features."""
    first = report.failures[0] if report.failures else None
    limits = cfg.spec.data_validation
    if first is not None and first.check == validation.DRIFT:
        return "spec.dataValidation.maxDrift", f"{limits.max_drift:g}"
    if first is not None and first.feature == cfg.spec.features.label:
        return sources.LABEL_FIELD, cfg.spec.features.label
    if first is not None and first.check == validation.MISSING_FRACTION:
        return "spec.dataValidation.maxMissingFraction", f"{limits.max_missing_fraction:g}"
    if first is not None and first.check == validation.ROWS:
        return sources.DATASET_FIELD, cfg.spec.features.entities.uri
    return sources.SERVICE_FIELD, cfg.spec.features.feature_service  # a feature missing or not numeric


def training_name(cfg: configuration.RunConfig, features: Sequence[str], dataset_sha256: str) -> str:
    """Ray Train's run name: the TrainingRun's name and a digest of what the weights depend on (data,
    features, label and every hyperparameter but the epoch count). A retry finds its own checkpoints
    (even with more epochs); a new run that reuses an old run's name never resumes the old weights."""
    hp = cfg.hyperparameters.as_strings()
    identity = {
        "data": dataset_sha256,
        "service": cfg.spec.features.feature_service,
        "features": list(features),
        "label": cfg.spec.features.label,
        "hyperparameters": {k: hp[k] for k in configuration.HYPERPARAMETERS if k != "epochs"},
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{cfg.name}-{digest[:10]}"


def lineage(
    cfg: configuration.RunConfig, service: sources.FeatureServiceInfo, entities: sources.EntityDataset
) -> Lineage:
    import ray
    import torch

    return Lineage(
        feature_service=service.name,
        feature_views=service.feature_views,
        dataset_uri=entities.uri,
        dataset_sha256=entities.sha256,
        image=cfg.image,
        hyperparameters=cfg.hyperparameters.as_strings(),
        ray_version=ray.__version__,
        torch_version=torch.__version__,
    )


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    environment = os.environ if env is None else env
    try:
        cfg = configuration.load(args, environment)
    except InvalidHyperparameter as error:
        # The rest of the configuration is fine, so the run (and where it reports) is known.
        partial = configuration.load(args, environment, hyperparameters=False)
        return conclude(
            error, storage.resolve(run_uri(partial.spec.artifacts.uri, partial.name), partial.pvc_root), partial.attempt
        )
    except (ValueError, KeyError, ValidationError) as err:
        log.error("bad configuration: %s", err)
        return EXIT_CONFIG
    return run(cfg)


if __name__ == "__main__":
    sys.exit(main())
