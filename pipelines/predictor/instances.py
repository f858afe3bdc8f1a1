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

#: The open inference protocol's tensor datatypes (upper case, as the protocol spells them) and their numpy types.
DTYPES: Mapping[str, np.dtype[Any]] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = frozenset({*DTYPES, "BYTES"})
NUMERIC_DATATYPES = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32"})
KEY_DATATYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BYTES"})
INT_RANGES = {name: (int(np.iinfo(dt).min), int(np.iinfo(dt).max)) for name, dt in DTYPES.items() if dt.kind in "iu"}
FLOAT32_MAX = float(np.finfo(np.float32).max)
INT64_MIN, INT64_MAX = INT_RANGES["INT64"]
OUTPUT_NAME = "predictions"
FEATURES_INPUT = "features"  # the numeric input's name in the metadata (any name is accepted)
PLATFORM = "pytorch_torchscript"
MAX_ROWS = 10_000


class BadRequest(ValueError):
    """The request is wrong; the message says what to fix (answered with `status`: 400)."""

    status = 400


class TooLarge(BadRequest):
    """The request holds more than the server takes at once (413)."""

    status = 413


@dataclass(frozen=True)
class Schema:
    """What a request is checked against: the model's features and, with enrichment, the entity key."""

    features: tuple[str, ...]
    entity_key: str | None = None
    key_type: type[int] | type[str] = int
    max_rows: int = MAX_ROWS  # rows in one request; more is a 413
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
        try:
            number = float(value)  # type: ignore[arg-type]
        except OverflowError:
            number = math.inf
        if -FLOAT32_MAX <= number <= FLOAT32_MAX:
            return number
        # float32 would turn it into infinity, which the model reads as missing: refuse it
        raise BadRequest(f"{where}: feature {feature!r} is out of float32's range, got {_describe(value)}")
    if value is None:
        return math.nan
    raise BadRequest(f"{where}: feature {feature!r} must be a number or null, got {_describe(value)}")


def check_rows(count: int, schema: Schema, where: str) -> None:
    if count > schema.max_rows:
        raise TooLarge(f"{where} holds {count} rows; this server takes at most {schema.max_rows} in one request")


def parse_key(value: object, schema: Schema, where: str) -> Key:
    """An entity key of the store's type (integer keys may come as digit strings in BYTES tensors)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if schema.key_type is int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if type(value) is int:
            if INT64_MIN <= value <= INT64_MAX:
                return value
            raise BadRequest(f"{where}: {schema.entity_key} does not fit in int64, got {_describe(value)}")
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
    check_rows(len(instances), schema, '"instances"')
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


def _datatype(raw: object, where: str) -> str:
    if not isinstance(raw, str) or raw not in DATATYPES:
        raise BadRequest(
            f"{where}: datatype must be one of the protocol's (upper case): {', '.join(sorted(DATATYPES))}; "
            f"got {_describe(raw)}"
        )
    return raw


def v2_inputs(body: object, binary: bytes | None = None) -> list[V2Input]:
    """The inputs of a v2 infer body (the JSON part), checked for name, datatype and shape.

    `binary`: what follows the JSON in a binary-extension request; inputs with
    `parameters.binary_data_size` take their data from it, in order, and it must be used up.
    """
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise BadRequest('the request body must be a JSON object with "inputs": [...]')
    inputs = []
    offset = 0
    for k, raw in enumerate(body["inputs"]):
        if not isinstance(raw, dict):
            raise BadRequest(f"input {k} must be an object with name, shape, datatype and data")
        size = _binary_size(raw, k) if binary is not None else None
        missing = [f for f in ("name", "shape", "datatype", "data") if f not in raw and (f != "data" or size is None)]
        if missing:
            raise BadRequest(f"input {k} lacks {', '.join(missing)}")
        if not isinstance(raw["name"], str):
            raise BadRequest(f"input {k}: name must be a string, got {_describe(raw['name'])}")
        where = f"input {raw['name']!r}"
        shape = raw["shape"]
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise BadRequest(f"{where}: shape must be a list of non-negative integers")
        datatype = _datatype(raw["datatype"], where)
        data = raw.get("data")
        if size is not None and binary is not None:
            if offset + size > len(binary):
                raise BadRequest(f"{where}: binary_data_size is {size} but only {len(binary) - offset} bytes are left")
            data = decode_tensor(binary[offset : offset + size], datatype, tuple(shape), where)
            offset += size
        inputs.append(V2Input(raw["name"], datatype, tuple(shape), data))
    if binary is not None and offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes after the last input's binary data")
    return inputs


def _binary_size(raw: Mapping[str, Any], k: int) -> int | None:
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or "binary_data_size" not in parameters:
        return None
    size = parameters["binary_data_size"]
    if type(size) is not int or size < 0:
        raise BadRequest(f"input {k}: binary_data_size must be a non-negative integer, got {_describe(size)}")
    if "data" in raw:
        raise BadRequest(f"input {k} has both data and binary_data_size")
    return size


def decode_tensor(chunk: bytes, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray | list[bytes]:
    """One input's binary data: little-endian values, or BYTES as 4-byte lengths each followed by the bytes."""
    count = math.prod(shape)
    if datatype != "BYTES":
        dtype = DTYPES[datatype]
        if len(chunk) != count * dtype.itemsize:
            raise BadRequest(
                f"{where}: shape {list(shape)} needs {count * dtype.itemsize} bytes of {datatype}, got {len(chunk)}"
            )
        return np.frombuffer(chunk, dtype=dtype)
    items: list[bytes] = []
    pos = 0
    while pos < len(chunk):
        if pos + 4 > len(chunk):
            raise BadRequest(f"{where}: BYTES element {len(items)} is cut short")
        length = int.from_bytes(chunk[pos : pos + 4], "little")
        pos += 4
        if pos + length > len(chunk):
            raise BadRequest(f"{where}: BYTES element {len(items)} is cut short")
        items.append(chunk[pos : pos + length])
        pos += length
    if len(items) != count:
        raise BadRequest(f"{where}: shape {list(shape)} needs {count} BYTES elements, got {len(items)}")
    return items


