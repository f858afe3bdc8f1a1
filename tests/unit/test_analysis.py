"""Analysis: the PromQL behind each metric, and the verdict on a value."""

from __future__ import annotations

import math
import socket
from typing import Any

import pytest

from slipway.api.modeldeployment import AnalysisMetric, AnalysisResult
from slipway.prometheus import client_for, failure, measure
from slipway.reconcile.analysis import (
    QueryContext,
    describe_breakdown,
    input_queries,
    judge,
    overall,
    render_breakdown,
    render_query,
)

CTX = QueryContext(namespace="ml", model="churn", candidate=3, stable=2, window="30s")
CANDIDATE = '{namespace="ml",model="churn",revision="3"}'
STABLE = '{namespace="ml",model="churn",revision="2"}'
NOW = "2026-11-22T10:00:00Z"


def metric(name: str, **fields: Any) -> AnalysisMetric:
    return AnalysisMetric.model_validate({"name": name, **fields})


def balanced(query: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in query:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return not any(depth.values())


# == queries =============================================================================================
def test_error_rate_counts_server_errors_of_the_candidate_and_reads_no_errors_as_zero() -> None:
    query = render_query(metric("error-rate", max=0.01), CTX)
    errors = 'sum(rate(slipway_requests_total{namespace="ml",model="churn",revision="3",outcome="server_error"}[30s]))'
    total = f"sum(rate(slipway_requests_total{CANDIDATE}[30s]))"
    assert query == f"({errors} or vector(0)) / {total}"
    # only the numerator falls back to 0: no requests at all must stay empty (inconclusive)
    assert query.count("vector(0)") == 1 and query.index("vector(0)") < query.index(" / ")


@pytest.mark.parametrize(("name", "quantile"), [("latency-p95", "0.95"), ("latency-p99", "0.99")])
def test_latency_quantiles_of_the_candidate(name: str, quantile: str) -> None:
    query = render_query(metric(name, max=0.2), CTX)
    assert query == (
        f"histogram_quantile({quantile}, sum by (le) (rate(slipway_request_duration_seconds_bucket{CANDIDATE}[30s])))"
    )


def test_prediction_mean_shift_compares_the_candidate_with_the_stable_version() -> None:
    query = render_query(metric("prediction-mean-shift", max=0.1), CTX)

    def mean(selector: str) -> str:
        return (
            f"(sum(rate(slipway_prediction_value_sum{selector}[30s])) / "
            f"sum(rate(slipway_prediction_value_count{selector}[30s])))"
        )

    def enough(selector: str) -> str:
        return f"(sum(increase(slipway_prediction_value_count{selector}[30s])) >= 10)"

    # Empty, hence Inconclusive, unless both versions made enough predictions in the window.
    assert query == f"abs({mean(CANDIDATE)} - {mean(STABLE)}) and on() {enough(CANDIDATE)} and on() {enough(STABLE)}"


def test_too_few_predictions_say_so_when_the_mean_shift_is_inconclusive() -> None:
    result = judge(metric("prediction-mean-shift", max=0.1), None, "", NOW)
    assert result.verdict == "Inconclusive"
    assert result.message == "no data (fewer than 10 predictions of the candidate or the stable one in the window)"


def test_feature_drift_is_the_largest_psi_of_any_feature_and_pod_of_the_candidate() -> None:
    query = render_query(metric("feature-drift", max=0.2), CTX)
    assert query == f"max(max_over_time(slipway_input_psi{CANDIDATE}[30s]))"
    assert render_breakdown(metric("feature-drift", max=0.2), CTX) == (
        f"topk(3, max by (feature) (max_over_time(slipway_input_psi{CANDIDATE}[30s])))"
    )
    assert render_breakdown(metric("error-rate", max=0.01), CTX) is None  # the value says it all


@pytest.mark.parametrize(
    ("series", "described"),
    [
        ([], ""),
        ([("tenure_months", 0.04)], "largest PSI: tenure_months 0.04"),
        (
            [("a", 0.1), ("monthly_charges", 1.23456), ("b", 0.1), ("c", 0.01)],
            "largest PSI: monthly_charges 1.23, a 0.1, b 0.1",  # at most 3, largest first, ties by name
        ),
    ],
)
def test_feature_drift_names_the_features_that_drift_most(series: list[tuple[str, float]], described: str) -> None:
    assert describe_breakdown(metric("feature-drift", max=0.2), series) == described
    assert describe_breakdown(metric("latency-p95", max=0.2), series) == ""


def test_a_judged_value_carries_its_detail_and_an_unjudged_one_does_not() -> None:
    drift = metric("feature-drift", max=0.2)
    failed = judge(drift, 0.61, "", NOW, "largest PSI: monthly_charges 0.61")
    assert (failed.verdict, failed.message) == ("Failed", "0.61 > max 0.2 (largest PSI: monthly_charges 0.61)")
    passed = judge(drift, 0.05, "", NOW, "largest PSI: a 0.05")
    assert (passed.verdict, passed.message) == ("Passed", "within limits (largest PSI: a 0.05)")
    assert judge(drift, None, "", NOW, "largest PSI: a 0.05").message.startswith("no data")


def test_input_queries_of_one_version_by_feature() -> None:
    queries = input_queries("ml", "churn", 3)
    assert queries == {
        "psi": f"max by (feature) (slipway_input_psi{CANDIDATE})",
        "missing": f"max by (feature) (slipway_input_missing_fraction{CANDIDATE})",
        "outOfRange": f"max by (feature) (slipway_input_out_of_range_fraction{CANDIDATE})",
        "rows": f"sum(slipway_input_window_rows{CANDIDATE})",
    }


@pytest.mark.parametrize("name", ["error-rate", "latency-p95", "latency-p99", "prediction-mean-shift", "feature-drift"])
@pytest.mark.parametrize("window", ["30s", "1m", "2m30s"])
def test_built_in_queries_are_well_formed_and_use_the_window(name: str, window: str) -> None:
    query = render_query(metric(name, max=1), CTX._replace(window=window))
    assert balanced(query)
    assert f"[{window}]" in query and query.count("[") == query.count(f"[{window}]")
    assert 'revision="3"' in query and 'namespace="ml"' in query and 'model="churn"' in query


@pytest.mark.parametrize(
    ("query", "ctx", "rendered"),
    [
        (
            'sum(rate(slipway_predictions_total{revision="{{candidate}}"}[1m]))',
            CTX,
            'sum(rate(slipway_predictions_total{revision="3"}[1m]))',
        ),
        (
            'x{revision="{{candidate}}",ns="{{namespace}}"} - x{revision="{{stable}}",ns="{{namespace}}"}',
            CTX,
            'x{revision="3",ns="ml"} - x{revision="2",ns="ml"}',
        ),
        ('x{revision="{{stable}}"}', CTX._replace(stable=None), 'x{revision=""}'),
        ("vector(1)", CTX, "vector(1)"),
        ("{{model}} {{ candidate }}", CTX, "{{model}} {{ candidate }}"),  # only the documented placeholders
    ],
)
def test_custom_query_placeholders(query: str, ctx: QueryContext, rendered: str) -> None:
    assert render_query(metric("custom", query=query, min=1), ctx) == rendered


# == verdicts =============================================================================================
@pytest.mark.parametrize(
    ("bounds", "value", "verdict", "message"),
    [
        ({"max": 0.01}, 0.0, "Passed", "within limits"),
        ({"max": 0.01}, 0.01, "Passed", "within limits"),  # the limit itself is allowed
        ({"max": 0.01}, 0.010001, "Failed", "0.010001 > max 0.01"),
        ({"max": 0.2}, 1.5, "Failed", "1.5 > max 0.2"),
        ({"min": 1}, 1.0, "Passed", "within limits"),
        ({"min": 1}, 0.5, "Failed", "0.5 < min 1"),
        ({"min": 1}, -3.0, "Failed", "-3 < min 1"),
        ({"min": 1, "max": 2}, 1.5, "Passed", "within limits"),
        ({"min": 1, "max": 2}, 0.0, "Failed", "0 < min 1"),
        ({"min": 1, "max": 2}, 3.0, "Failed", "3 > max 2"),
        ({"max": 0.01}, 0.01000000004, "Passed", "within limits"),  # rounded to 6 places first
    ],
)
def test_judge_thresholds(bounds: dict[str, float], value: float, verdict: str, message: str) -> None:
    result = judge(metric("error-rate", **bounds), value, "", NOW)
    assert (result.metric, result.verdict, result.message, result.time) == ("error-rate", verdict, message, NOW)
    assert result.value == round(value, 6)


@pytest.mark.parametrize("value", [None, math.nan, math.inf, -math.inf])  # +-Inf: x/0, and not JSON either
@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("", "no data (no series, or no traffic in the window)"),
        ("query failed: ConnectionError: refused", "query failed: ConnectionError: refused"),
    ],
)
def test_judge_without_a_usable_value_is_inconclusive(value: float | None, problem: str, message: str) -> None:
    result = judge(metric("latency-p95", max=0.2), value, problem, NOW)
    assert (result.verdict, result.value, result.message) == ("Inconclusive", None, message)


