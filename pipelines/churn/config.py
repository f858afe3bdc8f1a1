"""The run's configuration: `$SLIPWAY_TRAINING_RUN`, `--hp KEY=VALUE` arguments and a few variables.

Environment:
- SLIPWAY_TRAINING_RUN (required): {"name", "namespace", "attempt", "spec"}, spec in camelCase,
  as the operator's RayJob builder writes it, and "serving" ({"version", "uri"}) when the run's
  mustBeatServing has a serving version to score on the same held-out split.
- SLIPWAY_FEATURE_REPO: the Feast repository (default: this checkout's feature_repo/).
- SLIPWAY_FEAST_CONFIG: which Feast configuration of the repository: "local" (feature_store.yaml,
  the default), "cluster" (cluster/feature_store.yaml) or the path of a feature_store.yaml.
- SLIPWAY_FEAST_DATA: the Feast data directory (read by feature_repo.store; see feature_repo/).
- SLIPWAY_IMAGE: the trainer image, for lineage (default: spec.image).
- SLIPWAY_RAY_NUM_CPUS: CPUs of the local Ray instance when RAY_ADDRESS is unset.
- SLIPWAY_PVC_ROOT: where pvc://CLAIM/PATH URIs are mounted (default /mnt/pvc: /mnt/pvc/CLAIM/PATH).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slipway.api.trainingrun import ServingModel, TrainingRunSpec

from .failures import InvalidHyperparameter

RUN_CONFIG_ENV = "SLIPWAY_TRAINING_RUN"
FEATURE_REPO_ENV = "SLIPWAY_FEATURE_REPO"
FEAST_CONFIG_ENV = "SLIPWAY_FEAST_CONFIG"
IMAGE_ENV = "SLIPWAY_IMAGE"
RAY_CPUS_ENV = "SLIPWAY_RAY_NUM_CPUS"
PVC_ROOT_ENV = "SLIPWAY_PVC_ROOT"
DEFAULT_FEATURE_REPO = str(Path(__file__).resolve().parents[2] / "feature_repo")

log = logging.getLogger(__name__)


def _units(text: str) -> tuple[int, ...]:
    units = tuple(int(u) for u in text.replace(";", ",").split(",") if u.strip())
    if any(u < 1 for u in units):
        raise ValueError("hidden units must be positive")
    return units


@dataclass(frozen=True)
class Hyperparameters:
    learning_rate: float = 1e-3
    epochs: int = 10
    batch_size: int = 256
    hidden_units: tuple[int, ...] = (64, 32)
    dropout: float = 0.0
    weight_decay: float = 0.0
    seed: int = 42
    held_out_fraction: float = 0.2
    extra: dict[str, str] = field(default_factory=dict)  # unknown keys, kept for lineage

    def as_strings(self) -> dict[str, str]:
        """Every hyperparameter in force, with its wire name, as the lineage records it."""
        values = {
            wire: ",".join(map(str, getattr(self, attr))) if attr == "hidden_units" else str(getattr(self, attr))
            for wire, (attr, _) in HYPERPARAMETERS.items()
        }
        return {**self.extra, **values}


# wire name (as in spec.hyperparameters) -> (attribute, parser)
HYPERPARAMETERS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "learningRate": ("learning_rate", float),
    "epochs": ("epochs", int),
    "batchSize": ("batch_size", int),
    "hiddenUnits": ("hidden_units", _units),
    "dropout": ("dropout", float),
    "weightDecay": ("weight_decay", float),
    "seed": ("seed", int),
    "heldOutFraction": ("held_out_fraction", float),
}


def parse_hyperparameters(values: Mapping[str, str]) -> Hyperparameters:
    """Typed hyperparameters from strings; unknown keys are kept (and logged), bad values refused
    with InvalidHyperparameter naming the first bad key (and the others in its detail)."""
    known: dict[str, Any] = {}
    extra: dict[str, str] = {}
    bad: list[tuple[str, str, str]] = []  # (key, value, what is wrong)
    for key, raw in values.items():
        if key not in HYPERPARAMETERS:
            log.warning("unknown hyperparameter %s=%s: recorded in lineage, not used", key, raw)
            extra[key] = str(raw)
            continue
        attr, parse = HYPERPARAMETERS[key]
        try:
            known[attr] = parse(str(raw))
        except ValueError as err:
            bad.append((key, str(raw), f"does not parse ({err})"))
    hp = Hyperparameters(**known, extra=extra)
    ranges = [
        ("learningRate", hp.learning_rate > 0, "must be > 0"),
        ("epochs", hp.epochs >= 1, "must be >= 1"),
        ("batchSize", hp.batch_size >= 1, "must be >= 1"),
        ("dropout", 0 <= hp.dropout < 1, "must be in [0, 1)"),
        ("weightDecay", hp.weight_decay >= 0, "must be >= 0"),
        ("heldOutFraction", 0 < hp.held_out_fraction < 1, "must be in (0, 1)"),
    ]
    bad += [(key, str(values.get(key, "")), problem) for key, ok, problem in ranges if not ok]
    if bad:
        key, raw, problem = bad[0]
        others = "; ".join(f"{k}={v!r} {p}" for k, v, p in bad[1:])
        raise InvalidHyperparameter(
            f"spec.hyperparameters.{key}", raw, problem + (f"; also {others}" if others else "")
        )
    return hp


@dataclass(frozen=True)
class Runtime:
    """What a job's environment says about where it runs (training and batch prediction alike)."""

    feature_repo: str  # the Feast repository
    feast_config: str  # "local", "cluster" or a feature_store.yaml
    ray_num_cpus: float | None  # logical CPUs of a local Ray instance (None: what the workers need)
    pvc_root: str  # where pvc://CLAIM/PATH is mounted


