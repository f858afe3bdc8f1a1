"""Request bodies -> a float32 matrix in the model's feature order (and entity keys to look up).

Pure functions; every problem is a `BadRequest` whose message names the instance and the feature.
NaN in the matrix means "not given": the online store fills it when the row has an entity key,
otherwise the model imputes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

Key = int | str

NUMERIC_DATATYPES = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"})
KEY_DATATYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BYTES"})
OUTPUT_NAME = "predictions"


class BadRequest(ValueError):
    """The request is wrong; the message says what to fix (answered with 400)."""


@dataclass(frozen=True)
class Schema:
    """What a request is checked against: the model's features and, with enrichment, the entity key."""

    features: tuple[str, ...]
    entity_key: str | None = None
    key_type: type[int] | type[str] = int
    index: Mapping[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {name: i for i, name in enumerate(self.features)})


@dataclass(frozen=True)
class Instances:
    """Rows to score: `values` (N, n_features) float32, NaN = not given; `keys` per row (None: no lookup)."""

    values: np.ndarray
    keys: tuple[Key | None, ...]

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class V2Input:
    """One input tensor of an open-inference-protocol request."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: Any


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: object, where: str, feature: str) -> float:
    kind = type(value)
    if kind is float or kind is int:
        return float(value)  # type: ignore[arg-type]
    if value is None:
        return math.nan
    raise BadRequest(f"{where}: feature {feature!r} must be a number or null, got {_describe(value)}")


def parse_key(value: object, schema: Schema, where: str) -> Key:
    """An entity key of the store's type (integer keys may come as digit strings in BYTES tensors)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if schema.key_type is int:
        if type(value) is int:
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise BadRequest(f"{where}: {schema.entity_key} must be an integer, got {_describe(value)}")
    if isinstance(value, str):
        return value
    raise BadRequest(f"{where}: {schema.entity_key} must be a string, got {_describe(value)}")


def _feature_list(schema: Schema) -> str:
    names = schema.features
    return ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + ", ..."


def _row(instance: object, i: int, schema: Schema) -> tuple[list[float], Key | None]:
    where = f"instance {i}"
    n = len(schema.features)
    if isinstance(instance, dict):
        row = [math.nan] * n
        key: Key | None = None
        index = schema.index
        for name, value in instance.items():
            j = index.get(name)
            if j is not None:
                row[j] = _number(value, where, name)
            elif name == schema.entity_key:
                key = parse_key(value, schema, where)
            else:
                hint = "" if schema.entity_key else " (online features are not enabled on this server)"
                raise BadRequest(f"{where}: unknown feature {name!r}{hint}; the model takes: {_feature_list(schema)}")
        if schema.entity_key and key is None:
            raise BadRequest(
                f"{where}: missing entity key {schema.entity_key!r}: with online features an object "
                f"instance names its entity (or send a list of all {n} feature values)"
            )
        return row, key
    if isinstance(instance, list):
        if len(instance) != n:
            raise BadRequest(
                f"{where} has {len(instance)} values; the model takes {n} in this order: {_feature_list(schema)}"
            )
        return [_number(v, where, schema.features[j]) for j, v in enumerate(instance)], None
    raise BadRequest(
        f"{where} must be an object of feature values or a list of {n} numbers, got {type(instance).__name__}"
    )


def parse_instances(instances: object, schema: Schema) -> Instances:
    """v1 `instances`: objects (feature name -> number, plus the entity key) or lists in feature order."""
    if not isinstance(instances, list):
        raise BadRequest(f'"instances" must be a list, got {type(instances).__name__}')
    if not instances:
        raise BadRequest('"instances" is empty: send at least one instance')
    rows: list[list[float]] = []
    keys: list[Key | None] = []
    for i, instance in enumerate(instances):
        row, key = _row(instance, i, schema)
        rows.append(row)
        keys.append(key)
    return Instances(np.array(rows, dtype=np.float32), tuple(keys))


def parse_v1(body: object, schema: Schema) -> Instances:
    """A v1 predict body: `{"instances": [...]}`."""
    if not isinstance(body, dict) or "instances" not in body:
        raise BadRequest('the request body must be a JSON object with "instances": [...]')
    return parse_instances(body["instances"], schema)