def result(verdict: str) -> AnalysisResult:
    return AnalysisResult(metric="m", verdict=verdict)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        (["Passed"], "Passed"),
        (["Passed", "Passed"], "Passed"),
        (["Failed"], "Failed"),
        (["Passed", "Failed"], "Failed"),
        (["Inconclusive"], "Inconclusive"),
        (["Passed", "Inconclusive"], "Inconclusive"),
        (["Inconclusive", "Failed", "Passed"], "Failed"),  # a failure is a failure even beside missing data
        ([], "Inconclusive"),  # nothing measured is never a pass
    ],
)
def test_overall(verdicts: list[str], expected: str) -> None:
    assert overall([result(v) for v in verdicts]) == expected


def test_a_failed_query_says_why_not_which_url() -> None:
    """A refused connection or a read timeout is named in the message; the client's own text starts
    with the URL and the whole query, which pushed the cause past the cut."""
    refused = measure("http://127.0.0.1:1", [metric("error-rate", max=0.05)], CTX, NOW)  # nothing listens on 1
    assert refused[0].verdict == "Inconclusive" and "Connection refused" in refused[0].message, refused
    with socket.socket() as hung:  # accepts connections (the backlog) and never answers: a hung Prometheus
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        with pytest.raises(Exception) as raised:
            client_for(f"http://127.0.0.1:{hung.getsockname()[1]}", timeout=0.2).custom_query(
                render_query(metric("error-rate"), CTX)
            )
    message = failure(raised.value)
    assert message.startswith("query failed: ConnectionError: ") and "Read timed out" in message, message
    assert "slipway_requests_total" not in message
