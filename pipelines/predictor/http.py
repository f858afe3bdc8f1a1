"""The HTTP side: the served model's protocol surface, request metrics, and a direct path for bodies.

`PredictMiddleware` sits in KServe's FastAPI app (pure ASGI, added before the server starts).
For the served model's routes it

- answers `GET /v2/models/<m>[/versions/<v>]` (metadata: KServe's names no version and no
  tensors) and serves `/versions/<v>/...` for the server's revision by handing the unversioned
  route on (KServe answers every versioned route 501); any other version, or another model on a
  versioned route, is a 404;
- for `POST /v1/models/<m>:predict` and `POST /v2/models/<m>[/versions/<v>]/infer`: counts the
  request by outcome and times it (`slipway_requests_total`, `slipway_request_duration_seconds`),
  whoever answers it; reads the body itself, bounded in bytes (413) and in the wait for each part
  (408); checks binary v2 bodies (a 400 naming the header or the input, never KServe's 500);
  announces the request to the batcher as soon as it arrives, so a batch being formed waits
  (bounded) only for requests that are really on their way;
- with `direct` (the default): answers JSON and binary v2 bodies itself with the same parsing and
  scoring as the `kserve.Model`, skipping FastAPI's routing, validation and KServe's dataplane
  (most of the per-request cost for a model this small; see bench/README.md). CloudEvents go to
  KServe. Without `direct`, KServe answers, and the middleware only drops the nulls KServe's v2
  response carries for optional fields (the protocol leaves them out).

Requests for other models are KServe's (its 404) and are not counted: the metrics are the served
model's, which the canary analysis reads.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from .instances import (
    BadRequest,
    Instances,
    Schema,
    TooLarge,
    binary_response,
    parse_v1,
    parse_v2,
    split_binary,
    v2_inputs,
    v2_metadata,
    v2_response,
    wants_binary_output,
)
from .scorer import ARRIVAL, BatchScorer

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

V1_PREDICT = re.compile(r"^/v1/models/([^/]+):predict$")
V2_MODEL = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
V2_KINDS = {None: "metadata", "/ready": "ready", "/infer": "infer"}
JSON_HEADERS = [(b"content-type", b"application/json")]
OFFLOAD_BYTES = 64 << 10  # bodies larger than this are parsed in a thread: the event loop keeps serving
CLIENT_CLOSED = 499  # nginx's status for a client that went away before the answer (a client error)


@dataclass(frozen=True)
class Call:
    """A request for one model: `kind` is predict (v1), infer, metadata or ready (v2)."""

    kind: str
    model: str
    version: str | None = None

    @property
    def protocol(self) -> str:
        return "v1" if self.kind == "predict" else "v2"

    @property
    def counted(self) -> bool:
        return self.kind in ("predict", "infer")

    def unversioned(self) -> str:
        """The route KServe serves for this call without the version."""
        return f"/v2/models/{self.model}" + {"metadata": "", "ready": "/ready", "infer": "/infer"}[self.kind]


def route(method: str, path: str) -> Call | None:
    """The model call a request is, None for anything else (health, metrics, repository, ...)."""
    if method == "POST" and path.endswith(":predict"):
        match = V1_PREDICT.match(path)
        return Call("predict", match.group(1)) if match else None
    if not path.startswith("/v2/models/"):
        return None
    match = V2_MODEL.match(path)
    if match is None:
        return None
    kind = V2_KINDS[match.group(3)]
    if method != ("POST" if kind == "infer" else "GET"):
        return None
    return Call(kind, match.group(1), match.group(2))


def header(headers: Headers, name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def body_kind(call: Call, headers: Headers) -> str:
    """ "json", "binary" (v2's binary extension) or "cloudevent" (KServe's to handle)."""
    for name, value in headers:
        if name == b"content-type":
            if value.split(b";")[0].strip().lower() == b"application/cloudevents+json":
                return "cloudevent"
        elif name.startswith(b"ce-"):
            return "cloudevent"
    if call.protocol == "v2" and header(headers, b"inference-header-content-length") is not None:
        return "binary"
    return "json"


def drop_nulls(body: bytes, json_length: int | None = None) -> tuple[bytes, int | None]:
    """A v2 response without null optional fields (KServe's pydantic models send `"parameters": null`).

    `json_length`: the length of the JSON part of a binary response; returns the new one."""
    head, rest = (body, b"") if json_length is None else (body[:json_length], body[json_length:])
    try:
        doc = orjson.loads(head)
    except orjson.JSONDecodeError:
        return body, json_length
    if not isinstance(doc, dict):
        return body, json_length
    out = {k: v for k, v in doc.items() if v is not None}
    if isinstance(out.get("outputs"), list):
        out["outputs"] = [
            {k: v for k, v in o.items() if v is not None} if isinstance(o, dict) else o for o in out["outputs"]
        ]
    text = orjson.dumps(out)
    return text + rest, None if json_length is None else len(text)


def public_error(exc: BaseException) -> str:
    """What a 500 may say: the exception's last line (a TorchScript error's own message, not its traceback)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"the model failed: {lines[-1][:200] if lines else type(exc).__name__}"


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Headers

    @staticmethod
    def json(status: int, doc: dict[str, Any]) -> Reply:
        return Reply(status, orjson.dumps(doc), JSON_HEADERS)

    @staticmethod
    def error(status: int, message: str) -> Reply:
        return Reply.json(status, {"error": message})


