"""The middleware's pure parts: which call a request is, body kinds, reading a body within limits,
the nulls KServe's responses carry, and what a 500 may say."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from kserve.errors import InferenceError, InvalidInput
from pipelines.predictor.http import (
    BodyTimeout,
    Call,
    ClientGone,
    Message,
    body_kind,
    drop_nulls,
    public_error,
    read_body,
    route,
)
from pipelines.predictor.instances import TooLarge
from pipelines.predictor.server import OneLineErrors


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("POST", "/v1/models/churn:predict", Call("predict", "churn")),
        ("POST", "/v2/models/churn/infer", Call("infer", "churn")),
        ("POST", "/v2/models/churn/versions/3/infer", Call("infer", "churn", "3")),
        ("GET", "/v2/models/churn", Call("metadata", "churn")),
        ("GET", "/v2/models/churn/versions/3", Call("metadata", "churn", "3")),
        ("GET", "/v2/models/churn/ready", Call("ready", "churn")),
        ("GET", "/v2/models/churn/versions/3/ready", Call("ready", "churn", "3")),
        ("GET", "/v2/models/churn/infer", None),
        ("POST", "/v2/models/churn", None),
        ("GET", "/v2/health/ready", None),
        ("GET", "/v1/models/churn", None),
        ("POST", "/v2/repository/models/churn/load", None),
        ("POST", "/v2/models/churn/versions/3/explain", None),
    ],
)
def test_route(method: str, path: str, call: Call | None) -> None:
    assert route(method, path) == call


def test_unversioned_routes() -> None:
    assert Call("infer", "m", "3").unversioned() == "/v2/models/m/infer"
    assert Call("ready", "m", "3").unversioned() == "/v2/models/m/ready"
    assert Call("metadata", "m", "3").unversioned() == "/v2/models/m"


def test_body_kinds() -> None:
    v1, v2 = Call("predict", "m"), Call("infer", "m")
    assert body_kind(v2, [(b"content-type", b"application/json")]) == "json"
    assert body_kind(v2, []) == "json"
    assert body_kind(v2, [(b"inference-header-content-length", b"12")]) == "binary"
    assert body_kind(v1, [(b"inference-header-content-length", b"12")]) == "json"
    assert body_kind(v1, [(b"content-type", b"application/cloudevents+json; charset=utf-8")]) == "cloudevent"
    assert body_kind(v2, [(b"ce-id", b"1")]) == "cloudevent"


def _read(messages: list[Message], limit: int = 100, timeout_s: float = 0.05) -> bytes:
    async def run() -> bytes:
        queue: asyncio.Queue[Message] = asyncio.Queue()
        for message in messages:
            queue.put_nowait(message)
        return await read_body(queue.get, limit, timeout_s)

    return asyncio.run(run())


def test_read_body_in_parts_within_the_limits() -> None:
    parts: list[Message] = [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": False},
    ]
    assert _read(parts) == b"abcd"
    with pytest.raises(TooLarge, match="larger than this server takes"):
        _read(parts, limit=3)
    with pytest.raises(BodyTimeout, match="no part of the body came"):
        _read(parts[:1])  # the rest never comes
    with pytest.raises(ClientGone):
        _read([parts[0], {"type": "http.disconnect"}])


def test_drop_nulls_json_and_binary() -> None:
    doc = {"model_name": "m", "model_version": None, "parameters": None, "outputs": [{"name": "p", "parameters": None}]}
    body, length = drop_nulls(orjson.dumps(doc))
    assert orjson.loads(body) == {"model_name": "m", "outputs": [{"name": "p"}]} and length is None
    head = orjson.dumps(doc)
    body, length = drop_nulls(head + b"\x00\x01", len(head))
    assert length is not None and orjson.loads(body[:length])["outputs"] == [{"name": "p"}]
    assert body[length:] == b"\x00\x01"
    assert drop_nulls(b"not json") == (b"not json", None)


def test_a_500_says_what_failed_not_how() -> None:
    torchscript = RuntimeError(
        "The following operation failed in the TorchScript interpreter.\n"
        "Traceback of TorchScript (most recent call last):\n"
        '  File "code/__torch__.py", line 12, in forward\n'
        "    raise RuntimeError('injected fault')\n"
        "builtins.RuntimeError: injected fault\n"
    )
    message = public_error(torchscript)
    assert message == "the model failed: builtins.RuntimeError: injected fault"
    assert "Traceback" not in message and "__torch__" not in message
    assert public_error(ValueError()) == "the model failed: ValueError"


def _record(exc: BaseException) -> logging.LogRecord:
    return logging.LogRecord("kserve", logging.ERROR, __file__, 1, "Exception:", (), (type(exc), exc, None))


def test_kserve_logs_a_client_error_in_one_line() -> None:
    one_line = OneLineErrors()
    record = _record(InvalidInput("bad input\nsecond line"))
    assert one_line.filter(record)
    assert record.exc_info is None and record.levelno == logging.INFO
    assert record.getMessage() == "InvalidInput: bad input"
    failed = _record(InferenceError("the model failed: x"))
    assert one_line.filter(failed) and failed.exc_info is None and failed.levelno == logging.ERROR
    other = _record(RuntimeError("unexpected"))
    assert one_line.filter(other) and other.exc_info is not None  # an unknown failure keeps its traceback
