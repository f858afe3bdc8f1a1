"""The predictor's settings, read from its environment (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KSERVE_MODEL_DIR = Path("/mnt/models")  # where KServe's storage initializer puts STORAGE_URI


ENGINES = ("kserve", "ray-serve")


class SettingsError(ValueError):
    """The environment is wrong; the message names the variable."""


@dataclass(frozen=True)
class RaySettings:
    """The ray-serve engine's replicas: a fixed number, or autoscaled between min and max."""

    replicas: int = 1  # SLIPWAY_RAY_REPLICAS, when not autoscaling
    min_replicas: int | None = None  # SLIPWAY_RAY_MIN_REPLICAS / SLIPWAY_RAY_MAX_REPLICAS: autoscaling
    max_replicas: int | None = None
    cpus_per_replica: float = 1.0
    gpus_per_replica: float = 0.0

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None

    @property
    def most_replicas(self) -> int:
        """The most replicas that can run at once: what Ray's resources must hold."""
        return self.max_replicas if self.max_replicas is not None else self.replicas


@dataclass(frozen=True)
class MonitorSettings:
    """The input monitor (`monitor`): on unless SLIPWAY_INPUT_MONITOR is 0/false/no/off."""

    enabled: bool = True
    window_s: float = 300.0  # SLIPWAY_INPUT_WINDOW_S: the sliding window
    min_rows: int = 200  # SLIPWAY_INPUT_MIN_ROWS: present values of a feature before its PSI is exported


@dataclass(frozen=True)
class Settings:
    model_name: str  # the `model` label of every metric
    revision: str  # the `revision` label: the version number
    model_dir: str  # the run directory: a path or an fsspec URI
    feature_service: str | None = None
    entity_key: str | None = None
    feature_repo: str | None = None  # None: the repository's feature_repo/
    feast_config: str = "local"
    max_batch_size: int = 64
    max_batch_wait_s: float = 0.002
    torch_threads: int = 1
    access_log: bool = False
    engine: str = "kserve"  # or "ray-serve"
    ray: RaySettings = RaySettings()
    max_rows: int = 10_000  # rows in one request (more: 413)
    max_body_bytes: int = 8 << 20  # a predict/infer body (more: 413)
    body_timeout_s: float = 10.0  # the longest wait for the next part of a body (then 408)
    monitor: MonitorSettings = MonitorSettings()

    @property
    def enrich(self) -> bool:
        return self.feature_service is not None


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {text!r}") from None
    if not value >= 0:
        raise SettingsError(f"{name} must not be negative, got {text}")
    return value


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = _float(env, name, default)
    if not 0 < value < math.inf:
        raise SettingsError(f"{name} must be a positive finite number, got {env.get(name, '').strip()}")
    return value


def _cpus(env: Mapping[str, str], name: str, default: float, positive: bool) -> float:
    """A finite resource amount: > 0 if `positive`, else >= 0."""
    text = env.get(name, "").strip()
    if not text:
        return default
    value = _float(env, name, default)
    if not math.isfinite(value) or (positive and value <= 0):
        raise SettingsError(f"{name} must be a {'positive' if positive else 'non-negative'} finite number, got {text}")
    if value > 1 and not value.is_integer():
        raise SettingsError(f"{name} must be a whole number when above 1 (Ray's rule for resources), got {text}")
    return value


def ray_settings(env: Mapping[str, str]) -> RaySettings:
    """SLIPWAY_RAY_*: replicas (or autoscaling bounds) and each replica's CPUs and GPUs."""
    replicas = _int(env, "SLIPWAY_RAY_REPLICAS", 1, 1)
    low = _int(env, "SLIPWAY_RAY_MIN_REPLICAS", 0, 1) or None
    high = _int(env, "SLIPWAY_RAY_MAX_REPLICAS", 0, 1) or None
    if low is not None and high is None:
        raise SettingsError("SLIPWAY_RAY_MIN_REPLICAS is set but SLIPWAY_RAY_MAX_REPLICAS is not: set both")
    if high is not None:
        low = low or 1
        if low > high:
            raise SettingsError(f"SLIPWAY_RAY_MIN_REPLICAS ({low}) must not be above SLIPWAY_RAY_MAX_REPLICAS ({high})")
    return RaySettings(
        replicas=replicas,
        min_replicas=low,
        max_replicas=high,
        cpus_per_replica=_cpus(env, "SLIPWAY_RAY_CPUS_PER_REPLICA", 1.0, positive=True),
        gpus_per_replica=_cpus(env, "SLIPWAY_RAY_GPUS_PER_REPLICA", 0.0, positive=False),
    )