def client_error(path: str, status: int, message: str) -> None:
    """One log line per 4xx (a traceback for a caller's mistake only fills the log)."""
    log.info("%d %s: %s", status, path, message[:300])


class Predictor:
    """What the direct path needs: the served model's name, revision, request schema and scorer, and
    the limits on a request body."""

    def __init__(
        self,
        name: str,
        revision: str,
        schema: Schema,
        scorer: BatchScorer,
        max_body_bytes: int = 8 << 20,
        body_timeout_s: float = 10.0,
    ) -> None:
        self.name = name
        self.revision = revision
        self.schema = schema
        self.scorer = scorer
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    def parse(self, protocol: str, body: bytes, binary: str | None) -> tuple[Instances, object]:
        """(instances, the JSON document) of a predict/infer body; `binary`: its header length, if binary."""
        if binary is not None:
            doc, data = split_binary(body, binary)
            return parse_v2(v2_inputs(doc, data), self.schema), doc
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"Unrecognized request format: {exc}") from None
        if protocol == "v1":
            return parse_v1(doc, self.schema), doc
        return parse_v2(v2_inputs(doc), self.schema), doc

    async def parse_async(self, protocol: str, body: bytes, binary: str | None) -> tuple[Instances, object]:
        if len(body) <= OFFLOAD_BYTES:
            return self.parse(protocol, body, binary)
        return await asyncio.get_running_loop().run_in_executor(None, self.parse, protocol, body, binary)

    async def answer(self, protocol: str, body: bytes, binary: str | None = None) -> Reply:
        """The reply to a predict (v1) or infer (v2) body."""
        try:
            instances, doc = await self.parse_async(protocol, body, binary)
        except BadRequest as exc:
            return Reply.error(exc.status, str(exc))
        try:
            probabilities = (await self.scorer.score(instances)).tolist()
        except Exception as exc:
            log.exception("prediction failed")
            return Reply.error(500, public_error(exc))
        if protocol == "v1":
            return Reply.json(200, {"predictions": probabilities})
        assert isinstance(doc, dict)  # v2_inputs checked it
        request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
        response = v2_response(self.name, self.revision, request_id, probabilities)
        if not wants_binary_output(doc):
            return Reply.json(200, response)
        data, length = binary_response(response)
        return Reply(200, data, [(b"content-type", b"application/octet-stream"), _length_header(length)])


def _length_header(length: int) -> tuple[bytes, bytes]:
    return (b"inference-header-content-length", str(length).encode())


class ClientGone(ConnectionError):
    """The client disconnected before its request body was read."""


class BodyTimeout(TimeoutError):
    """The client stopped sending its body."""


