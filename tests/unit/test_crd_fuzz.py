"""tests/crd_fuzz.py: the structural schema -> JSON Schema transform, and values valid under it."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.crd_fuzz import CRD_FILES, QUANTITY_PATTERN, from_schema, generable, spec_schema


def test_kubernetes_extensions_become_json_schema() -> None:
    structural = {
        "type": "object",
        "x-kubernetes-validations": [{"rule": "self.a <= self.b", "message": "cross-field: the server's"}],
        "properties": {
            "version": {"x-kubernetes-int-or-string": True, "default": "latest"},
            "model": {"type": "string", "x-kubernetes-validations": [{"rule": "self.matches('^[a-z]+$')"}]},
            "memory": {"type": "string", "x-kubernetes-validations": [{"rule": "isQuantity(self)"}]},
            "cpus": {"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 8},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }
    assert generable(structural) == {
        "type": "object",
        "additionalProperties": False,  # the server prunes unknown fields: none are generated
        "properties": {
            "version": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "model": {"type": "string", "pattern": "^[a-z]+$"},
            "memory": {"type": "string", "pattern": QUANTITY_PATTERN},
            "cpus": {"type": "number", "exclusiveMinimum": 0, "maximum": 8},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    }


def test_a_keyword_without_a_generator_fails_loudly() -> None:
    with pytest.raises(NotImplementedError, match="oneOf"):
        from_schema({"oneOf": [{"type": "string"}]})


@pytest.mark.parametrize("kind", sorted(CRD_FILES))
def test_generated_specs_are_valid_under_the_generable_schema(kind: str) -> None:
    schema = generable(spec_schema(kind))
    drawn: list[dict[str, Any]] = []

    @seed(0)
    @settings(
        max_examples=25, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck)
    )
    @given(from_schema(schema))
    def collect(spec: dict[str, Any]) -> None:
        drawn.append(spec)

    collect()
    assert len(drawn) > 10
    for spec in drawn:
        jsonschema.validate(spec, schema)
