"""Analysis: the PromQL behind each metric, and the verdict on a measured value.

The predictor labels its series with `model` and `revision` (the version number); Prometheus's
scrape adds `namespace`. Built-in queries aggregate to a single value over one analysis interval.
A value that cannot be judged (no series, NaN from no traffic, an error) is Inconclusive: it never
counts as a pass.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

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


# Predictions each version needs in a window before their means are compared: the mean of a
# handful is noise, not a shift (once in CI an unchanged model measured 0.17 right after a
# Prometheus restart, whose first windows hold a second or two of traffic). Fewer is Inconclusive.
MIN_PREDICTIONS = 10


def _mean_prediction(ctx: QueryContext, version: int | None) -> str:
    selector = _selector(ctx, version)
    total = _rate("slipway_prediction_value_sum", selector, ctx.window)
    return f"({total} / {_rate('slipway_prediction_value_count', selector, ctx.window)})"


def _enough_predictions(ctx: QueryContext, version: int | None) -> str:
    """Empty unless `version` made at least MIN_PREDICTIONS predictions in the window."""
    count = f"sum(increase(slipway_prediction_value_count{_selector(ctx, version)}[{ctx.window}]))"
    return f"({count} >= {MIN_PREDICTIONS})"


def _latency(quantile: float, ctx: QueryContext) -> str:
    buckets = f"rate(slipway_request_duration_seconds_bucket{_selector(ctx, ctx.candidate)}[{ctx.window}])"
    return f"histogram_quantile({quantile}, sum by (le) ({buckets}))"


def _input_psi(ctx: QueryContext) -> str:
    """The candidate's PSI per feature and pod, at its worst within the window."""
    return f"max_over_time(slipway_input_psi{_selector(ctx, ctx.candidate)}[{ctx.window}])"


NO_DATA = "no data (no series, or no traffic in the window)"
TOP_FEATURES = 3  # features named in a feature-drift result's message


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
        shift = f"abs({_mean_prediction(ctx, ctx.candidate)} - {_mean_prediction(ctx, ctx.stable)})"
        enough = " and on() ".join(_enough_predictions(ctx, v) for v in (ctx.candidate, ctx.stable))
        return f"{shift} and on() {enough}"
    if metric.name == "feature-drift":
        # The predictor exports a feature's PSI once its window holds enough rows (SLIPWAY_INPUT_MIN_ROWS):
        # until then there is no series, and the measurement is inconclusive.
        return f"max({_input_psi(ctx)})"
    query = metric.query or ""
    for placeholder, value in (
        ("{{candidate}}", str(ctx.candidate)),
        ("{{stable}}", "" if ctx.stable is None else str(ctx.stable)),
        ("{{namespace}}", ctx.namespace),
    ):
        query = query.replace(placeholder, value)
    return query


def no_data(metric: AnalysisMetric) -> str:
    """Why a metric's query returned nothing, for an Inconclusive result's message."""
    if metric.name == "prediction-mean-shift":
        return f"no data (fewer than {MIN_PREDICTIONS} predictions of the candidate or the stable one in the window)"
    return NO_DATA


def render_breakdown(metric: AnalysisMetric, ctx: QueryContext) -> str | None:
    """A query whose series explain a built-in metric's value (None: the value says it all).

    feature-drift: the features with the largest PSI, one series each, labelled `feature`.
    """
    if metric.name == "feature-drift":
        return f"topk({TOP_FEATURES}, max by (feature) ({_input_psi(ctx)}))"
    return None


def describe_breakdown(metric: AnalysisMetric, series: list[tuple[str, float]]) -> str:
    """The breakdown's series (label value, value) in a few words for the result's message."""
    if not series or metric.name != "feature-drift":
        return ""
    ranked = sorted(series, key=lambda s: (-s[1], s[0]))[:TOP_FEATURES]
    return "largest PSI: " + ", ".join(f"{name} {value:.3g}" for name, value in ranked)


def judge(metric: AnalysisMetric, value: float | None, problem: str, now: str, detail: str = "") -> AnalysisResult:
    """Passed, Failed or Inconclusive for one measurement (`problem` says why there is no value;
    `detail`, e.g. which features drift most, is added to the message of a judged value)."""
    if value is None or math.isnan(value) or math.isinf(value):
        why = problem or no_data(metric)
        return AnalysisResult(metric=metric.name, value=None, verdict="Inconclusive", message=why, time=now)
    value = round(value, 6)
    verdict: Literal["Passed", "Failed"] = "Passed"
    message = "within limits"
    if metric.min is not None and value < metric.min:
        verdict, message = "Failed", f"{value:g} < min {metric.min:g}"
    elif metric.max is not None and value > metric.max:
        verdict, message = "Failed", f"{value:g} > max {metric.max:g}"
    if detail:
        message = f"{message} ({detail})"
    return AnalysisResult(metric=metric.name, value=value, verdict=verdict, message=message, time=now)


def drift_query(namespace: str, model: str, query: str | None) -> str:
    """A TrainingSchedule's drift value: its own query with {{namespace}} and {{model}} filled in,
    or the built-in one: the largest PSI of any feature of any version of the model served now."""
    if query:
        return query.replace("{{namespace}}", namespace).replace("{{model}}", model)
    return f'max(slipway_input_psi{{namespace="{namespace}",model="{model}"}})'


INPUT_SERIES = {
    "psi": "slipway_input_psi",
    "missing": "slipway_input_missing_fraction",
    "outOfRange": "slipway_input_out_of_range_fraction",
}


def input_queries(namespace: str, model: str, version: int) -> dict[str, str]:
    """Instant queries of one version's input monitor: each figure by feature (the worst of its pods),
    and `rows`, the rows in its pods' windows (what `kubectl slipway status` shows)."""
    selector = _selector(QueryContext(namespace, model, version, None, ""), version)
    queries = {key: f"max by (feature) ({name}{selector})" for key, name in INPUT_SERIES.items()}
    return queries | {"rows": f"sum(slipway_input_window_rows{selector})"}


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