def engine(env: Mapping[str, str]) -> str:
    text = env.get("SLIPWAY_ENGINE", "").strip()
    value = text.lower() or "kserve"
    if value not in ENGINES:
        raise SettingsError(f"SLIPWAY_ENGINE must be one of {', '.join(ENGINES)}, got {text!r}")
    return value


def model_dir(env: Mapping[str, str], kserve_dir: Path = KSERVE_MODEL_DIR) -> str:
    """SLIPWAY_MODEL_DIR, else KServe's download at /mnt/models, else STORAGE_URI itself."""
    explicit = env.get("SLIPWAY_MODEL_DIR", "").strip()
    if explicit:
        return explicit
    if kserve_dir.is_dir():
        return str(kserve_dir)
    uri = env.get("STORAGE_URI", "").strip()
    if uri:
        return uri
    raise SettingsError(f"no model: set STORAGE_URI (or SLIPWAY_MODEL_DIR), or mount the model at {kserve_dir}")


def monitor_settings(env: Mapping[str, str]) -> MonitorSettings:
    text = env.get("SLIPWAY_INPUT_MONITOR", "").strip().lower()
    if text not in ("", "1", "true", "yes", "on", "0", "false", "no", "off"):
        raise SettingsError(f"SLIPWAY_INPUT_MONITOR must be 1/true/yes/on or 0/false/no/off, got {text!r}")
    return MonitorSettings(
        enabled=text not in ("0", "false", "no", "off"),
        window_s=_positive(env, "SLIPWAY_INPUT_WINDOW_S", 300.0),
        min_rows=_int(env, "SLIPWAY_INPUT_MIN_ROWS", 200, 1),
    )


def from_env(env: Mapping[str, str], model_name: str, kserve_dir: Path = KSERVE_MODEL_DIR) -> Settings:
    """Settings from environment variables; `model_name` is the server's --model_name."""
    service = env.get("SLIPWAY_FEATURE_SERVICE", "").strip() or None
    key = env.get("SLIPWAY_ENTITY_KEY", "").strip() or None
    if service and not key:
        raise SettingsError("SLIPWAY_FEATURE_SERVICE is set but SLIPWAY_ENTITY_KEY is not: name the entity key")
    return Settings(
        model_name=env.get("SLIPWAY_MODEL", "").strip() or model_name,
        revision=env.get("SLIPWAY_MODEL_VERSION", "").strip(),
        model_dir=model_dir(env, kserve_dir),
        feature_service=service,
        entity_key=key if service else None,
        feature_repo=env.get("SLIPWAY_FEATURE_REPO", "").strip() or None,
        feast_config=env.get("SLIPWAY_FEAST_CONFIG", "").strip() or "local",
        max_batch_size=_int(env, "SLIPWAY_MAX_BATCH_SIZE", 64, 1),
        max_batch_wait_s=_float(env, "SLIPWAY_MAX_BATCH_WAIT_MS", 2.0) / 1000.0,
        torch_threads=_int(env, "SLIPWAY_TORCH_THREADS", 1, 1),
        access_log=env.get("SLIPWAY_ACCESS_LOG", "").strip().lower() in ("1", "true", "yes"),
        engine=engine(env),
        ray=ray_settings(env),
        max_rows=_int(env, "SLIPWAY_MAX_ROWS", 10_000, 1),
        max_body_bytes=_int(env, "SLIPWAY_MAX_BODY_BYTES", 8 << 20, 1),
        body_timeout_s=_positive(env, "SLIPWAY_BODY_TIMEOUT_S", 10.0),
        monitor=monitor_settings(env),
    )
