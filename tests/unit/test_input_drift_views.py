"""Where the predictors' input-monitor series are read: the feature-drift analysis (its message names
the features that drift most) and `kubectl slipway status`; against a stub Prometheus HTTP API."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from slipway.api.modeldeployment import AnalysisMetric
from slipway.cli.plugin import NO_FIGURES, drift_section, render_inputs
from slipway.prometheus import InputFigures, input_figures, measure
from slipway.reconcile.analysis import QueryContext

CTX = QueryContext(namespace="ml", model="churn", candidate=3, stable=2, window="30s")
NOW = "2026-11-22T10:00:00Z"
Answer = Callable[[str], tuple[int, list[dict[str, Any]]]]


def series(value: float, **labels: str) -> dict[str, Any]:
    return {"metric": labels, "value": [1700000000.0, str(value)]}


@pytest.fixture
def prometheus() -> Iterator[Callable[[Answer], str]]:
    """A stub of Prometheus's instant-query API; the test says what each query answers."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Answer) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = parse_qs(urlparse(self.path).query).get("query", [""])[0]
                status, result = answer(query)
                body = {"status": "success", "data": {"resultType": "vector", "result": result}}
                if status != 200:
                    body = {"status": "error", "errorType": "bad_data", "error": "no"}
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


DRIFT = AnalysisMetric.model_validate({"name": "feature-drift", "max": 0.2})


def test_a_feature_drift_result_names_the_features_that_drift_most(prometheus: Callable[[Answer], str]) -> None:
    def answer(query: str) -> tuple[int, list[dict[str, Any]]]:
        if query.startswith("topk("):
            return 200, [series(0.61, feature="monthly_charges"), series(0.12, feature="tenure_months")]
        return 200, [series(0.61)]

    (result,) = measure(prometheus(answer), [DRIFT], CTX, NOW)
    assert (result.verdict, result.value) == ("Failed", 0.61)
    assert result.message == "0.61 > max 0.2 (largest PSI: monthly_charges 0.61, tenure_months 0.12)"


def test_the_value_stands_when_its_breakdown_fails(prometheus: Callable[[Answer], str]) -> None:
    def answer(query: str) -> tuple[int, list[dict[str, Any]]]:
        return (400, []) if query.startswith("topk(") else (200, [series(0.05)])

    (result,) = measure(prometheus(answer), [DRIFT], CTX, NOW)
    assert (result.verdict, result.message) == ("Passed", "within limits")


def test_no_psi_series_yet_is_inconclusive(prometheus: Callable[[Answer], str]) -> None:
    (result,) = measure(prometheus(lambda query: (200, [])), [DRIFT], CTX, NOW)
    assert (result.verdict, result.value) == ("Inconclusive", None)


def test_input_figures_by_feature(prometheus: Callable[[Answer], str]) -> None:
    def answer(query: str) -> tuple[int, list[dict[str, Any]]]:
        assert 'revision="3"' in query and 'namespace="ml"' in query
        if query.startswith("sum(slipway_input_window_rows"):
            return 200, [series(812)]
        if "slipway_input_psi" in query:
            return 200, [series(1.5, feature="a"), series(float("nan"), feature="b")]
        if "missing" in query:
            return 200, [series(0.0, feature="a"), series(0.25, feature="b")]
        return 200, [series(0.5, feature="a")]

    figures = input_figures(prometheus(answer), "ml", "churn", 3)
    assert figures == InputFigures(812, {"a": {"psi": 1.5, "missing": 0.0, "outOfRange": 0.5}, "b": {"missing": 0.25}})


# == kubectl slipway status =================================================================================
def test_features_are_ranked_by_psi_then_missing() -> None:
    figures = InputFigures(
        900,
        {
            "calm": {"psi": 0.01, "missing": 0.0, "outOfRange": 0.0},
            "empty": {"missing": 1.0},
            "shifted": {"psi": 1.2, "missing": 0.0, "outOfRange": 0.48},
            "gappy": {"missing": 0.3},
        },
    )
    lines = render_inputs("candidate", 3, figures, top=3)
    assert lines[0] == "    candidate v3 (900 rows in the window; top 3 of 4 features):"
    assert [line.split()[0] for line in lines[2:]] == ["shifted", "calm", "empty"]
    assert lines[2].split() == ["shifted", "1.200", "0.0%", "48.0%"]
    assert lines[4].split() == ["empty", "-", "100.0%", "-"]
    assert render_inputs("stable", 2, InputFigures(None, {})) == [f"    stable v2: {NO_FIGURES}"]


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "churn", "namespace": "ml"},
        "spec": {"model": "churn", "prometheus": {"url": "http://prometheus.monitoring:9090"}},
        "status": status,
    }


def test_status_shows_both_versions_from_the_deployments_prometheus_or_the_one_given() -> None:
    asked: list[tuple[str, str, str, int]] = []

    def fetch(url: str, namespace: str, model: str, version: int) -> InputFigures:
        asked.append((url, namespace, model, version))
        return InputFigures(10, {"a": {"psi": 0.5}} if version == 3 else {})

    text = drift_section(deployment(stableVersion=2, candidateVersion=3), None, fetch)
    assert asked == [
        ("http://prometheus.monitoring:9090", "ml", "churn", 2),
        ("http://prometheus.monitoring:9090", "ml", "churn", 3),
    ]
    assert "stable v2: no input figures" in text and "candidate v3 (10 rows" in text and "0.500" in text
    asked.clear()
    drift_section(deployment(stableVersion=2), "http://127.0.0.1:9090", fetch)
    assert asked == [("http://127.0.0.1:9090", "ml", "churn", 2)]
    assert drift_section(deployment(), None, fetch) == ""  # nothing served yet


def test_status_says_why_there_are_no_figures() -> None:
    def unreachable(url: str, namespace: str, model: str, version: int) -> InputFigures:
        raise ConnectionError("Failed to resolve 'prometheus.monitoring'\nmore")

    text = drift_section(deployment(stableVersion=2, candidateVersion=3), None, unreachable)
    assert text.count("did not answer") == 1  # asked once, not once per version
    assert "ConnectionError: Failed to resolve 'prometheus.monitoring'" in text and "--prometheus" in text
    no_url = deployment(stableVersion=2)
    no_url["spec"].pop("prometheus")
    assert "no Prometheus URL" in drift_section(no_url, None, unreachable)
