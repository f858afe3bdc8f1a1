"""The predictor's settings, read from its environment (see the package docstring)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

KSERVE_MODEL_DIR = Path("/mnt/models")  # where KServe's storage initializer puts STORAGE_URI


class SettingsError(ValueError):
    """The environment is wrong; the message names the variable."""


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
    )
