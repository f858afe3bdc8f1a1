"""The predictor as a real KServe model-server process on a real artifact (and a real Feast store).

Each server is `python -m pipelines.predictor` on a free port; fixtures stop it whatever happens.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import torch
from feature_repo import generate as gen
from feature_repo import store as fs
from pipelines.churn import model as churn
from pipelines.churn import validation
from pipelines.predictor import artifact, faults
from prometheus_client.parser import text_string_to_metric_families

from slipway.api.artifacts import Manifest
from slipway.controlplane.server import free_port
from tests.support import REPO, wait_for

pytestmark = pytest.mark.integration

MODEL = "churn"
FEATURES = [*gen.feature_columns(), "charges_per_tenure_month"]
CUSTOMERS = 300


class Server:
    """One `python -m pipelines.predictor` process."""

    def __init__(self, workdir: Path, env: dict[str, str], args: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"predictor-{self.port}.log"
        full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
        cmd = [sys.executable, "-m", "pipelines.predictor", f"--model_name={MODEL}", f"--http_port={self.port}", *args]
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.url, timeout=10)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the predictor exited with {self.process.returncode}:\n{self.log.read_text()}")
        try:
            return self.client.get(f"/v1/models/{MODEL}").status_code == 200
        except httpx.TransportError:
            return False

    def wait_ready(self) -> Server:
        wait_for(self.ready, timeout=90, interval=0.2, what=f"the predictor on port {self.port}")
        return self

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)

    def predict(self, instances: list[Any]) -> httpx.Response:
        return self.client.post(f"/v1/models/{MODEL}:predict", json={"instances": instances})

    def infer(self, body: dict[str, Any]) -> httpx.Response:
        return self.client.post(f"/v2/models/{MODEL}/infer", json=body)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.client.get("/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name.startswith("slipway_")
        }


def sample(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("predictor")


@pytest.fixture(scope="module")
def feast_data(workdir: Path) -> Path:
    """Generated data, applied and materialized into a SQLite online store."""
    data = workdir / "feast"
    gen.generate(data, CUSTOMERS, 5)
    store = fs.apply_repo(fs.REPO_DIR, data)
    fs.materialize_bounded(store, gen.DEFAULT_START, gen.DEFAULT_START + timedelta(days=gen.DEFAULT_DAYS + 1))
    return data


@pytest.fixture(scope="module")
def training_frame(feast_data: Path) -> pd.DataFrame:
    """Rows of the generated feature tables side by side: the stand-in for a training data set."""
    activity = pd.read_parquet(feast_data / f"{gen.ACTIVITY}.parquet")
    billing = pd.read_parquet(feast_data / f"{gen.BILLING}.parquet")
    n = min(len(activity), len(billing))
    raw = pd.concat([activity.iloc[:n].reset_index(drop=True), billing.iloc[:n].reset_index(drop=True)], axis=1)
    raw["charges_per_tenure_month"] = raw["monthly_charges"] / raw["tenure_months"].clip(lower=1)
    return raw[FEATURES]


@pytest.fixture(scope="module")
def run_dir(workdir: Path, training_frame: pd.DataFrame) -> Path:
    """A small artifact as training leaves it: the churn MLP standardized on the generated data, and the
    data's profile in the manifest."""
    mean, std = churn.standardization(training_frame.to_numpy(dtype="float32"))
    torch.manual_seed(3)
    net = churn.ChurnMLP(len(FEATURES), hidden=(16, 8), mean=mean, std=std).eval()
    path = workdir / "runs" / "churn-1"
    manifest = Manifest(metrics={"auc": 0.8}, features=FEATURES, profile=validation.profile(training_frame, FEATURES))
    artifact.write(str(path), churn.torchscript_bytes(net), manifest)
    return path


def forward(run_dir: Path, rows: list[list[float | None]]) -> list[float]:
    model = artifact.load(str(run_dir)).model
    x = np.array([[math.nan if v is None else v for v in row] for row in rows], dtype=np.float32)
    with torch.inference_mode():
        out: list[float] = model(torch.from_numpy(x)).tolist()
    return out


