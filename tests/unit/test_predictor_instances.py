"""Request parsing: v1 instances and v2 inputs -> the feature matrix, and every 400 message."""

from __future__ import annotations

import math

import numpy as np
import orjson
import pytest
from pipelines.predictor.instances import (
    FLOAT32_MAX,
    BadRequest,
    Schema,
    TooLarge,
    V2Input,
    binary_response,
    parse_v1,
    parse_v2,
    split_binary,
    v2_inputs,
    v2_metadata,
    v2_response,
    wants_binary_output,
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


# == values that do not fit, datatypes, the binary extension, metadata ========================================
@pytest.mark.parametrize(
    ("inputs", "schema", "message"),
    [
        ([V2Input("x", "FP32", (1, 3), [1, 1e300, 3])], PLAIN, "feature 'monthly_charges' is out of float32's range"),
        ([V2Input("x", "FP64", (1, 3), [[-1e39, 0, 0]])], PLAIN, "feature 'sessions_30d' is out of float32's range"),
        ([V2Input("x", "INT64", (1, 3), [1, 1.5, 3])], PLAIN, "must be a whole number or null (INT64), got 1.5"),
        ([V2Input("x", "fp32", (1, 3), [1, 2, 3])], PLAIN, "datatype must be one of the protocol's (upper case)"),
        ([V2Input("customer_id", "INT64", (1,), [2**63])], ENRICHED, "INT64 data must be whole numbers"),
        ([V2Input("customer_id", "INT64", (1,), [1.5])], ENRICHED, "INT64 data must be whole numbers"),
        ([V2Input("customer_id", "INT8", (1,), [300])], ENRICHED, "INT8 data must be whole numbers in [-128, 127]"),
        ([V2Input("customer_id", "BYTES", (1,), ["99999999999999999999"])], ENRICHED, "does not fit in int64"),
        (
            [V2Input("x", "FP32", (10_001, 3), [[0, 0, 0]] * 10_001)],
            PLAIN,
            "holds 10001 rows; this server takes at most 10000",
        ),
    ],
)
def test_values_that_do_not_fit_are_refused(inputs: list[V2Input], schema: Schema, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_v2(inputs, schema)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("body", "schema", "message"),
    [
        ({"instances": [{"monthly_charges": 1e300}]}, PLAIN, "feature 'monthly_charges' is out of float32's range"),
        ({"instances": [[10**400, 0, 0]]}, PLAIN, "feature 'sessions_30d' is out of float32's range"),
        ({"instances": [{"customer_id": 2**64}]}, ENRICHED, "customer_id does not fit in int64"),
        ({"instances": [{"customer_id": -(2**63) - 1}]}, ENRICHED, "customer_id does not fit in int64"),
    ],
)
def test_v1_values_that_do_not_fit_are_refused(body: object, schema: Schema, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_v1(body, schema)
    assert message in str(info.value)


def test_too_many_rows_is_a_413() -> None:
    small = Schema(FEATURES, max_rows=2)
    with pytest.raises(TooLarge) as info:
        parse_v1({"instances": [[1, 2, 3]] * 3}, small)
    assert info.value.status == 413 and "at most 2" in str(info.value)
    assert len(parse_v1({"instances": [[1, 2, 3]] * 2}, small)) == 2
    assert parse_v1({"instances": [[FLOAT32_MAX, 0, 0]]}, PLAIN).values[0, 0] == FLOAT32_MAX


def binary_body(header: dict[str, object], *chunks: bytes) -> tuple[bytes, str]:
    text = orjson.dumps(header)
    return text + b"".join(chunks), str(len(text))


def test_binary_tensors() -> None:
    values = np.array([[1, 2, 3], [4, np.nan, 6]], dtype="<f4").tobytes()
    inp = {"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": len(values)}}
    body, length = binary_body({"inputs": [inp]}, values)
    doc, data = split_binary(body, length)
    got = parse_v2(v2_inputs(doc, data), PLAIN)
    assert rows(got.values) == [[1.0, 2.0, 3.0], [4.0, None, 6.0]]
    keys = np.array([5, 6], dtype="<i8").tobytes()
    inp = {"name": "customer_id", "datatype": "INT64", "shape": [2], "parameters": {"binary_data_size": 16}}
    doc, data = split_binary(*binary_body({"inputs": [inp]}, keys))
    assert parse_v2(v2_inputs(doc, data), ENRICHED).keys == (5, 6)
    strings = b"".join(len(s).to_bytes(4, "little") + s for s in (b"7", b"8"))
    inp = {"name": "customer_id", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": len(strings)}}
    doc, data = split_binary(*binary_body({"inputs": [inp]}, strings))
    assert parse_v2(v2_inputs(doc, data), ENRICHED).keys == (7, 8)


@pytest.mark.parametrize("length", ["abc", "1.5", "", "-1", "99999"])
def test_a_bad_header_length_names_the_header(length: str) -> None:
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        split_binary(b'{"inputs": []}', length)


@pytest.mark.parametrize(
    ("size", "data", "message"),
    [
        (8, np.zeros(2, dtype="<f4").tobytes(), "shape [1, 3] needs 12 bytes of FP32, got 8"),
        (12, np.zeros(2, dtype="<f4").tobytes(), "binary_data_size is 12 but only 8 bytes are left"),
        (12, np.zeros(4, dtype="<f4").tobytes(), "4 bytes after the last input's binary data"),
        (-1, b"", "binary_data_size must be a non-negative integer"),
    ],
)
def test_binary_tensors_that_do_not_fill_their_shape(size: int, data: bytes, message: str) -> None:
    inp = {"name": "x", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": size}}
    doc, rest = split_binary(*binary_body({"inputs": [inp]}, data))
    with pytest.raises(BadRequest) as info:
        v2_inputs(doc, rest)
    assert message in str(info.value)


def test_binary_output_is_asked_for_and_given() -> None:
    assert wants_binary_output({"parameters": {"binary_data_output": True}})
    assert wants_binary_output({"outputs": [{"name": "predictions", "parameters": {"binary_data": True}}]})
    assert not wants_binary_output({"outputs": [{"name": "predictions"}]})
    assert not wants_binary_output({"inputs": []})
    body, length = binary_response(v2_response("churn", "3", None, [0.25, 0.5]))
    head = orjson.loads(body[:length])
    assert head["outputs"] == [
        {"name": "predictions", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}
    ]
    assert np.frombuffer(body[length:], dtype="<f4").tolist() == [0.25, 0.5]


def test_metadata_declares_the_tensors_and_the_version() -> None:
    assert v2_metadata("churn", "3", ENRICHED) == {
        "name": "churn",
        "versions": ["3"],
        "platform": "pytorch_torchscript",
        "inputs": [
            {"name": "features", "datatype": "FP32", "shape": [-1, 3]},
            {"name": "customer_id", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "predictions", "datatype": "FP32", "shape": [-1]}],
    }
    plain = v2_metadata("churn", "", PLAIN)
    assert plain["versions"] == [] and [i["name"] for i in plain["inputs"]] == ["features"]
    assert "model_version" not in v2_response("churn", "", None, [0.1])
