"""The predictor's environment: where the model comes from, enrichment and batching settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipelines.predictor.settings import SettingsError, from_env


def test_defaults(tmp_path: Path) -> None:
    s = from_env({"STORAGE_URI": "s3://models/churn/runs/r1/"}, "churn", tmp_path / "absent")
    assert s.model_name == "churn" and s.revision == "" and s.model_dir == "s3://models/churn/runs/r1/"
    assert not s.enrich and s.entity_key is None
    assert (s.max_batch_size, s.max_batch_wait_s, s.torch_threads, s.access_log) == (64, 0.002, 1, False)


def test_model_dir_precedence(tmp_path: Path) -> None:
    mounted = tmp_path / "models"
    env = {"STORAGE_URI": "s3://bucket/run/"}
    assert from_env(env, "m", mounted).model_dir == "s3://bucket/run/"
    mounted.mkdir()  # KServe's storage initializer downloaded it
    assert from_env(env, "m", mounted).model_dir == str(mounted)
    assert from_env({**env, "SLIPWAY_MODEL_DIR": "/tmp/run"}, "m", mounted).model_dir == "/tmp/run"


def test_everything_set(tmp_path: Path) -> None:
    env = {
        "SLIPWAY_MODEL_DIR": "file:///runs/r2",
        "SLIPWAY_MODEL": "churn",
        "SLIPWAY_MODEL_VERSION": "2",
        "SLIPWAY_FEATURE_SERVICE": "churn_v1",
        "SLIPWAY_ENTITY_KEY": "customer_id",
        "SLIPWAY_FEATURE_REPO": "/app/feature_repo",
        "SLIPWAY_FEAST_CONFIG": "cluster",
        "SLIPWAY_MAX_BATCH_SIZE": "16",
        "SLIPWAY_MAX_BATCH_WAIT_MS": "0.5",
        "SLIPWAY_TORCH_THREADS": "2",
        "SLIPWAY_ACCESS_LOG": "true",
    }
    s = from_env(env, "ignored-when-SLIPWAY_MODEL-is-set", tmp_path)
    assert (s.model_name, s.revision, s.model_dir) == ("churn", "2", "file:///runs/r2")
    assert s.enrich and (s.feature_service, s.entity_key) == ("churn_v1", "customer_id")
    assert (s.feature_repo, s.feast_config) == ("/app/feature_repo", "cluster")
    assert (s.max_batch_size, s.max_batch_wait_s, s.torch_threads, s.access_log) == (16, 0.0005, 2, True)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "no model: set STORAGE_URI"),
        ({"STORAGE_URI": "/r", "SLIPWAY_FEATURE_SERVICE": "churn_v1"}, "SLIPWAY_ENTITY_KEY is not"),
        ({"STORAGE_URI": "/r", "SLIPWAY_MAX_BATCH_SIZE": "0"}, "SLIPWAY_MAX_BATCH_SIZE must be at least 1"),
        ({"STORAGE_URI": "/r", "SLIPWAY_MAX_BATCH_SIZE": "many"}, "SLIPWAY_MAX_BATCH_SIZE must be an integer"),
        ({"STORAGE_URI": "/r", "SLIPWAY_MAX_BATCH_WAIT_MS": "-1"}, "must not be negative"),
        ({"STORAGE_URI": "/r", "SLIPWAY_MAX_BATCH_WAIT_MS": "soon"}, "must be a number"),
    ],
)
def test_bad_environments_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        from_env(env, "m", tmp_path / "absent")
    assert message in str(info.value)
