"""The KServe model and the entrypoint: load the run directory, then serve it with KServe's ModelServer."""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import sys
import uuid
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.errors import InferenceError, InvalidInput, ModelNotFound
from starlette.exceptions import HTTPException

from . import artifact
from .enrich import online_lookup
from .http import PredictMiddleware, Predictor, client_error, public_error
from .instances import BadRequest, Schema, V2Input, parse_v1, parse_v2, tensors
from .metrics import ModelMetrics
from .monitor import monitor_for
from .scorer import BatchScorer, Scorer, warm_up
from .settings import Settings, SettingsError, from_env

if TYPE_CHECKING:
    from .rayserve import RayServeEngine

log = logging.getLogger("slipway.predictor")


class SlipwayModel(Model):  # type: ignore[misc]
    """A run directory's TorchScript behind KServe's v1 and v2 protocols (and gRPC, when enabled)."""

    def __init__(self, name: str, settings: Settings) -> None:
        super().__init__(name)
        self.settings = settings
        self._predictor: Predictor | None = None
        self._engine: RayServeEngine | None = None

    @property
    def predictor(self) -> Predictor:
        if self._predictor is None:
            raise RuntimeError(f"model {self.name} is not loaded")
        return self._predictor

    def load(self) -> bool:
        s = self.settings
        metrics = ModelMetrics(s.model_name, s.revision)
        if s.engine == "ray-serve":
            # A call into Ray after shutdown must not start a second Ray (auto-init; read when `ray` is imported).
            os.environ.setdefault("RAY_ENABLE_AUTO_CONNECT", "0")
            from .rayserve import RayServeEngine  # Ray is imported only by this engine

            self._engine = RayServeEngine(s)
            schema, scorer = self._engine.start(metrics)
        else:
            schema, scorer = load_local(s, metrics)
        schema = dataclasses.replace(schema, max_rows=s.max_rows)
        self._predictor = Predictor(self.name, s.revision, schema, scorer, s.max_body_bytes, s.body_timeout_s)
        log.info(
            "loaded %s (revision %s) from %s with the %s engine: %d features%s",
            s.model_name,
            s.revision or "-",
            s.model_dir,
            s.engine,
            len(schema.features),
            f", online features from {s.feature_service} by {s.entity_key}" if s.enrich else "",
        )
        self.ready = True
        return True

    @property
    def failed(self) -> bool:
        """Whether the engine broke under the server (the process then exits with status 1)."""
        return self._engine is not None and self._engine.failed

    def close(self) -> None:
        """Release the scorer and, with the ray-serve engine, stop Serve and Ray (idempotent)."""
        self.ready = False
        if self._predictor is not None:
            self._predictor.scorer.close()
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    def get_input_types(self) -> list[dict[str, Any]]:
        return tensors(self.predictor.schema)[0]

    def get_output_types(self) -> list[dict[str, Any]]:
        return tensors(self.predictor.schema)[1]

    async def predict(
        self, payload: dict[str, Any] | InferRequest | bytes, headers: dict[str, str] | None = None
    ) -> dict[str, Any] | InferResponse:
        """KServe's route into the same parsing and scoring as the direct path (see `http`)."""
        predictor = self.predictor
        # A BadRequest reaches the app's handler (`add_handlers`): a 400 or 413 in one log line.
        if isinstance(payload, InferRequest):
            instances = parse_v2([_v2_input(i) for i in payload.inputs], predictor.schema)
        else:
            if isinstance(payload, bytes | str):
                try:
                    payload = orjson.loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise BadRequest(f"Unrecognized request format: {exc}") from None
            instances = parse_v1(payload, predictor.schema)
        try:
            probabilities = (await predictor.scorer.score(instances)).tolist()
        except Exception as exc:
            log.exception("prediction failed")
            raise InferenceError(public_error(exc)) from None  # the body says what failed, not how
        if not isinstance(payload, InferRequest):
            return {"predictions": probabilities}
        output = InferOutput(name="predictions", shape=[len(probabilities)], datatype="FP32", data=probabilities)
        return InferResponse(
            response_id=payload.id or str(uuid.uuid4()),
            model_name=self.name,
            model_version=self.settings.revision or None,
            infer_outputs=[output],
        )


def _v2_input(inp: Any) -> V2Input:
    try:
        data = inp.data if inp.data is not None else inp.as_numpy().tolist()
    except ValueError as exc:  # binary data that does not fill the shape
        raise BadRequest(f"input {inp.name!r}: {exc}") from None
    return V2Input(inp.name, inp.datatype, tuple(inp.shape), data)


def _field(loc: Sequence[object]) -> str:
    return ".".join(str(part) for part in loc if part != "body") or "body"


async def _bad_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BadRequest)
    client_error(request.url.path, exc.status, str(exc))
    return JSONResponse({"error": str(exc)}, status_code=exc.status)


