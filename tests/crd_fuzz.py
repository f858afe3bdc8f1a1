"""Spec generation from our CRDs' own schemas, for tests/integration/test_fuzz_specs.py.

A CRD's structural schema is OpenAPI v3 with Kubernetes extensions. `generable` turns it into
plain JSON Schema (draft 7), keeping every constraint it can express exactly and leaving the
rest to the API server, whose refusals the test counts; `from_schema` makes a Hypothesis
strategy of it. Not hypothesis-jsonschema: its last release (0.23.1) relies on Hypothesis
internals that the Hypothesis we pin no longer has, and structural schemas use few keywords.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
CRD_FILES = {
    "TrainingRun": REPO / "crds" / "trainingruns.slipway.dev.yaml",
    "ModelVersion": REPO / "crds" / "modelversions.slipway.dev.yaml",
    "ModelDeployment": REPO / "crds" / "modeldeployments.slipway.dev.yaml",
}
# A Kubernetes resource.Quantity (apimachinery's grammar): signed number, then a binary-SI,
# decimal-SI or exponent suffix. `isQuantity` also refuses numbers that overflow; the server
# says so, and the test counts it as a refusal.
QUANTITY_PATTERN = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?[0-9]+)?$"
# A CEL rule that is exactly a regular expression on the string itself.
_MATCHES = re.compile(r"^self\.matches\('(?P<re>[^']*)'\)$")
# The keywords JSON Schema and OpenAPI share; anything else (x-kubernetes-*, description, default,
# nullable, format) is dropped. `format` is never used in our CRDs; were it, the server checks it.
_KEEP = {
    "type",
    "properties",
    "additionalProperties",
    "items",
    "required",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "multipleOf",
    "anyOf",
    "allOf",
    "oneOf",
}


def spec_schema(kind: str) -> dict[str, Any]:
    """`spec.versions[*].schema.openAPIV3Schema.properties.spec` of `kind`'s CRD (one version)."""
    crd = yaml.safe_load(CRD_FILES[kind].read_text())
    (version,) = crd["spec"]["versions"]
    return dict(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def generable(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema (draft 7) for hypothesis-jsonschema from a CRD's structural schema.

    - `x-kubernetes-int-or-string: true` (no `type`) -> `anyOf: [integer, string]`.
    - `x-kubernetes-validations`: CEL cannot be generated against. A rule that is exactly
      `self.matches('RE')` becomes `pattern: RE`, and `isQuantity(self)` the quantity grammar
      above (the same constraint in JSON Schema, so most strings pass); every other rule
      (cross-field ones: min <= max, increasing weights, immutability) is dropped and enforced
      by the server only: those refusals are expected.
    - `exclusiveMinimum/Maximum: true` (OpenAPI 3.0's boolean) -> draft 7's number form.
    - An object with `properties` and no `additionalProperties` gets `additionalProperties:
      false`: the server prunes unknown fields, so generating them only wastes examples.
    - Other `x-kubernetes-*`, `default`, `description`, `nullable`: dropped (the server applies
      defaults itself; nothing here is nullable).
    """
    out: dict[str, Any] = {key: value for key, value in schema.items() if key in _KEEP}
    if schema.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for rule in schema.get("x-kubernetes-validations", []):
        expr = rule["rule"].strip()
        match = _MATCHES.match(expr)
        if match and schema.get("type") == "string":
            out["pattern"] = match["re"]
        elif expr == "isQuantity(self)" and schema.get("type") == "string":
            out["pattern"] = QUANTITY_PATTERN
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(exclusive) is True:
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            del out[exclusive]
    if "properties" in out:
        out["properties"] = {name: generable(sub) for name, sub in out["properties"].items()}
        out.setdefault("additionalProperties", False)
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = generable(out["additionalProperties"])
    if isinstance(out.get("items"), dict):
        out["items"] = generable(out["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in out:
            out[key] = [generable(sub) for sub in out[key]]
    return out


# Sizes drawn for what the schema leaves open or allows large: big enough for edge cases
# (empty, one, several), small enough that a batch of specs stays cheap to apply.
MAX_DRAWN_ITEMS = 4
MAX_DRAWN_TEXT = 80
_HANDLED = {"type", "properties", "additionalProperties", "items", "required", "enum", "anyOf"} | {
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
}


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid under `schema` (the output of `generable`). A keyword it does not know fails
    loudly, so a new kind of field in a CRD is never silently generated wrong."""
    unknown = set(schema) - _HANDLED
    if unknown:
        raise NotImplementedError(f"no generator for {sorted(unknown)} in {schema}")
    if "anyOf" in schema:
        return st.one_of([from_schema(sub) for sub in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        return _object(schema)
    if kind == "array":
        items = from_schema(schema.get("items", {"type": "string"}))
        low = schema.get("minItems", 0)
        return st.lists(items, min_size=low, max_size=max(low, min(schema.get("maxItems", low + 4), low + 4)))
    if kind == "string":
        low, high = schema.get("minLength", 0), schema.get("maxLength", MAX_DRAWN_TEXT)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True).filter(lambda s: low <= len(s) <= high)
        return st.text(min_size=low, max_size=max(low, min(high, MAX_DRAWN_TEXT)))
    if kind == "integer":  # Kubernetes' integers are int64: a larger one is not even a value there
        low, high = schema.get("minimum", -(2**63)), schema.get("maximum", 2**63 - 1)
        low = schema["exclusiveMinimum"] + 1 if "exclusiveMinimum" in schema else low
        high = schema["exclusiveMaximum"] - 1 if "exclusiveMaximum" in schema else high
        return st.integers(min_value=low, max_value=high)
    if kind == "number":
        low = schema.get("exclusiveMinimum", schema.get("minimum"))
        high = schema.get("exclusiveMaximum", schema.get("maximum"))
        floats = st.floats(
            min_value=low,
            max_value=high,
            exclude_min="exclusiveMinimum" in schema,
            exclude_max="exclusiveMaximum" in schema,
            allow_nan=False,
            allow_infinity=False,
        )
        return floats | st.integers(  # JSON has one number type: whole numbers arrive as ints too
            min_value=-(2**63) if low is None else int(low) + 1, max_value=2**63 - 1 if high is None else int(high)
        )
    if kind == "boolean":
        return st.booleans()
    raise NotImplementedError(f"no generator for type {kind!r} in {schema}")


def _object(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    properties = schema.get("properties", {})
    required = set(schema.get("required", ()))
    if properties:
        return st.fixed_dictionaries(
            {name: from_schema(sub) for name, sub in properties.items() if name in required},
            optional={name: from_schema(sub) for name, sub in properties.items() if name not in required},
        )
    values = schema.get("additionalProperties", {"type": "string"})
    low = schema.get("minProperties", 0)
    high = max(low, min(schema.get("maxProperties", low + MAX_DRAWN_ITEMS), low + MAX_DRAWN_ITEMS))
    return st.dictionaries(st.text(max_size=MAX_DRAWN_TEXT), from_schema(values), min_size=low, max_size=high)