@pytest.fixture(scope="module", params=["direct", "kserve-routes"])
def server(request: pytest.FixtureRequest, workdir: Path, run_dir: Path) -> Iterator[Server]:
    args = () if request.param == "direct" else ("--direct=false",)
    env = {"STORAGE_URI": f"file://{run_dir}", "SLIPWAY_MODEL": MODEL, "SLIPWAY_MODEL_VERSION": "1"}
    srv = Server(workdir, env, args)
    request.addfinalizer(srv.stop)
    yield srv.wait_ready()


ROWS: list[list[float | None]] = [
    [12, 3, 1, 14.5, 80.2, 24, 1, 0, 3.34],
    [2, 40, 6, 3.0, 110.0, 2, 0, 3, 55.0],
    [None, None, None, None, None, None, None, None, None],
]


def test_health_and_readiness(server: Server) -> None:
    assert server.client.get("/v2/health/ready").json() == {"ready": True}
    assert server.client.get(f"/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}
    assert server.client.get(f"/v2/models/{MODEL}/ready").status_code == 200


def test_v1_and_v2_predictions_are_the_torchscript_forward(server: Server, run_dir: Path) -> None:
    expected = forward(run_dir, ROWS)
    response = server.predict(ROWS)
    assert response.status_code == 200, response.text
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-6)
    # objects by feature name, in any order; names left out are imputed like nulls
    objects = [dict(reversed(list(zip(FEATURES, row, strict=True)))) for row in ROWS[:2]] + [{}]
    np.testing.assert_allclose(server.predict(objects).json()["predictions"], expected, rtol=1e-6)
    body = {"id": "req-7", "inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 9], "data": ROWS}]}
    response = server.infer(body)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["id"] == "req-7" and doc["model_name"] == MODEL and doc["model_version"] == "1"
    (output,) = doc["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("predictions", "FP32", [3])
    np.testing.assert_allclose(output["data"], expected, rtol=1e-6)


def test_bad_requests_are_4xx_with_a_message(server: Server) -> None:
    cases = [
        (server.predict([[1, 2, 3]]), "instance 0 has 3 values; the model takes 9"),
        (server.predict([{"monthly_charges": "lots"}]), "feature 'monthly_charges' must be a number"),
        (server.predict([{"monthly_charge": 1}]), "unknown feature 'monthly_charge'"),
        (server.predict([]), '"instances" is empty'),
        (server.client.post(f"/v1/models/{MODEL}:predict", content=b"{nope"), "Unrecognized request format"),
        (server.infer({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}), "[N, 9]"),
    ]
    for response, message in cases:
        assert response.status_code == 400, response.text
        assert message in response.json()["error"]
    unknown = server.client.post("/v1/models/other:predict", json={"instances": [ROWS[0]]})
    assert unknown.status_code == 404 and "other" in unknown.json()["error"]


def test_requests_are_counted(server: Server) -> None:
    before = server.metrics()
    assert server.predict([ROWS[0], ROWS[1]]).status_code == 200
    assert server.predict([[1]]).status_code == 400
    after = server.metrics()
    labels = {"model": MODEL, "revision": "1"}

    def delta(name: str, **extra: str) -> float:
        return sample(after, name, **labels, **extra) - sample(before, name, **labels, **extra)

    assert delta("slipway_requests_total", outcome="success") == 1
    assert delta("slipway_requests_total", outcome="client_error") == 1
    assert delta("slipway_requests_total", outcome="server_error") == 0
    assert delta("slipway_request_duration_seconds_count") == 2
    assert delta("slipway_predictions_total") == 2
    assert delta("slipway_prediction_value_count") == 2
    assert delta("slipway_features_requested_total") == 18
    assert delta("slipway_features_missing_total") == 0
    assert sample(after, "slipway_prediction_value_bucket", **labels, le="1.0") == sample(
        after, "slipway_prediction_value_count", **labels
    )


def input_figures(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], revision: str) -> dict[str, Any]:
    """The input monitor's series of one revision: {metric: {feature: value}} and the window's rows."""
    out: dict[str, Any] = {"rows": sample(values, "slipway_input_window_rows", model=MODEL, revision=revision)}
    for (name, labels), value in values.items():
        found = dict(labels)
        if name.startswith("slipway_input_") and "feature" in found and found.get("revision") == revision:
            out.setdefault(name.removeprefix("slipway_input_"), {})[found["feature"]] = value
    return out


def test_input_drift_missing_and_out_of_range_series_follow_what_is_served(
    workdir: Path, run_dir: Path, training_frame: pd.DataFrame
) -> None:
    """Rows drawn from the training data keep every PSI low; shifted rows (charges tripled, sessions
    left out) raise that feature's PSI and out-of-range share, and the other's missing share."""
    srv = Server(workdir, {"SLIPWAY_MODEL_DIR": str(run_dir), "SLIPWAY_MODEL_VERSION": "4"})
    try:
        srv.wait_ready()
        like_training = training_frame.sample(400, random_state=11)
        for start in range(0, 400, 50):
            part = like_training.iloc[start : start + 50]
            assert srv.predict([[float(v) for v in row] for row in part.to_numpy()]).status_code == 200

        def settled(rows: int) -> dict[str, Any] | None:
            figures = input_figures(srv.metrics(), "4")
            return figures if figures["rows"] == rows and len(figures.get("psi", {})) == len(FEATURES) else None

        before = wait_for(lambda: settled(400), timeout=10, what="400 rows in the input window")
        assert max(before["psi"].values()) < 0.1, before["psi"]
        assert set(before["missing_fraction"].values()) == {0.0}
        assert set(before["out_of_range_fraction"].values()) == {0.0}  # the training data itself

        shifted = like_training.copy()
        shifted["monthly_charges"] = shifted["monthly_charges"] * 3 + 50
        objects = [
            {name: None if name == "sessions_30d" else float(value) for name, value in zip(FEATURES, row, strict=True)}
            for row in shifted.to_numpy()
        ]
        for start in range(0, 400, 50):
            assert srv.predict(objects[start : start + 50]).status_code == 200

        after = wait_for(lambda: settled(800), timeout=10, what="800 rows in the input window")
        assert after["psi"]["monthly_charges"] > 0.5, after["psi"]
        assert after["out_of_range_fraction"]["monthly_charges"] > 0.4
        assert after["missing_fraction"]["sessions_30d"] == 0.5
        unshifted = [f for f in FEATURES if f not in ("monthly_charges", "sessions_30d")]
        assert max(after["psi"][f] for f in unshifted) < 0.1, after["psi"]
    finally:
        srv.stop()


def test_a_faulty_version_answers_5xx_and_is_counted(workdir: Path, run_dir: Path) -> None:
    faulty = faults.make_faulty(str(run_dir), str(workdir / "runs" / "churn-faulty"), error_rate=0.5)
    srv = Server(workdir, {"SLIPWAY_MODEL_DIR": faulty, "SLIPWAY_MODEL": MODEL, "SLIPWAY_MODEL_VERSION": "2"})
    try:
        srv.wait_ready()
        responses = [srv.predict([ROWS[0]]) for _ in range(60)]  # one at a time: one call each
        statuses = [r.status_code for r in responses]
        failed = statuses.count(500)
        assert set(statuses) <= {200, 500} and 10 <= failed <= 50, statuses
        for r in responses:  # the model's own message, not the TorchScript traceback around it
            assert r.status_code == 200 or ("injected fault" in r.json()["error"] and "Traceback" not in r.text)
        response = srv.predict([ROWS[0]] * 3)
        if response.status_code == 500:
            assert "injected fault" in response.json()["error"]
            failed += 1
        values = srv.metrics()
        labels = {"model": MODEL, "revision": "2"}
        assert sample(values, "slipway_requests_total", **labels, outcome="server_error") == failed
        assert sample(values, "slipway_requests_total", **labels, outcome="success") == 61 - failed
    finally:
        srv.stop()


def test_a_shifted_version_serves_shifted_probabilities(workdir: Path, run_dir: Path) -> None:
    shifted = faults.make_faulty(str(run_dir), str(workdir / "runs" / "churn-shifted"), shift=0.3)
    srv = Server(workdir, {"SLIPWAY_MODEL_DIR": shifted, "SLIPWAY_MODEL_VERSION": "3"})
    try:
        srv.wait_ready()
        got = srv.predict(ROWS).json()["predictions"]
        np.testing.assert_allclose(got, np.clip(np.array(forward(run_dir, ROWS)) + 0.3, 0, 1), rtol=1e-6)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def enriched(workdir: Path, run_dir: Path, feast_data: Path) -> Iterator[Server]:
    env = {
        "STORAGE_URI": str(run_dir),
        "SLIPWAY_MODEL_VERSION": "1",
        "SLIPWAY_FEATURE_SERVICE": fs.FEATURE_SERVICE,
        "SLIPWAY_ENTITY_KEY": fs.ENTITY_KEY,
        "SLIPWAY_FEAST_DATA": str(feast_data),
    }
    srv = Server(workdir, env)
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


def test_online_features_give_the_same_prediction_as_explicit_ones(enriched: Server, feast_data: Path) -> None:
    store = fs.open_store(fs.REPO_DIR, feast_data)
    ids = [1001, 1002, 1003, 1150]
    online = fs.online_features(store, ids)
    explicit = [[None if pd_isna(v) else float(v) for v in online.loc[i, FEATURES]] for i in range(len(ids))]
    assert all(v is not None for row in explicit for v in row)  # the store has every feature of these
    by_key = enriched.predict([{"customer_id": i} for i in ids])
    assert by_key.status_code == 200, by_key.text
    by_value = enriched.predict(explicit)
    np.testing.assert_allclose(by_key.json()["predictions"], by_value.json()["predictions"], rtol=1e-6)
    # values in the request override the store's
    override = enriched.predict([{"customer_id": ids[0], "monthly_charges": 1.0}]).json()["predictions"]
    changed = list(explicit[0])
    changed[FEATURES.index("monthly_charges")] = 1.0
    np.testing.assert_allclose(override, enriched.predict([changed]).json()["predictions"], rtol=1e-6)
    # v2: an entity-key input
    body = {"inputs": [{"name": "customer_id", "datatype": "INT64", "shape": [len(ids)], "data": ids}]}
    v2 = enriched.infer(body).json()["outputs"][0]["data"]
    np.testing.assert_allclose(v2, by_value.json()["predictions"], rtol=1e-6)


def test_unknown_entities_and_missing_keys(enriched: Server) -> None:
    before = enriched.metrics()
    unknown = enriched.predict([{"customer_id": 99_999_999}])
    assert unknown.status_code == 200
    nothing = enriched.predict([[None] * len(FEATURES)]).json()["predictions"]
    np.testing.assert_allclose(unknown.json()["predictions"], nothing, rtol=1e-6)  # all imputed
    after = enriched.metrics()
    labels = {"model": MODEL, "revision": "1"}
    missing = sample(after, "slipway_features_missing_total", **labels) - sample(
        before, "slipway_features_missing_total", **labels
    )
    assert missing == 2 * len(FEATURES)
    # what the store returned empty is missing for the input monitor too
    window = wait_for(lambda: input_figures(enriched.metrics(), "1").get("missing_fraction"), timeout=10)
    assert set(window) == set(FEATURES) and min(window.values()) > 0, window
    response = enriched.predict([{"tenure_months": 3}])
    assert response.status_code == 400 and "missing entity key 'customer_id'" in response.json()["error"]
    response = enriched.predict([{"customer_id": "abc"}])
    assert response.status_code == 400 and "customer_id must be an integer" in response.json()["error"]


def pd_isna(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