def v2_inputs(body: object) -> list[V2Input]:
    """The inputs of a v2 infer body (JSON), checked for shape."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise BadRequest('the request body must be a JSON object with "inputs": [...]')
    inputs = []
    for k, raw in enumerate(body["inputs"]):
        if not isinstance(raw, dict):
            raise BadRequest(f"input {k} must be an object with name, shape, datatype and data")
        missing = [f for f in ("name", "shape", "datatype", "data") if f not in raw]
        if missing:
            raise BadRequest(f"input {k} lacks {', '.join(missing)}")
        shape = raw["shape"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise BadRequest(f"input {raw['name']!r}: shape must be a list of non-negative integers")
        inputs.append(V2Input(str(raw["name"]), str(raw["datatype"]).upper(), tuple(shape), raw["data"]))
    return inputs


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    for part in data:
        out.extend(_flat(part))
    return out


def parse_v2(inputs: Sequence[V2Input], schema: Schema) -> Instances:
    """One input: numbers of shape [N, n_features]; entity keys [N] named by the entity key; or
    BYTES [N] holding v1 instances as JSON text."""
    if len(inputs) != 1:
        raise BadRequest(f"expected exactly one input, got {len(inputs)}")
    (inp,) = inputs
    n = len(schema.features)
    where = f"input {inp.name!r}"
    if schema.entity_key and inp.name == schema.entity_key:
        if inp.datatype not in KEY_DATATYPES:
            raise BadRequest(f"{where}: entity keys must be an integer type or BYTES, got {inp.datatype}")
        if len(inp.shape) not in (1, 2) or (len(inp.shape) == 2 and inp.shape[1] != 1):
            raise BadRequest(f"{where}: entity keys must have shape [N] or [N, 1], got {list(inp.shape)}")
        keys = _flat(inp.data)
        if len(keys) != inp.shape[0]:
            raise BadRequest(f"{where}: shape {list(inp.shape)} but {len(keys)} values")
        if not keys:
            raise BadRequest(f"{where} is empty: send at least one entity key")
        parsed = tuple(parse_key(k, schema, f"{where}[{i}]") for i, k in enumerate(keys))
        return Instances(np.full((len(parsed), n), np.nan, dtype=np.float32), parsed)
    if inp.datatype == "BYTES":
        texts = _flat(inp.data)
        if len(texts) != math.prod(inp.shape):
            raise BadRequest(f"{where}: shape {list(inp.shape)} but {len(texts)} values")
        instances = []
        for i, text in enumerate(texts):
            try:
                instances.append(orjson.loads(text) if isinstance(text, str | bytes) else text)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"{where}[{i}] is not JSON: {exc}") from None
        return parse_instances(instances, schema)
    if inp.datatype not in NUMERIC_DATATYPES:
        raise BadRequest(f"{where}: unsupported datatype {inp.datatype}; send FP32 of shape [N, {n}]")
    if len(inp.shape) != 2 or inp.shape[1] != n:
        raise BadRequest(f"{where}: shape must be [N, {n}] (features: {_feature_list(schema)}), got {list(inp.shape)}")
    if inp.shape[0] == 0:
        raise BadRequest(f"{where} is empty: send at least one row")
    flat = _flat(inp.data)
    if len(flat) != inp.shape[0] * n:
        raise BadRequest(f"{where}: shape {list(inp.shape)} needs {inp.shape[0] * n} values, got {len(flat)}")
    for i, v in enumerate(flat):
        if type(v) is not float and type(v) is not int and v is not None:
            row, col = divmod(i, n)
            raise BadRequest(
                f"{where}: row {row}, feature {schema.features[col]!r} must be a number or null, got {_describe(v)}"
            )
    values = np.array(flat, dtype=np.float32)
    return Instances(values.reshape(inp.shape[0], n), (None,) * inp.shape[0])


def v2_response(model_name: str, version: str, request_id: str | None, predictions: Sequence[float]) -> dict[str, Any]:
    """The open-inference-protocol response: one FP32 output `predictions` of shape [N]."""
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": version or None,
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [len(predictions)], "data": predictions}],
    }
    if request_id:
        response["id"] = request_id
    return response
