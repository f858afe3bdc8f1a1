"""The predictor's environment: where the model comes from, enrichment, batching and engine settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pipelines.predictor.settings import MonitorSettings, RaySettings, SettingsError, from_env


def test_defaults(tmp_path: Path) -> None:
    s = from_env({"STORAGE_URI": "s3://models/churn/runs/r1/"}, "churn", tmp_path / "absent")
    assert s.model_name == "churn" and s.revision == "" and s.model_dir == "s3://models/churn/runs/r1/"
    assert not s.enrich and s.entity_key is None
    assert (s.max_batch_size, s.max_batch_wait_s, s.torch_threads, s.access_log) == (64, 0.002, 1, False)
    assert s.engine == "kserve" and s.ray == RaySettings(1, None, None, 1.0, 0.0)
    assert not s.ray.autoscaling and s.ray.most_replicas == 1


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


def test_ray_serve_with_a_fixed_number_of_replicas(tmp_path: Path) -> None:
    env = {
        "STORAGE_URI": "/r",
        "SLIPWAY_ENGINE": " Ray-Serve ",
        "SLIPWAY_RAY_REPLICAS": "3",
        "SLIPWAY_RAY_CPUS_PER_REPLICA": "0.5",
        "SLIPWAY_RAY_GPUS_PER_REPLICA": "0.25",
    }
    s = from_env(env, "m", tmp_path / "absent")
    assert s.engine == "ray-serve"
    assert s.ray == RaySettings(replicas=3, cpus_per_replica=0.5, gpus_per_replica=0.25)
    assert not s.ray.autoscaling and s.ray.most_replicas == 3


@pytest.mark.parametrize(
    ("bounds", "expected"),
    [
        ({"SLIPWAY_RAY_MIN_REPLICAS": "2", "SLIPWAY_RAY_MAX_REPLICAS": "5"}, (2, 5)),
        ({"SLIPWAY_RAY_MIN_REPLICAS": "4", "SLIPWAY_RAY_MAX_REPLICAS": "4"}, (4, 4)),
        ({"SLIPWAY_RAY_MAX_REPLICAS": "3"}, (1, 3)),  # the least is one replica
    ],
)
def test_autoscaling_bounds_win_over_the_fixed_number(
    tmp_path: Path, bounds: dict[str, str], expected: tuple[int, int]
) -> None:
    env = {"STORAGE_URI": "/r", "SLIPWAY_ENGINE": "ray-serve", "SLIPWAY_RAY_REPLICAS": "7", **bounds}
    ray = from_env(env, "m", tmp_path / "absent").ray
    assert ray.autoscaling and (ray.min_replicas, ray.max_replicas) == expected
    assert ray.most_replicas == expected[1]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SLIPWAY_ENGINE": "ray"}, "SLIPWAY_ENGINE must be one of kserve, ray-serve, got 'ray'"),
        ({"SLIPWAY_RAY_REPLICAS": "0"}, "SLIPWAY_RAY_REPLICAS must be at least 1"),
        ({"SLIPWAY_RAY_REPLICAS": "two"}, "SLIPWAY_RAY_REPLICAS must be an integer"),
        (
            {"SLIPWAY_RAY_MIN_REPLICAS": "0", "SLIPWAY_RAY_MAX_REPLICAS": "2"},
            "SLIPWAY_RAY_MIN_REPLICAS must be at least 1",
        ),
        (
            {"SLIPWAY_RAY_MIN_REPLICAS": "1", "SLIPWAY_RAY_MAX_REPLICAS": "x"},
            "SLIPWAY_RAY_MAX_REPLICAS must be an integer",
        ),
        ({"SLIPWAY_RAY_MIN_REPLICAS": "2"}, "SLIPWAY_RAY_MIN_REPLICAS is set but SLIPWAY_RAY_MAX_REPLICAS is not"),
        (
            {"SLIPWAY_RAY_MIN_REPLICAS": "3", "SLIPWAY_RAY_MAX_REPLICAS": "2"},
            "SLIPWAY_RAY_MIN_REPLICAS (3) must not be above SLIPWAY_RAY_MAX_REPLICAS (2)",
        ),
        ({"SLIPWAY_RAY_CPUS_PER_REPLICA": "0"}, "SLIPWAY_RAY_CPUS_PER_REPLICA must be a positive finite number"),
        ({"SLIPWAY_RAY_CPUS_PER_REPLICA": "-1"}, "SLIPWAY_RAY_CPUS_PER_REPLICA must not be negative"),
        ({"SLIPWAY_RAY_CPUS_PER_REPLICA": "inf"}, "SLIPWAY_RAY_CPUS_PER_REPLICA must be a positive finite number"),
        ({"SLIPWAY_RAY_CPUS_PER_REPLICA": "nan"}, "SLIPWAY_RAY_CPUS_PER_REPLICA must not be negative"),
        ({"SLIPWAY_RAY_CPUS_PER_REPLICA": "1.5"}, "SLIPWAY_RAY_CPUS_PER_REPLICA must be a whole number when above 1"),
        ({"SLIPWAY_RAY_CPUS_PER_REPLICA": "one"}, "SLIPWAY_RAY_CPUS_PER_REPLICA must be a number"),
        ({"SLIPWAY_RAY_GPUS_PER_REPLICA": "-0.5"}, "SLIPWAY_RAY_GPUS_PER_REPLICA must not be negative"),
        ({"SLIPWAY_RAY_GPUS_PER_REPLICA": "2.5"}, "SLIPWAY_RAY_GPUS_PER_REPLICA must be a whole number when above 1"),
    ],
)
def test_bad_engine_settings_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        from_env({"STORAGE_URI": "/r", "SLIPWAY_ENGINE": "ray-serve", **env}, "m", tmp_path / "absent")
    assert message in str(info.value)


def test_whole_cpus_and_gpus_above_one_are_accepted(tmp_path: Path) -> None:
    env = {"STORAGE_URI": "/r", "SLIPWAY_RAY_CPUS_PER_REPLICA": "2", "SLIPWAY_RAY_GPUS_PER_REPLICA": "1"}
    ray = from_env(env, "m", tmp_path / "absent").ray
    assert (ray.cpus_per_replica, ray.gpus_per_replica) == (2.0, 1.0)


def test_request_limits(tmp_path: Path) -> None:
    s = from_env({"STORAGE_URI": "/r"}, "m", tmp_path / "none")
    assert (s.max_rows, s.max_body_bytes, s.body_timeout_s) == (10_000, 8 << 20, 10.0)
    env = {
        "STORAGE_URI": "/r",
        "SLIPWAY_MAX_ROWS": "5",
        "SLIPWAY_MAX_BODY_BYTES": "1024",
        "SLIPWAY_BODY_TIMEOUT_S": "0.5",
    }
    s = from_env(env, "m", tmp_path / "none")
    assert (s.max_rows, s.max_body_bytes, s.body_timeout_s) == (5, 1024, 0.5)
    with pytest.raises(SettingsError, match="SLIPWAY_BODY_TIMEOUT_S must be a positive"):
        from_env({"STORAGE_URI": "/r", "SLIPWAY_BODY_TIMEOUT_S": "0"}, "m", tmp_path / "none")
    with pytest.raises(SettingsError, match="SLIPWAY_MAX_ROWS must be at least 1"):
        from_env({"STORAGE_URI": "/r", "SLIPWAY_MAX_ROWS": "0"}, "m", tmp_path / "none")


def test_input_monitor_settings(tmp_path: Path) -> None:
    s = from_env({"STORAGE_URI": "/r"}, "m", tmp_path / "none")
    assert s.monitor == MonitorSettings(enabled=True, window_s=300.0, min_rows=200)
    env = {"STORAGE_URI": "/r", "SLIPWAY_INPUT_WINDOW_S": "60", "SLIPWAY_INPUT_MIN_ROWS": "50"}
    assert from_env(env, "m", tmp_path / "none").monitor == MonitorSettings(True, 60.0, 50)
    for off in ("0", "false", "No", "off"):
        assert not from_env({**env, "SLIPWAY_INPUT_MONITOR": off}, "m", tmp_path / "none").monitor.enabled
    for on in ("1", "true", "YES", "on", ""):
        assert from_env({**env, "SLIPWAY_INPUT_MONITOR": on}, "m", tmp_path / "none").monitor.enabled
    for bad, message in [
        ({"SLIPWAY_INPUT_MONITOR": "maybe"}, "SLIPWAY_INPUT_MONITOR must be"),
        ({"SLIPWAY_INPUT_WINDOW_S": "0"}, "SLIPWAY_INPUT_WINDOW_S must be a positive"),
        ({"SLIPWAY_INPUT_MIN_ROWS": "0"}, "SLIPWAY_INPUT_MIN_ROWS must be at least 1"),
    ]:
        with pytest.raises(SettingsError, match=message):
            from_env({"STORAGE_URI": "/r", **bad}, "m", tmp_path / "none")
