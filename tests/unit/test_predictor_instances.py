"""Request parsing: v1 instances and v2 inputs -> the feature matrix, and every 400 message."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from pipelines.predictor.instances import (
    BadRequest,
    Schema,
    V2Input,
    parse_v1,
    parse_v2,
    v2_inputs,
    v2_response,
)

FEATURES = ("sessions_30d", "monthly_charges", "tenure_months")
PLAIN = Schema(FEATURES)
ENRICHED = Schema(FEATURES, entity_key="customer_id", key_type=int)


def rows(values: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in values.tolist()]


def test_objects_and_lists_in_feature_order() -> None:
    got = parse_v1(
        {
            "instances": [
                {"monthly_charges": 70.5, "sessions_30d": 3, "tenure_months": 12},
                {"tenure_months": 4},  # missing names are NaN (imputed)
                [1, 2.5, None],  # null is missing too
            ]
        },
        PLAIN,
    )
    assert got.values.dtype == np.float32 and got.values.shape == (3, 3)
    assert rows(got.values) == [[3.0, 70.5, 12.0], [None, None, 4.0], [1.0, 2.5, None]]
    assert got.keys == (None, None, None)


def test_entity_keys_with_enrichment() -> None:
    got = parse_v1({"instances": [{"customer_id": 42}, {"customer_id": 7, "tenure_months": 3}, [1, 2, 3]]}, ENRICHED)
    assert got.keys == (42, 7, None)
    assert rows(got.values) == [[None, None, None], [None, None, 3.0], [1.0, 2.0, 3.0]]


@pytest.mark.parametrize(
    ("body", "schema", "message"),
    [
        ({"instances": []}, PLAIN, '"instances" is empty'),
        ({"inputs": []}, PLAIN, 'with "instances"'),
        ([1, 2], PLAIN, 'with "instances"'),
        ({"instances": {"a": 1}}, PLAIN, '"instances" must be a list'),
        ({"instances": [[1, 2]]}, PLAIN, "instance 0 has 2 values; the model takes 3 in this order: sessions_30d"),
        ({"instances": [[1, 2, 3], [1, 2, 3, 4]]}, PLAIN, "instance 1 has 4 values"),
        ({"instances": [{"monthly_charges": "abc"}]}, PLAIN, "instance 0: feature 'monthly_charges' must be a number"),
        ({"instances": [[1, "x", 3]]}, PLAIN, "feature 'monthly_charges' must be a number or null, got 'x'"),
        ({"instances": [{"tenure_months": True}]}, PLAIN, "feature 'tenure_months' must be a number"),
        ({"instances": [{"tenure": 1}]}, PLAIN, "unknown feature 'tenure' (online features are not enabled"),
        ({"instances": [{"customer_id": 1}]}, PLAIN, "unknown feature 'customer_id'"),
        ({"instances": [{"tenure_months": 1}]}, ENRICHED, "instance 0: missing entity key 'customer_id'"),
        ({"instances": [{"customer_id": "abc"}]}, ENRICHED, "customer_id must be an integer, got 'abc'"),
        ({"instances": [{"customer_id": 1.5}]}, ENRICHED, "customer_id must be an integer"),
        ({"instances": ["hello"]}, PLAIN, "instance 0 must be an object of feature values or a list of 3 numbers"),
    ],
)
def test_bad_v1_requests_say_what_is_wrong(body: object, schema: Schema, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_v1(body, schema)
    assert message in str(info.value)


def test_string_entity_keys() -> None:
    schema = Schema(FEATURES, entity_key="user", key_type=str)
    assert parse_v1({"instances": [{"user": "u1"}]}, schema).keys == ("u1",)
    with pytest.raises(BadRequest, match="user must be a string"):
        parse_v1({"instances": [{"user": 3}]}, schema)


def test_v2_numeric_tensor_flat_or_nested() -> None:
    flat = v2_inputs({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [1, 2, 3, 4, None, 6]}]})
    nested = [V2Input("x", "FP64", (2, 3), [[1, 2, 3], [4, None, 6]])]
    for inputs in (flat, nested):
        got = parse_v2(inputs, PLAIN)
        assert rows(got.values) == [[1.0, 2.0, 3.0], [4.0, None, 6.0]]
        assert got.keys == (None, None)


def test_v2_entity_keys_and_json_instances() -> None:
    keys = parse_v2([V2Input("customer_id", "INT64", (3,), [5, 6, 7])], ENRICHED)
    assert keys.keys == (5, 6, 7) and np.isnan(keys.values).all() and keys.values.shape == (3, 3)
    as_bytes = parse_v2([V2Input("customer_id", "BYTES", (2, 1), [["8"], [b"9"]])], ENRICHED)
    assert as_bytes.keys == (8, 9)
    texts = [orjson.dumps({"customer_id": 1, "tenure_months": 2}).decode(), "[1, 2, 3]"]
    got = parse_v2([V2Input("instances", "BYTES", (2,), texts)], ENRICHED)
    assert got.keys == (1, None)
    assert rows(got.values) == [[None, None, 2.0], [1.0, 2.0, 3.0]]


@pytest.mark.parametrize(
    ("inputs", "schema", "message"),
    [
        ([], PLAIN, "expected exactly one input, got 0"),
        ([V2Input("a", "FP32", (1, 3), [1, 2, 3])] * 2, PLAIN, "expected exactly one input, got 2"),
        ([V2Input("x", "FP32", (1, 2), [1, 2])], PLAIN, "input 'x': shape must be [N, 3]"),
        ([V2Input("x", "FP32", (2, 3), [1, 2, 3])], PLAIN, "shape [2, 3] needs 6 values, got 3"),
        ([V2Input("x", "FP32", (0, 3), [])], PLAIN, "input 'x' is empty"),
        ([V2Input("x", "FP32", (1, 3), [1, "a", 3])], PLAIN, "row 0, feature 'monthly_charges' must be a number"),
        ([V2Input("x", "BOOL", (1, 3), [True, False, True])], PLAIN, "unsupported datatype BOOL"),
        ([V2Input("x", "BYTES", (1,), ["{nope"])], PLAIN, "input 'x'[0] is not JSON"),
        ([V2Input("customer_id", "FP32", (1,), [1.0])], ENRICHED, "entity keys must be an integer type or BYTES"),
        ([V2Input("customer_id", "INT64", (2,), [1])], ENRICHED, "shape [2] but 1 values"),
        ([V2Input("customer_id", "INT64", (0,), [])], ENRICHED, "is empty"),
        ([V2Input("customer_id", "BYTES", (1,), ["x1"])], ENRICHED, "customer_id must be an integer"),
    ],
)
def test_bad_v2_requests_say_what_is_wrong(inputs: list[V2Input], schema: Schema, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_v2(inputs, schema)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": []}, 'with "inputs"'),
        ({"inputs": ["x"]}, "input 0 must be an object"),
        ({"inputs": [{"name": "x", "data": []}]}, "input 0 lacks shape, datatype"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, -3], "data": []}]}, "non-negative integers"),
    ],
)
def test_bad_v2_bodies(body: object, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        v2_inputs(body)
    assert message in str(info.value)


def test_v2_response_has_one_fp32_output() -> None:
    doc = v2_response("churn", "3", "req-1", [0.25, 0.5])
    assert doc == {
        "model_name": "churn",
        "model_version": "3",
        "id": "req-1",
        "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [2], "data": [0.25, 0.5]}],
    }
    assert "id" not in v2_response("churn", "", None, [0.1])