def runtime(env: Mapping[str, str]) -> Runtime:
    cpus = env.get(RAY_CPUS_ENV)
    return Runtime(
        feature_repo=env.get(FEATURE_REPO_ENV) or DEFAULT_FEATURE_REPO,
        feast_config=env.get(FEAST_CONFIG_ENV) or "local",
        ray_num_cpus=float(cpus) if cpus else None,
        pvc_root=env.get(PVC_ROOT_ENV) or "/mnt/pvc",
    )


@dataclass(frozen=True)
class RunConfig:
    name: str
    namespace: str
    attempt: int
    spec: TrainingRunSpec
    hyperparameters: Hyperparameters
    feature_repo: str
    feast_config: str
    image: str
    ray_num_cpus: float | None
    pvc_root: str
    serving: ServingModel | None = None

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def _hp_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.churn.train",
        description=f"Train the churn model of the TrainingRun in ${RUN_CONFIG_ENV}.",
    )
    parser.add_argument(
        "--hp", action="append", type=_hp_pair, default=[], metavar="KEY=VALUE", help="a hyperparameter"
    )
    return parser


def load(argv: Sequence[str], env: Mapping[str, str], hyperparameters: bool = True) -> RunConfig:
    """The run's configuration; `--hp` arguments override spec.hyperparameters.

    Bad hyperparameters raise InvalidHyperparameter; `hyperparameters=False` leaves them at their
    defaults, so that the run's artifact location is known to report them."""
    args = argument_parser().parse_args(list(argv))
    raw = env.get(RUN_CONFIG_ENV)
    if not raw:
        raise ValueError(f"${RUN_CONFIG_ENV} is not set: it carries the TrainingRun (name, namespace, attempt, spec)")
    document = json.loads(raw)
    spec = TrainingRunSpec.model_validate(document["spec"])
    hp = parse_hyperparameters({**spec.hyperparameters, **dict(args.hp)}) if hyperparameters else Hyperparameters()
    where = runtime(env)
    return RunConfig(
        name=str(document["name"]),
        namespace=str(document.get("namespace", "")),
        attempt=int(document.get("attempt", 0)),
        spec=spec,
        hyperparameters=hp,
        feature_repo=where.feature_repo,
        feast_config=where.feast_config,
        image=env.get(IMAGE_ENV) or spec.image or "",  # the operator filled in its default image
        ray_num_cpus=where.ray_num_cpus,
        pvc_root=where.pvc_root,
        serving=ServingModel.model_validate(document["serving"]) if document.get("serving") else None,
    )