async def read_body(receive: Receive, limit: int, timeout_s: float) -> bytes:
    """The whole body: at most `limit` bytes (else TooLarge), each part within `timeout_s` (else BodyTimeout)."""
    chunks = []
    size = 0
    while True:
        try:
            message = await asyncio.wait_for(receive(), timeout_s)
        except TimeoutError:
            raise BodyTimeout(f"no part of the body came for {timeout_s:g} s") from None
        if message["type"] == "http.disconnect":
            raise ClientGone("the client went away")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"the body is larger than this server takes ({limit} bytes)")
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the body already read, then waits on the client (for its disconnect)."""
    given = False

    async def again() -> Message:
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def without_nulls(send: Send) -> Send:
    """A `send` that drops null optional fields from a 200 response, JSON or binary (buffers it to do so)."""
    start: Message | None = None
    parts: list[bytes] = []

    async def filtered(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            if message["status"] == 200:
                start = message
                return
        elif start is not None and message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            if message.get("more_body"):
                return
            headers: Headers = start.get("headers", [])
            declared = header(headers, b"inference-header-content-length")
            json_length = int(declared) if declared is not None and declared.isdigit() else None
            if json_length is None and header(headers, b"content-type") != "application/json":
                body = b"".join(parts)
            else:
                body, json_length = drop_nulls(b"".join(parts), json_length)
            skip = (b"content-length", b"inference-header-content-length")
            headers = [(k, v) for k, v in headers if k not in skip]
            headers.append((b"content-length", str(len(body)).encode()))
            if json_length is not None:
                headers.append(_length_header(json_length))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await send(message)

    return filtered


async def respond(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.headers})
    await send({"type": "http.response.body", "body": reply.body})


class PredictMiddleware:
    def __init__(self, app: ASGIApp, predictor: Predictor, direct: bool = True) -> None:
        self.app = app
        self.predictor = predictor
        self.direct = direct
        self.metrics = predictor.scorer.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        call = route(scope.get("method", ""), path) if scope["type"] == "http" else None
        if call is None:
            await self.app(scope, receive, send)
            return
        p = self.predictor
        if call.model != p.name and call.version is None:
            await self.app(scope, receive, send)  # KServe's 404; another model's requests are not ours to count
            return
        if call.model != p.name:  # on a versioned route, which KServe answers 501
            message = f"model {call.model!r} is not served here (this server serves {p.name!r})"
            client_error(path, 404, message)
            await respond(send, Reply.error(404, message))
            return
        if call.version is not None and call.version != p.revision:
            served = f"version {p.revision}" if p.revision else "no numbered version"
            message = f"model {call.model!r} has no version {call.version!r} here (this server serves {served})"
            client_error(path, 404, message)
            await self._counted(call, scope, receive, send, Reply.error(404, message))
            return
        if call.version is not None:  # KServe routes only unversioned paths
            unversioned = call.unversioned()
            scope = {**scope, "path": unversioned, "raw_path": unversioned.encode()}
        if call.kind == "metadata":
            await respond(send, Reply.json(200, v2_metadata(p.name, p.revision, p.schema)))
        elif call.kind == "ready":
            await self.app(scope, receive, send)
        else:
            await self._counted(call, scope, receive, send, None)

    async def _counted(self, call: Call, scope: Scope, receive: Receive, send: Send, reply: Reply | None) -> None:
        """A predict/infer call for the served model (or `reply` for it), counted and timed."""
        if not call.counted:
            if reply is not None:
                await respond(send, reply)
            return
        start = time.perf_counter()
        status: int | None = None

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        ticket = self.predictor.scorer.arriving()
        token = ARRIVAL.set(ticket)
        try:
            if reply is not None:
                await respond(send_status, reply)
            else:
                gone = await self._handle(call, scope, receive, send_status)
                status = gone if gone is not None else status
        finally:
            ticket.close()
            ARRIVAL.reset(token)
            self.metrics.request(status, time.perf_counter() - start)

    async def _handle(self, call: Call, scope: Scope, receive: Receive, send: Send) -> int | None:
        """Read the body within the limits, check it, then answer it or hand it to KServe.

        Returns a status only when nothing was sent (the client went away)."""
        p = self.predictor
        path = scope.get("path", "")
        headers: Headers = scope.get("headers", [])
        kind = body_kind(call, headers)
        try:
            declared = header(headers, b"content-length")
            if declared is not None and declared.isdigit() and int(declared) > p.max_body_bytes:
                raise TooLarge(f"the body is {declared} bytes; this server takes at most {p.max_body_bytes}")
            body = await read_body(receive, p.max_body_bytes, p.body_timeout_s)
            binary = header(headers, b"inference-header-content-length") if kind == "binary" else None
            if kind != "cloudevent" and not self.direct:
                # The same checks and 400s as the direct path: KServe reads a bad binary body into a 500 that
                # closes the connection, and takes some bad JSON (datatype "fp32", keys beyond int64) as good.
                await p.parse_async(call.protocol, body, binary)
        except ClientGone:
            return CLIENT_CLOSED
        except BodyTimeout as exc:
            client_error(path, 408, str(exc))
            await respond(send, Reply.error(408, str(exc)))
            return None
        except BadRequest as exc:
            client_error(path, exc.status, str(exc))
            await respond(send, Reply.error(exc.status, str(exc)))
            return None
        if self.direct and kind != "cloudevent":
            reply = await p.answer(call.protocol, body, binary)
            if 400 <= reply.status < 500:
                client_error(path, reply.status, orjson.loads(reply.body)["error"])
            await respond(send, reply)
            return None
        if call.protocol == "v2":
            if kind == "json" and header(headers, b"content-type") is None:  # KServe would take it for binary
                scope = {**scope, "headers": [*headers, *JSON_HEADERS]}
            send = without_nulls(send)
        await self.app(scope, replay(body, receive), send)
        return None
