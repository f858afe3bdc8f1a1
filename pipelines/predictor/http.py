"""The HTTP side: request metrics for every predict/infer call, and a direct path for JSON bodies.

`PredictMiddleware` sits in KServe's FastAPI app (pure ASGI, added before the server starts).
For `POST /v1/models/<m>:predict` and `POST /v2/models/<m>[/versions/<v>]/infer` it

- counts the request by outcome and times it (`slipway_requests_total`,
  `slipway_request_duration_seconds`), whoever answers it, including KServe's own 4xx
  (unknown model, bad JSON) and 5xx;
- announces the request to the batcher as soon as it arrives, so a batch being formed waits
  (bounded) only for requests that are really on their way;
- answers plain JSON bodies for the served model itself with the same parsing and scoring as
  the `kserve.Model`, skipping FastAPI's routing, validation and KServe's dataplane (most of the
  per-request cost for a model this small; see bench/README.md). CloudEvents, binary v2 tensors,
  other models and every other route go to KServe unchanged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from .instances import BadRequest, Schema, parse_v1, parse_v2, v2_inputs, v2_response
from .scorer import ARRIVAL, BatchScorer

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

V1_PREDICT = re.compile(r"^/v1/models/([^/]+):predict$")
V2_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/infer$")
JSON_HEADERS = [(b"content-type", b"application/json")]


def route(method: str, path: str) -> tuple[str, str] | None:
    """("v1" | "v2", model name) for a predict/infer call, None for anything else."""
    if method != "POST":
        return None
    if path.endswith(":predict"):
        match = V1_PREDICT.match(path)
        return ("v1", match.group(1)) if match else None
    if path.endswith("/infer"):
        match = V2_INFER.match(path)
        return ("v2", match.group(1)) if match else None
    return None


def plain_json(protocol: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body is a plain JSON document (not a CloudEvent, not a binary v2 tensor).

    The model reads any other content type as JSON too, as KServe hands it such bodies raw.
    """
    for name, value in headers:
        if name == b"content-type":
            if value.split(b";")[0].strip().lower() == b"application/cloudevents+json":
                return False
        elif name.startswith(b"ce-") or (protocol == "v2" and name == b"inference-header-content-length"):
            return False
    return True


class Predictor:
    """What the direct path needs: the served model's name, revision, request schema and scorer."""

    def __init__(self, name: str, revision: str, schema: Schema, scorer: BatchScorer) -> None:
        self.name = name
        self.revision = revision
        self.schema = schema
        self.scorer = scorer

    async def answer(self, protocol: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """(status, JSON document) for a predict (v1) or infer (v2) body."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return 400, {"error": f"Unrecognized request format: {exc}"}
        try:
            if protocol == "v1":
                probabilities = await self.scorer.score(parse_v1(doc, self.schema))
                return 200, {"predictions": probabilities.tolist()}
            probabilities = await self.scorer.score(parse_v2(v2_inputs(doc), self.schema))
            request_id = doc.get("id") if isinstance(doc.get("id"), str) else None
            return 200, v2_response(self.name, self.revision, request_id, probabilities.tolist())
        except BadRequest as exc:
            return 400, {"error": str(exc)}
        except Exception as exc:
            log.exception("prediction failed")
            return 500, {"error": f"{type(exc).__name__} : {exc}"}


CLIENT_CLOSED = 499  # nginx's status for a client that went away before the answer (a client error)


class ClientGone(ConnectionError):
    """The client disconnected before its request body was read."""


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone("the client went away")
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


class PredictMiddleware:
    def __init__(self, app: ASGIApp, predictor: Predictor, direct: bool = True) -> None:
        self.app = app
        self.predictor = predictor
        self.direct = direct
        self.metrics = predictor.scorer.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = route(scope.get("method", ""), scope.get("path", "")) if scope["type"] == "http" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        protocol, model = found
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
            if self.direct and model == self.predictor.name and plain_json(protocol, scope.get("headers", [])):
                try:
                    body = await _body(receive)
                except ClientGone:
                    status = CLIENT_CLOSED
                    return
                code, doc = await self.predictor.answer(protocol, body)
                await send_status({"type": "http.response.start", "status": code, "headers": JSON_HEADERS})
                await send_status({"type": "http.response.body", "body": orjson.dumps(doc)})
            else:
                await self.app(scope, receive, send_status)
        finally:
            ticket.close()
            ARRIVAL.reset(token)
            self.metrics.request(status, time.perf_counter() - start)