HEADER_LENGTH = "Inference-Header-Content-Length"


def header_length(text: str, body_size: int) -> int:
    """The JSON part's length from the Inference-Header-Content-Length header."""
    stripped = text.strip()
    if not stripped.isascii() or not stripped.isdigit():
        raise BadRequest(f"{HEADER_LENGTH} must be a whole number of bytes, got {_describe(text)}")
    length = int(stripped)
    if length > body_size:
        raise BadRequest(f"{HEADER_LENGTH} is {length} but the body has only {body_size} bytes")
    return length


def split_binary(body: bytes, header: str) -> tuple[object, bytes]:
    """A binary-extension body -> (the JSON document, the binary data after it)."""
    length = header_length(header, len(body))
    try:
        doc = orjson.loads(body[:length])
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the first {length} bytes ({HEADER_LENGTH}) are not JSON: {exc}") from None
    return doc, body[length:]


def _flat(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    if not data or not isinstance(data[0], list):
        return data
    out: list[Any] = []
    for part in data:
        out.extend(_flat(part))
    return out


def _check_ints(values: Sequence[Any], datatype: str, where: str) -> None:
    """JSON data of an integer datatype: whole numbers within the type's range."""
    low, high = INT_RANGES[datatype]
    for i, v in enumerate(values):
        if type(v) is not int or not low <= v <= high:
            raise BadRequest(
                f"{where}[{i}]: {datatype} data must be whole numbers in [{low}, {high}], got {_describe(v)}"
            )


def _keys(inp: V2Input, schema: Schema, where: str) -> Instances:
    if inp.datatype not in KEY_DATATYPES:
        raise BadRequest(f"{where}: entity keys must be an integer type or BYTES, got {inp.datatype}")
    if len(inp.shape) not in (1, 2) or (len(inp.shape) == 2 and inp.shape[1] != 1):
        raise BadRequest(f"{where}: entity keys must have shape [N] or [N, 1], got {list(inp.shape)}")
    keys = inp.data.tolist() if isinstance(inp.data, np.ndarray) else _flat(inp.data)
    if len(keys) != inp.shape[0]:
        raise BadRequest(f"{where}: shape {list(inp.shape)} but {len(keys)} values")
    if not keys:
        raise BadRequest(f"{where} is empty: send at least one entity key")
    check_rows(len(keys), schema, where)
    if inp.datatype != "BYTES":
        _check_ints(keys, inp.datatype, where)
    parsed = tuple(parse_key(k, schema, f"{where}[{i}]") for i, k in enumerate(keys))
    return Instances(np.full((len(parsed), len(schema.features)), np.nan, dtype=np.float32), parsed)


def _numbers(inp: V2Input, schema: Schema, where: str) -> Instances:
    n = len(schema.features)
    if inp.datatype not in NUMERIC_DATATYPES:
        raise BadRequest(f"{where}: unsupported datatype {inp.datatype}; send FP32 of shape [N, {n}]")
    if len(inp.shape) != 2 or inp.shape[1] != n:
        raise BadRequest(f"{where}: shape must be [N, {n}] (features: {_feature_list(schema)}), got {list(inp.shape)}")
    if inp.shape[0] == 0:
        raise BadRequest(f"{where} is empty: send at least one row")
    check_rows(inp.shape[0], schema, where)
    if isinstance(inp.data, np.ndarray):  # binary data: already of the datatype and size
        wide = inp.data.astype(np.float64).reshape(inp.shape[0], n)
    else:
        flat = _flat(inp.data)
        if len(flat) != inp.shape[0] * n:
            raise BadRequest(f"{where}: shape {list(inp.shape)} needs {inp.shape[0] * n} values, got {len(flat)}")
        integer = inp.datatype in INT_RANGES
        for i, v in enumerate(flat):
            if (type(v) is not float or integer) and type(v) is not int and v is not None:
                row, col = divmod(i, n)
                kind = "a whole number" if integer else "a number"
                raise BadRequest(
                    f"{where}: row {row}, feature {schema.features[col]!r} must be {kind} or null ({inp.datatype}), "
                    f"got {_describe(v)}"
                )
        wide = np.array(flat, dtype=np.float64).reshape(inp.shape[0], n)  # null -> NaN
    with np.errstate(invalid="ignore"):
        outside = np.abs(wide) > FLOAT32_MAX
    if outside.any():
        row, col = (int(i) for i in np.argwhere(outside)[0])
        raise BadRequest(
            f"{where}: row {row}, feature {schema.features[col]!r} is out of float32's range, got {wide[row, col]!r}"
        )
    return Instances(wide.astype(np.float32), (None,) * inp.shape[0])


def parse_v2(inputs: Sequence[V2Input], schema: Schema) -> Instances:
    """One input: numbers of shape [N, n_features]; entity keys [N] named by the entity key; or
    BYTES [N] holding v1 instances as JSON text."""
    if len(inputs) != 1:
        raise BadRequest(f"expected exactly one input, got {len(inputs)}")
    (inp,) = inputs
    where = f"input {inp.name!r}"
    if inp.datatype not in DATATYPES:
        raise BadRequest(f"{where}: datatype must be one of the protocol's (upper case), got {_describe(inp.datatype)}")
    if schema.entity_key and inp.name == schema.entity_key:
        return _keys(inp, schema, where)
    if inp.datatype == "BYTES":
        texts = _flat(inp.data)
        if len(texts) != math.prod(inp.shape):
            raise BadRequest(f"{where}: shape {list(inp.shape)} but {len(texts)} values")
        check_rows(len(texts), schema, where)
        instances = []
        for i, text in enumerate(texts):
            try:
                instances.append(orjson.loads(text) if isinstance(text, str | bytes) else text)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"{where}[{i}] is not JSON: {exc}") from None
        return parse_instances(instances, schema)
    return _numbers(inp, schema, where)