async def _invalid_body(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 {"detail": [...]} as the protocol's 400 {"error": "..."}, naming the fields."""
    assert isinstance(exc, RequestValidationError)
    problems = [f"{_field(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in exc.errors()[:5]]
    message = "invalid request body: " + "; ".join(problems)
    client_error(request.url.path, 400, message)
    return JSONResponse({"error": message}, status_code=400)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's {"detail": ...} (a body that is not JSON, an unknown route) as {"error": ...}."""
    assert isinstance(exc, HTTPException)
    if exc.status_code < 500:
        client_error(request.url.path, exc.status_code, str(exc.detail))
    return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


def add_handlers(app: FastAPI) -> None:
    """The protocol's error bodies for what KServe's routes leave to FastAPI or to its generic 500."""
    app.add_exception_handler(BadRequest, _bad_request)
    app.add_exception_handler(RequestValidationError, _invalid_body)
    app.add_exception_handler(HTTPException, _http_error)


CLIENT_ERRORS = (InvalidInput, ModelNotFound, BadRequest, RequestValidationError)


class OneLineErrors(logging.Filter):
    """KServe's error handlers log every exception with its traceback; a caller's mistake (4xx) and a
    model failure (logged once already, by `SlipwayModel.predict`) get one line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            if isinstance(exc, (*CLIENT_ERRORS, InferenceError)):
                first = (str(exc).splitlines() or [""])[0]
                record.msg, record.args, record.exc_info, record.exc_text = (
                    "%s: %s",
                    (type(exc).__name__, first),
                    None,
                    None,
                )
                if isinstance(exc, CLIENT_ERRORS):
                    record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def load_local(s: Settings, metrics: ModelMetrics) -> tuple[Schema, BatchScorer]:
    """The kserve engine: the model (and the online store) in this process."""
    loaded = artifact.load(s.model_dir)
    features = tuple(loaded.manifest.features)
    lookup, key_type = online_lookup(s, features)
    metrics.monitor_inputs(monitor_for(features, loaded.manifest.profile, s.monitor))
    scorer = Scorer(loaded.model, len(features), metrics, lookup, s.max_batch_size, s.max_batch_wait_s)
    warm_up(scorer.local, s.max_batch_size)
    return Schema(features, s.entity_key, key_type), scorer


def parser() -> argparse.ArgumentParser:
    """KServe's ModelServer arguments, with Slipway's defaults: no gRPC port, no per-request log lines."""
    p = argparse.ArgumentParser(
        prog="python -m pipelines.predictor",
        parents=[model_server.parser],
        description="Serve a Slipway run directory with KServe (settings from the environment).",
    )
    p.set_defaults(enable_grpc=False, enable_latency_logging=False)
    p.add_argument(
        "--direct",
        default=True,
        type=lambda text: text.lower() in ("1", "true", "yes"),
        help="answer plain JSON predict/infer bodies in the middleware (false: through KServe's routes)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
    warnings.filterwarnings("ignore", category=FutureWarning, module="torch.jit")  # "torch.jit is deprecated"
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")  # KServe's, once per process
    args, unknown = parser().parse_known_args(argv)
    if unknown:
        log.warning("ignoring arguments: %s", " ".join(unknown))
    if args.workers != 1:
        print("--workers must be 1: one model process per replica (scale with replicas)", file=sys.stderr)
        return 2
    try:
        settings = from_env(os.environ, args.model_name)
    except SettingsError as exc:
        print(f"predictor: {exc}", file=sys.stderr)
        return 2
    torch.set_num_threads(settings.torch_threads)
    server = ModelServer(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        workers=1,
        max_threads=args.max_threads,
        max_asyncio_workers=args.max_asyncio_workers,
        enable_grpc=args.enable_grpc,
        enable_docs_url=args.enable_docs_url,
        enable_latency_logging=args.enable_latency_logging,
        access_log_format=args.access_log_format,
        event_loop=args.event_loop,
        timeout_keep_alive=args.timeout_keep_alive,
    )
    if not settings.access_log:  # a log line per request costs more than this model's forward pass
        logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
        logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    model = SlipwayModel(args.model_name, settings)
    try:
        try:
            model.load()
        except artifact.ArtifactError as exc:
            print(f"predictor: {exc}", file=sys.stderr)
            return 1
        except SettingsError as exc:  # what only loading can tell (e.g. GPUs asked for, none present)
            print(f"predictor: {exc}", file=sys.stderr)
            return 2
        model_server.app.add_middleware(PredictMiddleware, predictor=model.predictor, direct=args.direct)
        add_handlers(model_server.app)
        logging.getLogger("kserve").addFilter(OneLineErrors())
        # Everything loaded so far (torch, KServe, Ray: ~10^6 objects) lives as long as the process. Out of
        # the collector's sight, full collections no longer stall every request for 0.1-0.3 s every couple
        # of seconds under load (measured: p99 at c=64, bench/README.md).
        gc.collect()
        gc.freeze()
        server.start([model])  # returns once SIGTERM/SIGINT has stopped the HTTP server
        return 1 if model.failed else 0
    finally:
        model.close()
