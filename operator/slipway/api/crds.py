"""Generates the CustomResourceDefinitions from the typed API: the one schema source.

Pydantic's JSON schema is turned into a structural OpenAPI v3 schema: references inlined,
optional unions collapsed, `int | str` as int-or-string, titles dropped, and the CEL rules that
sit on the types carried over as `x-kubernetes-validations`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel

from .. import GROUP, VERSION
from .base import object_name_rule
from .batchprediction import BatchPredictionSpec, BatchPredictionStatus
from .modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from .modelversion import ModelVersionSpec, ModelVersionStatus
from .trainingrun import TrainingRunSpec, TrainingRunStatus
from .trainingschedule import SCHEDULE_NAME_LIMIT, TrainingScheduleSpec, TrainingScheduleStatus

CATEGORY = "slipway"
MODEL_DEPLOYMENT_NAME_LIMIT = 63 - len("-v999999-predictor")


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: list[str]
    spec: type[BaseModel]
    status: type[BaseModel]
    description: str
    columns: list[dict[str, Any]]
    selectable_fields: list[str] = field(default_factory=list)
    rules: list[dict[str, str]] = field(default_factory=list)  # CEL rules on the whole object

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _column(name: str, path: str, type_: str = "string", description: str = "", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": type_, "jsonPath": path}
    if description:
        col["description"] = description
    if priority:
        col["priority"] = priority
    return col


AGE = _column("Age", ".metadata.creationTimestamp", "date")

KINDS: list[Kind] = [
    Kind(
        kind="TrainingRun",
        plural="trainingruns",
        short_names=["tr"],
        spec=TrainingRunSpec,
        status=TrainingRunStatus,
        description="A training job on Feast features, run by Ray Train through a KubeRay RayJob.",
        columns=[
            _column("Model", ".spec.model"),
            _column("Phase", ".status.phase"),
            _column("Workers", ".spec.scaling.workers", "integer"),
            _column("GPUs", ".spec.scaling.gpusPerWorker", "integer", "GPUs per worker"),
            _column("Metric", ".status.evaluation.value", "number", "The evaluation metric's value"),
            _column("Version", ".status.modelVersion", description="The ModelVersion made"),
            AGE,
        ],
        selectable_fields=[".spec.model"],
        # The name is a label value on the RayJob (at most 63) and the base of its name.
        rules=[object_name_rule("KubeRay's RayJobs", 63)],
    ),
    Kind(
        kind="ModelVersion",
        plural="modelversions",
        short_names=["mv"],
        spec=ModelVersionSpec,
        status=ModelVersionStatus,
        description="An immutable registry record of one trained model.",
        columns=[
            _column("Model", ".spec.model"),
            _column("Version", ".spec.version", "integer"),
            _column("Metric", ".status.metric"),
            _column("Gates", ".status.gatesPassed", "boolean", "Passed its gates"),
            AGE,
        ],
        selectable_fields=[".spec.model"],
    ),
    Kind(
        kind="ModelDeployment",
        plural="modeldeployments",
        short_names=["md"],
        spec=ModelDeploymentSpec,
        status=ModelDeploymentStatus,
        description="Serves a model through KServe with a Direct, Canary or BlueGreen rollout.",
        columns=[
            _column("Model", ".spec.model"),
            _column("Strategy", ".spec.strategy.type"),
            _column("Stable", ".status.stableVersion", "integer"),
            _column("Candidate", ".status.candidateVersion", "integer"),
            _column("Weight", ".status.canaryWeight", "integer", "Traffic percent on the candidate"),
            _column("Shadow", ".status.shadowPercent", "integer", "Percent mirrored to the candidate (shadow)"),
            _column("Step", ".status.step", "integer", "Current canary step (from 0)"),
            _column("Phase", ".status.phase"),
            _column("Reason", ".status.reason"),
            AGE,
            _column("URL", ".status.url", priority=1),
            _column("Message", ".status.message", priority=1),
        ],
        selectable_fields=[".spec.model"],
        # <name>-v<N>-predictor (KServe's Service) must stay a 63-character label up to v999999.
        rules=[object_name_rule("KServe's InferenceServices", MODEL_DEPLOYMENT_NAME_LIMIT)],
    ),
    Kind(
        kind="TrainingSchedule",
        plural="trainingschedules",
        short_names=["ts"],
        spec=TrainingScheduleSpec,
        status=TrainingScheduleStatus,
        description="Makes TrainingRuns from a template on a cron schedule, on input drift, or on request.",
        columns=[
            _column("Model", ".spec.template.model"),
            _column("Schedule", ".spec.schedule"),
            _column("Suspend", ".spec.suspend", "boolean"),
            _column("Last-Trigger", ".status.lastTrigger.type", description="cron, drift or manual"),
            _column("Triggered", ".status.lastTrigger.time", "date", "When the last run was made"),
            _column("Last-Version", ".status.lastSuccessfulRun.modelVersion", description="Of the newest success"),
            AGE,
            _column("Last-Run", ".status.lastTrigger.run", priority=1),
            _column("Next", ".status.nextScheduleTime", priority=1, description="The next cron time"),
        ],
        selectable_fields=[".spec.template.model"],
        # Its runs are named <name>-<trigger>-<id>, and a TrainingRun's name is at most 63.
        rules=[object_name_rule("its TrainingRuns' names", SCHEDULE_NAME_LIMIT)],
    ),
    Kind(
        kind="BatchPrediction",
        plural="batchpredictions",
        short_names=["bp"],
        spec=BatchPredictionSpec,
        status=BatchPredictionStatus,
        description="Scores a whole entity dataset with a registered ModelVersion (offline prediction) "
        "through a KubeRay RayJob.",
        columns=[
            _column("Model", ".spec.model"),
            _column("Version", ".status.version", "integer", "The version used ('latest' resolved)"),
            _column("Phase", ".status.phase"),
            _column("Rows", ".status.rowsWritten", "integer", "Prediction rows written"),
            _column("Rows/s", ".status.throughput", "number", "Rows scored per second, join included"),
            _column("Workers", ".spec.scaling.workers", "integer"),
            AGE,
            _column("Output", ".status.output", priority=1),
            _column("Message", ".status.message", priority=1),
        ],
        selectable_fields=[".spec.model"],
        # The name is a label value on the RayJob (at most 63) and the base of its name.
        rules=[object_name_rule("KubeRay's RayJobs", 63)],
    ),
]

_DROP = {"title", "$defs", "additionalProperties"}


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema for `model`, as the apiserver requires for CRDs."""
    raw = model.model_json_schema(by_alias=True)
    defs = raw.get("$defs", {})
    schema: dict[str, Any] = _convert(raw, defs)
    return schema


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        return _convert({**target, **node}, defs)  # siblings (description, rules) win over the target's
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if node.get("default", 0) is None:
            node.pop("default")
        types = sorted(o.get("type", "") for o in options)
        if types == ["integer", "string"]:
            node["x-kubernetes-int-or-string"] = True
        elif len(options) == 1:
            return _convert({**options[0], **node}, defs)
        else:
            raise ValueError(f"unsupported union in schema: {options}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "additionalProperties" and isinstance(value, dict):
            out[key] = _convert(value, defs)
        elif key in _DROP:
            continue
        elif key == "properties":
            required = set(node.get("required", []))
            out[key] = {name: _property(prop, name in required, defs) for name, prop in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum"):  # JSON Schema 2020 -> OpenAPI 3.0
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    return out


def _property(raw: dict[str, Any], required: bool, defs: dict[str, Any]) -> Any:
    converted = _convert(raw, defs)
    optional = "anyOf" in raw  # `X | None`: absent means "not set", so no default object
    if not required and not optional and "properties" in converted and "default" not in converted:
        # An omitted sub-object defaults to its fields' defaults, as the Python types do.
        converted["default"] = {
            name: prop["default"] for name, prop in converted["properties"].items() if "default" in prop
        }
    return converted


def crd(kind: Kind) -> dict[str, Any]:
    spec = structural_schema(kind.spec)
    status = structural_schema(kind.status)
    spec["description"] = kind.spec.__doc__.strip().splitlines()[0] if kind.spec.__doc__ else f"{kind.kind} spec."
    status["description"] = f"Observed state of the {kind.kind}, written by the operator."
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "subresources": {"status": {}},
        "additionalPrinterColumns": kind.columns,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "description": kind.description,
                "required": ["spec"],
                **({"x-kubernetes-validations": kind.rules} if kind.rules else {}),
                "properties": {
                    "apiVersion": {"type": "string", "description": "API version of the object."},
                    "kind": {"type": "string", "description": "Kind of the object."},
                    "metadata": {"type": "object"},
                    "spec": spec,
                    "status": status,
                },
            }
        },
    }
    if kind.selectable_fields:
        version["selectableFields"] = [{"jsonPath": p} for p in kind.selectable_fields]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": kind.name},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": kind.short_names,
                "categories": [CATEGORY],
            },
            "versions": [version],
        },
    }


HEADER = "# Generated by `slipway crds` from operator/slipway/api; do not edit.\n"


def render(kind: Kind) -> str:
    return HEADER + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def _peering_crd(kind: str, plural: str, scope: str) -> dict[str, Any]:
    """Kopf's peering kinds (leader election between operator replicas), with a schema of our own."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.kopf.dev"},
        "spec": {
            "group": "kopf.dev",
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "Kopf peering: which operator replicas are alive, for leader election.",
                            "properties": {"status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                        }
                    },
                }
            ],
        },
    }


PEERING_CRDS = [
    _peering_crd("ClusterKopfPeering", "clusterkopfpeerings", "Cluster"),
    _peering_crd("KopfPeering", "kopfpeerings", "Namespaced"),
]


def rendered_files() -> dict[str, str]:
    """File name -> YAML text for every CRD, as committed under crds/ and the chart's crds/."""
    files = {f"{kind.name}.yaml": render(kind) for kind in KINDS}
    for peering in PEERING_CRDS:
        files[f"{peering['metadata']['name']}.yaml"] = HEADER + yaml.safe_dump(peering, sort_keys=False, width=120)
    return files
