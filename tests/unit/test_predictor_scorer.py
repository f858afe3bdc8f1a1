"""The scorer: the forward pass, enrichment (request values win), metrics, and failure isolation;
and the direct HTTP answers built on it."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import Sequence

import numpy as np
import orjson
import pytest
import torch
from pipelines.churn import model as churn
from pipelines.predictor.http import Call, Predictor, body_kind, route
from pipelines.predictor.instances import Instances, Key, Schema, parse_v1
from pipelines.predictor.metrics import PREDICTION_BUCKETS, ModelMetrics, outcome
from pipelines.predictor.scorer import ModelError, Scorer
from prometheus_client import REGISTRY

from tests.unit.models import Poisoned

FEATURES = ("sessions_30d", "monthly_charges", "tenure_months")
_models = itertools.count()


def scripted() -> torch.jit.ScriptModule:
    torch.manual_seed(0)
    net = churn.ChurnMLP(len(FEATURES), hidden=(8,), mean=np.array([5, 50, 20], "float32")).eval()
    model: torch.jit.ScriptModule = torch.jit.load(io.BytesIO(churn.torchscript_bytes(net)))
    return model


def metrics() -> tuple[ModelMetrics, str]:
    name = f"unit-{next(_models)}"
    return ModelMetrics(name, "1"), name


def sample(metric: str, model: str) -> float:
    value = REGISTRY.get_sample_value(metric, {"model": model, "revision": "1"})
    return 0.0 if value is None else value


class Store:
    """An online store as a dict (the real Feast lookup is tested in the integration tests)."""

    def __init__(self, rows: dict[Key, list[float]]) -> None:
        self.rows = rows
        self.calls: list[list[Key]] = []

    def __call__(self, keys: Sequence[Key]) -> np.ndarray:
        self.calls.append(list(keys))
        nan = [float("nan")] * len(FEATURES)
        return np.array([self.rows.get(k, nan) for k in keys], dtype=np.float32)


def test_probabilities_are_the_torchscript_forward_and_are_counted() -> None:
    model = scripted()
    bound, name = metrics()
    scorer = Scorer(model, len(FEATURES), bound)
    x = np.array([[3, 70, 12], [np.nan, 20, np.nan]], dtype=np.float32)
    got = asyncio.run(scorer.score(Instances(x, (None, None))))
    with torch.inference_mode():
        expected = model(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(got, expected)
    assert sample("slipway_predictions_total", name) == 2
    assert sample("slipway_features_requested_total", name) == 6
    assert sample("slipway_features_missing_total", name) == 2
    assert sample("slipway_prediction_value_count", name) == 2
    assert sample("slipway_prediction_value_sum", name) == pytest.approx(float(expected.sum()), rel=1e-6)


def test_enrichment_fills_what_the_request_left_out() -> None:
    store = Store({1: [10, 100, 30], 2: [20, np.nan, 40]})
    bound, name = metrics()
    scorer = Scorer(scripted(), len(FEATURES), bound, lookup=store)
    schema = Schema(FEATURES, "customer_id")
    request = parse_v1(
        {
            "instances": [
                {"customer_id": 1},
                {"customer_id": 2, "monthly_charges": 55},  # fills the store's gap
                {"customer_id": 1, "sessions_30d": 0},  # overrides the store
                {"customer_id": 99},  # unknown: all missing
                [1, 2, 3],  # no key: as given
            ]
        },
        schema,
    )
    values = scorer.local.enrich(request.values, request.keys)
    expected = [[10, 100, 30], [20, 55, 40], [0, 100, 30], [np.nan] * 3, [1, 2, 3]]
    np.testing.assert_array_equal(values, np.array(expected, dtype=np.float32))
    assert store.calls == [[1, 2, 99]]  # one lookup, each key once
    asyncio.run(scorer.score(request))
    assert sample("slipway_features_missing_total", name) == 3
    assert sample("slipway_features_requested_total", name) == 15


def test_a_request_that_breaks_the_model_fails_alone() -> None:
    bound, _ = metrics()
    scorer = Scorer(torch.jit.script(Poisoned(scripted())), len(FEATURES), bound, max_batch_wait_s=5)
    good = Instances(np.array([[1, 2, 3]], np.float32), (None,))
    bad = Instances(np.array([[1, 2e7, 3]], np.float32), (None,))
    nan = Instances(np.array([[1, -2e7, 3]], np.float32), (None,))

    async def together() -> list[object]:
        tickets = [scorer.arriving() for _ in range(4)]
        calls = [scorer.batcher.submit(i, t) for i, t in zip([good, bad, nan, good], tickets, strict=True)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(together())
    assert [type(r).__name__ for r in results] == ["Scored", "Error", "ModelError", "Scored"]
    assert "poisoned input" in str(results[1])
    assert isinstance(results[2], ModelError) and "non-finite" in str(results[2])
    assert scorer.batcher.batches_run == 5  # the batch of 4, then each alone


def test_direct_answers() -> None:
    bound, _ = metrics()
    scorer = Scorer(torch.jit.script(Poisoned(scripted())), len(FEATURES), bound)
    predictor = Predictor("churn", "1", Schema(FEATURES), scorer)

    async def answer(protocol: str, body: object) -> tuple[int, dict[str, object]]:
        raw = body if isinstance(body, bytes) else orjson.dumps(body)
        reply = await predictor.answer(protocol, raw)
        return reply.status, orjson.loads(reply.body)

    status, doc = asyncio.run(answer("v1", {"instances": [[1, 2, 3]]}))
    assert status == 200 and len(doc["predictions"]) == 1  # type: ignore[arg-type]
    v2 = {"id": "r1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    status, doc = asyncio.run(answer("v2", v2))
    assert status == 200 and doc["id"] == "r1" and doc["model_version"] == "1"
    status, doc = asyncio.run(answer("v1", b"{not json"))
    assert status == 400 and str(doc["error"]).startswith("Unrecognized request format")
    status, doc = asyncio.run(answer("v1", {"instances": [[1, 2]]}))
    assert status == 400 and "instance 0 has 2 values" in str(doc["error"])
    status, doc = asyncio.run(answer("v1", {"instances": [[1, 2e7, 3]]}))
    assert status == 500 and "poisoned input" in str(doc["error"])


def test_routes_and_bodies_the_middleware_answers() -> None:
    assert route("POST", "/v1/models/churn:predict") == Call("predict", "churn")
    assert route("POST", "/v2/models/churn/infer") == Call("infer", "churn")
    assert route("POST", "/v2/models/churn/versions/3/infer") == Call("infer", "churn", "3")
    assert route("GET", "/v1/models/churn:predict") is None
    assert route("POST", "/v1/models/churn:explain") is None
    assert route("POST", "/v2/models/churn/ready") is None
    v1, v2 = Call("predict", "churn"), Call("infer", "churn")
    assert body_kind(v1, [(b"content-type", b"application/json; charset=utf-8")]) == "json"
    assert body_kind(v1, [(b"content-type", b"application/x-www-form-urlencoded")]) == "json"  # curl -d
    assert body_kind(v1, [(b"content-type", b"application/cloudevents+json")]) == "cloudevent"
    assert body_kind(v1, [(b"ce-specversion", b"1.0")]) == "cloudevent"
    assert body_kind(v2, [(b"inference-header-content-length", b"120")]) == "binary"


def test_outcomes_and_buckets() -> None:
    assert [outcome(s) for s in (200, 204, 400, 404, 422, 500, 503, None)] == [
        "success",
        "success",
        "client_error",
        "client_error",
        "client_error",
        "server_error",
        "server_error",
        "server_error",
    ]
    assert PREDICTION_BUCKETS[0] == 0.05 and PREDICTION_BUCKETS[-1] == 1.0 and len(PREDICTION_BUCKETS) == 20