def v2_response(model_name: str, version: str, request_id: str | None, predictions: Sequence[float]) -> dict[str, Any]:
    """The open-inference-protocol response: one FP32 output `predictions` of shape [N] (no nulls: the
    protocol's optional fields are left out, not null)."""
    response: dict[str, Any] = {
        "model_name": model_name,
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [len(predictions)], "data": predictions}],
    }
    if version:
        response["model_version"] = version
    if request_id:
        response["id"] = request_id
    return response


def wants_binary_output(body: object) -> bool:
    """Whether a v2 request asks for its output as binary data (the binary extension)."""
    if not isinstance(body, dict):
        return False
    parameters = body.get("parameters")
    if isinstance(parameters, dict) and parameters.get("binary_data_output") is True:
        return True
    outputs = body.get("outputs")
    if isinstance(outputs, list):
        for out in outputs:
            if isinstance(out, dict) and out.get("name") == OUTPUT_NAME:
                params = out.get("parameters")
                return isinstance(params, dict) and params.get("binary_data") is True
    return False


def binary_response(doc: dict[str, Any]) -> tuple[bytes, int]:
    """A v2 response with its output as binary data: (body, length of its JSON part)."""
    (output,) = doc["outputs"]
    data = np.asarray(output["data"], dtype="<f4").tobytes()
    header = {
        **doc,
        "outputs": [
            {**{k: v for k, v in output.items() if k != "data"}, "parameters": {"binary_data_size": len(data)}}
        ],
    }
    text = orjson.dumps(header)
    return text + data, len(text)


def tensors(schema: Schema) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The model's inputs and outputs as the protocol's metadata tensors."""
    inputs: list[dict[str, Any]] = [{"name": FEATURES_INPUT, "datatype": "FP32", "shape": [-1, len(schema.features)]}]
    if schema.entity_key:
        datatype = "INT64" if schema.key_type is int else "BYTES"
        inputs.append({"name": schema.entity_key, "datatype": datatype, "shape": [-1]})
    return inputs, [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1]}]


def v2_metadata(model_name: str, version: str, schema: Schema) -> dict[str, Any]:
    """GET /v2/models/<model>: the served version and the tensors (one input per request: either)."""
    inputs, outputs = tensors(schema)
    return {
        "name": model_name,
        "versions": [version] if version else [],
        "platform": PLATFORM,
        "inputs": inputs,
        "outputs": outputs,
    }
