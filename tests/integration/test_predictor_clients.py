"""The predictor against real inference clients, an OpenAPI fuzzer and a table of bad inputs.

Each server is the real `python -m pipelines.predictor` process (`test_predictor.Server`), with and
without `--direct`, with and without Feast enrichment: tritonclient's HTTP client and the kserve
package's InferenceRESTClient (metadata, readiness, infer in JSON and binary for each datatype the
model takes, versioned routes), schemathesis against our OpenAPI description of the endpoints
(`predictor_openapi`), and bad inputs that must be a 4xx naming what is wrong on a connection that
stays usable.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import orjson
import pytest
import schemathesis
import tritonclient.http as triton
from feature_repo import store as fs
from kserve import InferInput, InferRequest, InferResponse
from kserve.inference_client import InferenceRESTClient, RESTConfig
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation.case import Case
from tritonclient.utils import InferenceServerException

from tests.integration.predictor_openapi import spec
from tests.integration.test_predictor import (  # noqa: F401  (module fixtures)
    FEATURES,
    MODEL,
    Server,
    feast_data,
    forward,
    run_dir,
    sample,
    training_frame,
    workdir,
)

pytestmark = pytest.mark.integration

VERSION = "1"
ROWS = [[12, 3, 1, 14, 80, 24, 1, 0, 3], [2, 40, 6, 3, 110, 2, 0, 3, 55]]  # whole numbers: every datatype holds them
IDS = [1001, 1002, 1003]
MAX_ROWS = 500
MAX_BODY = 256 << 10
NUMERIC = [("FP32", np.float32), ("FP64", np.float64), ("INT32", np.int32), ("INT64", np.int64)]
MODES = [("direct", False), ("kserve-routes", False), ("direct", True), ("kserve-routes", True)]


@pytest.fixture(scope="module", params=MODES, ids=[f"{m}{'-enriched' if e else ''}" for m, e in MODES])
def served(request: pytest.FixtureRequest, workdir: Path, run_dir: Path, feast_data: Path) -> Iterator[Server]:  # noqa: F811
    mode, enriched = request.param
    env = {
        "STORAGE_URI": str(run_dir),
        "SLIPWAY_MODEL": MODEL,
        "SLIPWAY_MODEL_VERSION": VERSION,
        "SLIPWAY_MAX_ROWS": str(MAX_ROWS),
        "SLIPWAY_MAX_BODY_BYTES": str(MAX_BODY),
        "SLIPWAY_BODY_TIMEOUT_S": "1",
    }
    if enriched:
        env |= {
            "SLIPWAY_FEATURE_SERVICE": fs.FEATURE_SERVICE,
            "SLIPWAY_ENTITY_KEY": fs.ENTITY_KEY,
            "SLIPWAY_FEAST_DATA": str(feast_data),
        }
    srv = Server(workdir, env, () if mode == "direct" else ("--direct=false",))
    srv.enriched = enriched  # type: ignore[attr-defined]
    request.addfinalizer(srv.stop)
    yield srv.wait_ready()


def is_enriched(srv: Server) -> bool:
    return bool(getattr(srv, "enriched", False))


def by_key(srv: Server, ids: list[int]) -> list[float]:
    response = srv.predict([{"customer_id": i} for i in ids])
    assert response.status_code == 200, response.text
    predictions: list[float] = response.json()["predictions"]
    return predictions


# == tritonclient ==============================================================================================
def test_tritonclient_metadata_and_readiness(served: Server) -> None:
    client = triton.InferenceServerClient(f"127.0.0.1:{served.port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, VERSION)
        assert not client.is_model_ready(MODEL, "9") and not client.is_model_ready("other", VERSION)
        metadata = client.get_model_metadata(MODEL)
        assert metadata == client.get_model_metadata(MODEL, VERSION)
        assert metadata["name"] == MODEL and metadata["versions"] == [VERSION]
        inputs = [{"name": "features", "datatype": "FP32", "shape": [-1, len(FEATURES)]}]
        if is_enriched(served):
            inputs.append({"name": "customer_id", "datatype": "INT64", "shape": [-1]})
        assert metadata["inputs"] == inputs
        assert metadata["outputs"] == [{"name": "predictions", "datatype": "FP32", "shape": [-1]}]
        with pytest.raises(InferenceServerException, match="no version '9'"):
            client.get_model_metadata(MODEL, "9")
    finally:
        client.close()


@pytest.mark.parametrize(("datatype", "dtype"), NUMERIC)
def test_tritonclient_infers_each_datatype_in_json_and_binary(
    served: Server,
    run_dir: Path,  # noqa: F811
    datatype: str,
    dtype: type[np.generic],
) -> None:
    expected = forward(run_dir, ROWS)  # type: ignore[arg-type]
    client = triton.InferenceServerClient(f"127.0.0.1:{served.port}")
    try:
        for binary_in in (False, True):
            inp = triton.InferInput("features", [len(ROWS), len(FEATURES)], datatype)
            inp.set_data_from_numpy(np.array(ROWS, dtype=dtype), binary_data=binary_in)
            for binary_out in (None, False, True):  # None: no outputs named, which asks for binary
                outputs = None if binary_out is None else [triton.InferRequestedOutput("predictions", binary_out)]
                for version in ("", VERSION):
                    result = client.infer(MODEL, [inp], model_version=version, outputs=outputs, request_id="r1")
                    np.testing.assert_allclose(result.as_numpy("predictions"), expected, rtol=1e-6)
                    response = result.get_response()
                    assert response["model_version"] == VERSION and response["id"] == "r1"
                    assert "parameters" not in response or response["parameters"] is not None
        with pytest.raises(InferenceServerException, match="no version '9'"):
            client.infer(MODEL, [inp], model_version="9")
    finally:
        client.close()


def test_tritonclient_entity_keys(served: Server) -> None:
    if not is_enriched(served):
        pytest.skip("entity keys need enrichment")
    expected = by_key(served, IDS)
    client = triton.InferenceServerClient(f"127.0.0.1:{served.port}")
    try:
        for binary in (False, True):
            keys = triton.InferInput("customer_id", [len(IDS)], "INT64")
            keys.set_data_from_numpy(np.array(IDS, dtype=np.int64), binary_data=binary)
            texts = triton.InferInput("customer_id", [len(IDS)], "BYTES")
            texts.set_data_from_numpy(np.array([str(i).encode() for i in IDS], dtype=np.object_), binary_data=binary)
            for inp in (keys, texts):
                result = client.infer(MODEL, [inp])
                np.testing.assert_allclose(result.as_numpy("predictions"), expected, rtol=1e-6)
    finally:
        client.close()


# == the kserve package's REST client ==========================================================================
async def _kserve_calls(srv: Server, expected: list[float]) -> None:
    v2 = InferenceRESTClient(RESTConfig(protocol="v2"))
    v1 = InferenceRESTClient(RESTConfig(protocol="v1"))
    try:
        assert await v2.is_server_ready(srv.url) and await v2.is_server_live(srv.url)
        assert await v2.is_model_ready(srv.url, MODEL)
        for datatype, dtype in NUMERIC:
            for binary in (False, True):
                inp = InferInput("features", [len(ROWS), len(FEATURES)], datatype)
                inp.set_data_from_numpy(np.array(ROWS, dtype=dtype), binary_data=binary)
                response = await v2.infer(srv.url, InferRequest(MODEL, [inp], request_id="k1"), model_name=MODEL)
                assert isinstance(response, InferResponse)
                assert response.id == "k1"  # (the client reads no model_version)
                np.testing.assert_allclose(response.outputs[0].as_numpy(), expected, rtol=1e-6)
        doc = await v1.infer(srv.url, {"instances": ROWS}, model_name=MODEL)
        assert isinstance(doc, dict)
        np.testing.assert_allclose(doc["predictions"], expected, rtol=1e-6)
    finally:
        await v2.close()
        await v1.close()


def test_the_kserve_client(served: Server, run_dir: Path) -> None:  # noqa: F811
    asyncio.run(_kserve_calls(served, forward(run_dir, ROWS)))  # type: ignore[arg-type]


# == the protocol's shapes =====================================================================================
def test_json_without_a_content_type_and_no_nulls(served: Server) -> None:
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, len(FEATURES)], "data": ROWS[0]}]}
    response = served.client.post(f"/v2/models/{MODEL}/infer", content=orjson.dumps(body))
    assert response.status_code == 200, response.text
    doc = response.json()
    assert None not in doc.values() and None not in doc["outputs"][0].values(), doc
    malformed = served.client.post(f"/v2/models/{MODEL}/infer", json={"inputs": "features"})
    assert malformed.status_code == 400 and "inputs" in malformed.json()["error"], malformed.text


def test_other_models_and_versions_are_404_and_not_counted(served: Server) -> None:
    before = served.metrics()
    v1, v2 = {"instances": ROWS}, _features("FP32", ROWS[0])
    for path, body in (
        ("/v1/models/other:predict", v1),
        ("/v2/models/other/infer", v2),
        ("/v2/models/other/versions/1/infer", v2),
    ):
        response = served.client.post(path, json=body)
        assert response.status_code == 404, (path, response.text)
        assert "other" in response.json()["error"]
    for path in (f"/v2/models/{MODEL}/versions/9", f"/v2/models/{MODEL}/versions/9/ready"):
        response = served.client.get(path)
        assert response.status_code == 404 and "no version '9'" in response.json()["error"], path
    wrong = served.client.post(f"/v2/models/{MODEL}/versions/9/infer", json={"inputs": []})
    assert wrong.status_code == 404
    after = served.metrics()
    labels = {"model": MODEL, "revision": VERSION}

    def delta(outcome: str) -> float:
        return sample(after, "slipway_requests_total", **labels, outcome=outcome) - sample(
            before, "slipway_requests_total", **labels, outcome=outcome
        )

    assert (delta("success"), delta("client_error"), delta("server_error")) == (0, 1, 0)
    assert not any(dict(k[1]).get("model") == "other" for k in after)


# == bad inputs: a 4xx naming what is wrong, and the connection stays usable ===================================
def _binary(header: dict[str, Any], data: bytes) -> bytes:
    return orjson.dumps(header) + data


def _features(datatype: str, data: Any, shape: list[int] | None = None) -> dict[str, Any]:
    return {"inputs": [{"name": "features", "datatype": datatype, "shape": shape or [1, 9], "data": data}]}


SHORT = _binary(
    {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 9], "parameters": {"binary_data_size": 8}}]},
    np.zeros(2, dtype="<f4").tobytes(),
)
V2 = f"/v2/models/{MODEL}/infer"
V1 = f"/v1/models/{MODEL}:predict"
BAD: list[tuple[str, str, dict[str, str], bytes, int, str]] = [
    ("header abc", V2, {"Inference-Header-Content-Length": "abc"}, SHORT, 400, "Inference-Header-Content-Length"),
    ("header 1.5", V2, {"Inference-Header-Content-Length": "1.5"}, SHORT, 400, "Inference-Header-Content-Length"),
    ("header empty", V2, {"Inference-Header-Content-Length": ""}, SHORT, 400, "Inference-Header-Content-Length"),
    ("short tensor", V2, {"Inference-Header-Content-Length": str(len(SHORT) - 8)}, SHORT, 400, "input 'features'"),
    ("1e300", V1, {}, orjson.dumps({"instances": [[1e300] + [0] * 8]}), 400, "out of float32's range"),
    ("INT64 1.5", V2, {}, orjson.dumps(_features("INT64", [1.5] * 9)), 400, "whole number"),
    ("fp32", V2, {}, orjson.dumps(_features("fp32", [1.0] * 9)), 400, "datatype"),
    ("not JSON", V2, {}, b"{nope", 400, ""),
    ("inputs not a list", V2, {}, b'{"inputs": 3}', 400, "inputs"),
    ("too many rows", V1, {}, orjson.dumps({"instances": [[0] * 9] * (MAX_ROWS + 1)}), 413, f"at most {MAX_ROWS}"),
]


@pytest.mark.parametrize(("case", "path", "headers", "body", "status", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_are_4xx_and_keep_the_connection(
    served: Server, case: str, path: str, headers: dict[str, str], body: bytes, status: int, message: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
    try:
        connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
        response = connection.getresponse()
        text = response.read()
        assert response.status == status, (case, text)
        assert message in orjson.loads(text)["error"], (case, text)
        assert b"Traceback" not in text
        good = orjson.dumps({"instances": ROWS})
        connection.request("POST", V1, body=good, headers={"Content-Type": "application/json"})
        after = connection.getresponse()  # on the same connection: it was not closed
        assert after.status == 200, after.read()
        after.read()
    finally:
        connection.close()


def test_entity_keys_beyond_int64_are_400(served: Server) -> None:
    if not is_enriched(served):
        pytest.skip("entity keys need enrichment")
    response = served.predict([{"customer_id": 2**63}])
    assert response.status_code == 400 and "does not fit in int64" in response.json()["error"]
    keys = {"inputs": [{"name": "customer_id", "datatype": "INT64", "shape": [1], "data": [2**63]}]}
    response = served.infer(keys)
    assert response.status_code == 400 and "customer_id" in response.json()["error"]


def test_a_body_too_large_is_413(served: Server) -> None:
    response = served.client.post(V1, content=b" " * (MAX_BODY + 1), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and f"at most {MAX_BODY}" in response.json()["error"]


def test_a_body_that_stops_is_408(served: Server) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=15) as sock:
        head = f"POST {V1} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        sock.sendall(head.encode() + b'{"instances": ')
        answer = sock.recv(4096)  # the server's timeout is 1 s; the socket's 15 s bounds the test
    assert answer.startswith(b"HTTP/1.1 408"), answer


def test_client_errors_are_logged_in_one_line(served: Server) -> None:
    served.client.post(V2, content=SHORT, headers={"Inference-Header-Content-Length": "abc"})
    served.client.post(V2, json=_features("fp32", [1.0] * 9))
    log = served.log.read_text()
    assert "Inference-Header-Content-Length must be a whole number" in log
    assert "Traceback" not in log


# == schemathesis against our OpenAPI description ==============================================================
SCHEMA = schemathesis.openapi.from_dict(spec(MODEL, VERSION))
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.mark.timeout(300)
@SCHEMA.parametrize()
@hypothesis.settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    database=None,
)
def test_the_open_inference_protocol_schema(case: Case, served: Server) -> None:
    case.call_and_validate(base_url=served.url, checks=CHECKS, timeout=10)
