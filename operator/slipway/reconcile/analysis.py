"""Analysis: the PromQL behind each metric, and the verdict on a measured value.

The predictor labels its series with `model` and `revision` (the version number); Prometheus's
scrape adds `namespace`. Built-in queries aggregate to a single value over one analysis interval.
A value that cannot be judged (no series, NaN from no traffic, an error) is Inconclusive: it never
counts as a pass.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from ..api.modeldeployment import AnalysisMetric, AnalysisResult


class QueryContext(NamedTuple):
    namespace: str
    model: str
    candidate: int
    stable: int | None
    window: str  # a PromQL range, e.g. "30s"


def _selector(ctx: QueryContext, version: int | None, extra: str = "") -> str:
    labels = f'namespace="{ctx.namespace}",model="{ctx.model}",revision="{version}"'
    return "{" + labels + (f",{extra}" if extra else "") + "}"


def _rate(metric: str, selector: str, window: str) -> str:
    return f"sum(rate({metric}{selector}[{window}]))"


def _mean_prediction(ctx: QueryContext, version: int | None) -> str:
    selector = _selector(ctx, version)
    total = _rate("slipway_prediction_value_sum", selector, ctx.window)
    return f"({total} / {_rate('slipway_prediction_value_count', selector, ctx.window)})"


def _latency(quantile: float, ctx: QueryContext) -> str:
    buckets = f"rate(slipway_request_duration_seconds_bucket{_selector(ctx, ctx.candidate)}[{ctx.window}])"
    return f"histogram_quantile({quantile}, sum by (le) ({buckets}))"


def render_query(metric: AnalysisMetric, ctx: QueryContext) -> str:
    """The PromQL for one metric; placeholders in a custom query are substituted."""
    if metric.name == "error-rate":
        errors = _rate("slipway_requests_total", _selector(ctx, ctx.candidate, 'outcome="server_error"'), ctx.window)
        total = _rate("slipway_requests_total", _selector(ctx, ctx.candidate), ctx.window)
        # No error series yet means no errors; no requests at all stays empty (inconclusive).
        return f"({errors} or vector(0)) / {total}"
    if metric.name == "latency-p95":
        return _latency(0.95, ctx)
    if metric.name == "latency-p99":
        return _latency(0.99, ctx)
    if metric.name == "prediction-mean-shift":
        return f"abs({_mean_prediction(ctx, ctx.candidate)} - {_mean_prediction(ctx, ctx.stable)})"
    query = metric.query or ""
    for placeholder, value in (
        ("{{candidate}}", str(ctx.candidate)),
        ("{{stable}}", "" if ctx.stable is None else str(ctx.stable)),
        ("{{namespace}}", ctx.namespace),
    ):
        query = query.replace(placeholder, value)
    return query


def judge(metric: AnalysisMetric, value: float | None, problem: str, now: str) -> AnalysisResult:
    """Passed, Failed or Inconclusive for one measurement (`problem` says why there is no value)."""
    if value is None or math.isnan(value) or math.isinf(value):
        why = problem or "no data (no series, or no traffic in the window)"
        return AnalysisResult(metric=metric.name, value=None, verdict="Inconclusive", message=why, time=now)
    value = round(value, 6)
    if metric.min is not None and value < metric.min:
        return AnalysisResult(
            metric=metric.name, value=value, verdict="Failed", message=f"{value:g} < min {metric.min:g}", time=now
        )
    if metric.max is not None and value > metric.max:
        return AnalysisResult(
            metric=metric.name, value=value, verdict="Failed", message=f"{value:g} > max {metric.max:g}", time=now
        )
    return AnalysisResult(metric=metric.name, value=value, verdict="Passed", message="within limits", time=now)


def overall(results: list[AnalysisResult]) -> str:
    """One verdict for a measurement of every metric: any failure fails; else any unknown holds."""
    verdicts = {r.verdict for r in results}
    if not verdicts:
        return "Inconclusive"  # nothing measured is never a pass
    if "Failed" in verdicts:
        return "Failed"
    if "Inconclusive" in verdicts:
        return "Inconclusive"
    return "Passed"
