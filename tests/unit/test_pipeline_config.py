"""The training entrypoint's configuration: the operator's RayJob -> environment and arguments."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from pipelines.churn import config, train
from pipelines.churn.failures import InvalidHyperparameter

from slipway.api.artifacts import EXIT_CONFIG, EXIT_INVALID_HYPERPARAMETER, FAILURE_FILE, RunFailure
from slipway.api.trainingrun import TrainingRunSpec
from slipway.builders.rayjob import RUN_CONFIG_ENV, build_rayjob

SPEC: dict[str, Any] = {
    "model": "churn",
    "image": "ghcr.io/example/slipway-trainer:0.1.0",
    "features": {"featureService": "churn_v1", "entities": {"uri": "s3://d/labels.parquet"}, "label": "churned"},
    "hyperparameters": {"learningRate": "0.01", "epochs": "4", "note": "two words"},
    "scaling": {"workers": 2, "gpusPerWorker": 1, "cpusPerWorker": 4},
    "artifacts": {"uri": "s3://models/churn/"},
}


def from_rayjob(spec: dict[str, Any], attempt: int = 0) -> tuple[list[str], dict[str, str]]:
    """What the entrypoint gets from the RayJob the operator builds: argv and environment."""
    job = build_rayjob("churn-1", "ml", TrainingRunSpec.model_validate(spec), attempt=attempt)
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "pipelines.churn.train"]
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    return argv[3:], env


def test_reads_the_run_the_operator_passes() -> None:
    argv, env = from_rayjob(SPEC, attempt=2)
    cfg = config.load(argv, env)
    assert (cfg.name, cfg.namespace, cfg.attempt) == ("churn-1", "ml", 2)
    assert cfg.spec.features.feature_service == "churn_v1"
    assert cfg.spec.scaling.gpus_per_worker == 1
    assert cfg.hyperparameters.learning_rate == 0.01 and cfg.hyperparameters.epochs == 4
    assert cfg.hyperparameters.batch_size == 256  # the default
    assert cfg.image == SPEC["image"] and cfg.feast_config == "local"
    assert cfg.feature_repo.endswith("feature_repo")


def test_environment_overrides() -> None:
    argv, env = from_rayjob(SPEC)
    env |= {
        "SLIPWAY_IMAGE": "trainer@sha256:abc",
        "SLIPWAY_FEATURE_REPO": "/repo",
        "SLIPWAY_FEAST_CONFIG": "cluster",
        "SLIPWAY_RAY_NUM_CPUS": "3",
    }
    cfg = config.load(argv, env)
    assert (cfg.image, cfg.feature_repo, cfg.feast_config, cfg.ray_num_cpus) == (
        "trainer@sha256:abc",
        "/repo",
        "cluster",
        3.0,
    )


def test_arguments_override_the_spec() -> None:
    argv, env = from_rayjob(SPEC)
    cfg = config.load([*argv, "--hp", "epochs=7", "--hp", "hiddenUnits=16,8"], env)
    assert cfg.hyperparameters.epochs == 7 and cfg.hyperparameters.hidden_units == (16, 8)


def test_hyperparameter_defaults_and_lineage_strings() -> None:
    hp = config.parse_hyperparameters({"batchSize": "64", "note": "x"})
    assert hp.batch_size == 64 and hp.learning_rate == 1e-3 and hp.epochs == 10
    assert hp.extra == {"note": "x"}
    strings = hp.as_strings()
    assert strings["batchSize"] == "64" and strings["hiddenUnits"] == "64,32" and strings["note"] == "x"
    assert set(config.HYPERPARAMETERS) <= set(strings)


@pytest.mark.parametrize(
    ("values", "field", "value", "words"),
    [
        ({"epochs": "ten"}, "spec.hyperparameters.epochs", "ten", "does not parse"),
        ({"epochs": "0"}, "spec.hyperparameters.epochs", "0", "must be >= 1"),
        ({"learningRate": "-1"}, "spec.hyperparameters.learningRate", "-1", "must be > 0"),
        ({"learningRate": "fast"}, "spec.hyperparameters.learningRate", "fast", "does not parse"),
        ({"heldOutFraction": "1.5"}, "spec.hyperparameters.heldOutFraction", "1.5", "must be in (0, 1)"),
        ({"hiddenUnits": "8,0"}, "spec.hyperparameters.hiddenUnits", "8,0", "hidden units must be positive"),
        # Every bad one is said; the first names the field.
        ({"epochs": "0", "dropout": "1"}, "spec.hyperparameters.epochs", "0", "also dropout='1' must be in [0, 1)"),
    ],
)
def test_bad_hyperparameters_are_refused_by_name(values: dict[str, str], field: str, value: str, words: str) -> None:
    with pytest.raises(InvalidHyperparameter) as refused:
        config.parse_hyperparameters(values)
    assert (refused.value.field, refused.value.value) == (field, value)
    assert words in refused.value.detail
    assert refused.value.exit_code == EXIT_INVALID_HYPERPARAMETER and refused.value.reason == "InvalidHyperparameter"


def test_missing_or_bad_configuration_exits_2() -> None:
    assert train.main([], {}) == EXIT_CONFIG
    assert train.main([], {RUN_CONFIG_ENV: json.dumps({"name": "x", "spec": {"model": "Bad Name"}})}) == EXIT_CONFIG
    _, env = from_rayjob(SPEC)
    with pytest.raises(SystemExit):
        config.load(["--hp", "novalue"], env)


def test_a_bad_hyperparameter_exits_7_and_says_so_in_failure_json(tmp_path: Path) -> None:
    spec = {**SPEC, "artifacts": {"uri": tmp_path.as_uri() + "/"}}
    argv, env = from_rayjob(spec, attempt=1)
    assert train.main([*argv, "--hp", "epochs=-3"], env) == EXIT_INVALID_HYPERPARAMETER
    failure = RunFailure.model_validate_json((tmp_path / "runs" / "churn-1" / FAILURE_FILE).read_text())
    assert (failure.reason, failure.field, failure.value) == (
        "InvalidHyperparameter",
        "spec.hyperparameters.epochs",
        "-3",
    )
    assert (failure.exit_code, failure.attempt) == (EXIT_INVALID_HYPERPARAMETER, 1)


def test_the_ray_run_name_changes_with_what_the_weights_depend_on() -> None:
    argv, env = from_rayjob(SPEC)
    base = config.load(argv, env)
    name = train.training_name(base, ["a", "b"], "sha-1")
    assert name.startswith("churn-1-") and len(name) == len("churn-1-") + 10
    more_epochs = config.load([*argv, "--hp", "epochs=40"], env)
    assert train.training_name(more_epochs, ["a", "b"], "sha-1") == name  # a retry may train longer
    faster = config.load([*argv, "--hp", "learningRate=0.1"], env)
    assert train.training_name(faster, ["a", "b"], "sha-1") != name
    assert train.training_name(base, ["a", "b"], "sha-2") != name
    assert train.training_name(base, ["b", "a"], "sha-1") != name
