"""Shared pieces of the typed API: the model base class, CEL rule helpers and conditions.

Every schema rule lives next to the field it guards, so `crds/` (generated from these types)
and the operator (which parses objects with them) can never disagree.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DURATION_PATTERN = "^([0-9]+([.][0-9]+)?(ms|s|m|h))+$"  # no backslashes: it is embedded in CEL
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# What KubeRay (RayJob names) and KServe (InferenceService names) accept: a DNS-1035 label.
DNS_1035_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
ARTIFACT_SCHEMES = ("s3", "gs", "file", "pvc")


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class StatusModel(BaseModel):
    """Base of status types: camelCase on the wire, lenient when reading older objects."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


def rule(expr: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One CEL `x-kubernetes-validations` entry; `field_path` points the error at a child."""
    entry = {"rule": expr, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def rules(*entries: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(entries)}


def cel(*entries: dict[str, str]) -> ConfigDict:
    """Model config carrying object-level CEL rules (rules that compare sibling fields)."""
    return ConfigDict(json_schema_extra=rules(*entries))


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
# The longest duration there is: 100 years, which no pause, deadline or delay outlasts. The schema
# allows 31 digits, and a datetime plus a timedelta of that many hours overflows (OverflowError).
MAX_DURATION_SECONDS = 100 * 365 * 24 * 3600.0


def seconds(duration: str) -> float:
    """A duration the schema accepted (e.g. 1m30s, 500ms) in seconds, at most MAX_DURATION_SECONDS."""
    total = sum(float(n) * _DURATION_UNITS[unit] for n, unit in re.findall(r"([0-9.]+)(ms|s|m|h)", duration))
    return min(total, MAX_DURATION_SECONDS)


def duration_rule(field: str) -> dict[str, Any]:
    return rules(
        rule(
            f"self.matches('{DURATION_PATTERN}')",
            f"{field} must be a duration such as 500ms, 30s, 5m or 1h",
        )
    )


def quantity_rule(field: str) -> dict[str, Any]:
    return rules(rule("isQuantity(self)", f"{field} must be a Kubernetes quantity such as 512Mi, 16Gi or 2"))


def uri_rule(field: str, schemes: tuple[str, ...]) -> dict[str, Any]:
    alternatives = "|".join(schemes)
    listed = ", ".join(f"{s}://" for s in schemes)
    return rules(rule(f"self.matches('^({alternatives})://.+')", f"{field} must be a URI starting with {listed}"))


def version_rule() -> dict[str, Any]:
    """spec.version of the kinds that pick a ModelVersion: a number from 1, or 'latest'."""
    return rules(
        rule(
            "type(self) == int ? self >= 1 : (self == 'latest' || self.matches('^[1-9][0-9]*$'))",
            "spec.version must be 'latest' or a version number of at least 1",
        )
    )


def dns_label_rule(field: str) -> dict[str, Any]:
    return rules(
        rule(
            f"self.matches('{DNS_LABEL_PATTERN}')",
            f"{field} must be a DNS-1123 label: lowercase letters, digits and '-', "
            "starting and ending with a letter or digit",
        )
    )


def object_name_rule(children: str, max_length: int) -> dict[str, str]:
    """A root-level rule on metadata.name (the only metadata CEL may read): a name the children's
    controllers would refuse is refused at apply, instead of leaving a child stuck later."""
    return rule(
        f"self.metadata.name.matches('{DNS_1035_PATTERN}') && size(self.metadata.name) <= {max_length}",
        f"metadata.name must be a DNS-1035 label of at most {max_length} characters: a lowercase letter "
        f"first, then lowercase letters, digits or '-', no dots ({children} refuse other names)",
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """A Kubernetes API convention condition."""

    type: str = Field(description="Type of condition, e.g. Ready.", max_length=64)
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field("", description="CamelCase reason for the last transition.", max_length=128)
    message: str = Field("", description="Human-readable detail of the last transition.", max_length=4096)
    observed_generation: int | None = Field(
        None, description="The .metadata.generation this condition was computed from."
    )
    last_transition_time: str | None = Field(None, description="When the status last changed (RFC 3339).")


CONDITIONS_LIST: dict[str, Any] = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


def conditions_field() -> Any:
    return Field(
        default_factory=list,
        description="Current state of the resource, following the Kubernetes API conventions.",
        json_schema_extra=CONDITIONS_LIST,
        max_length=16,
    )


# The name of a Secret or ServiceAccount: a DNS-1123 subdomain.
SECRET_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
