"""Measurements from Prometheus (prometheus-api-client); failures become Inconclusive results."""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from ..api.modeldeployment import AnalysisMetric, AnalysisResult
from ..reconcile.analysis import (
    NO_DATA,
    QueryContext,
    describe_breakdown,
    input_queries,
    judge,
    no_data,
    render_breakdown,
    render_query,
)

TIMEOUT_SECONDS = 5  # a slow Prometheus must not stall the rollout's other work


def scalar(result: list[dict[str, object]], empty: str = NO_DATA) -> tuple[float | None, str]:
    """The single value of an instant-query result, or why there is none (`empty`: no series)."""
    if not result:
        return None, empty
    if len(result) > 1:
        return None, f"the query returned {len(result)} series; aggregate it to one (e.g. with sum)"
    value = result[0].get("value")
    if not isinstance(value, list) or len(value) != 2:
        return None, "the query did not return an instant vector"
    return float(value[1]), ""


def labelled(result: list[dict[str, Any]], label: str) -> list[tuple[str, float]]:
    """(value of `label`, value) of each series of an instant-query result; NaN samples left out."""
    out = []
    for series in result:
        value = series.get("value")
        if isinstance(value, list) and len(value) == 2 and not math.isnan(float(value[1])):
            out.append((str((series.get("metric") or {}).get(label, "")), float(value[1])))
    return out


def failure(error: Exception) -> str:
    """Why a query failed, for a result's message: what went wrong underneath (a refused connection,
    a read timeout) rather than the HTTP client's wrapper, whose text starts with the URL and the
    whole query, so that the cause fell past any sensible cut."""
    cause: BaseException = error
    for _ in range(5):  # requests' ConnectionError -> urllib3's MaxRetryError -> its reason
        inner = getattr(cause, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in cause.args if isinstance(a, BaseException)), None)
        if inner is None:
            break
        cause = inner
    text = str(error) if cause is error else f"{type(cause).__name__}: {cause}"
    return f"query failed: {type(error).__name__}: {text[:200]}"


def client_for(url: str, timeout: float = TIMEOUT_SECONDS) -> PrometheusConnect:
    return PrometheusConnect(url=url, disable_ssl=True, timeout=timeout, retry=Retry(total=0))


def measure(url: str, metrics: Sequence[AnalysisMetric], ctx: QueryContext, now: str) -> list[AnalysisResult]:
    """One measurement of every metric, queried in parallel. Unreachable or a bad query is Inconclusive.

    No retries: a measurement that fails is Inconclusive and the next interval measures again,
    so a down Prometheus costs one connection attempt, not a back-off that stalls the rollout.
    """
    client = client_for(url)

    def one(metric: AnalysisMetric) -> AnalysisResult:
        try:
            value, problem = scalar(client.custom_query(render_query(metric, ctx)), no_data(metric))
        except Exception as error:  # unreachable, timeout, 4xx/5xx from a bad query: never a pass
            value, problem = None, failure(error)
        return judge(metric, value, problem, now, breakdown(metric) if value is not None else "")

    def breakdown(metric: AnalysisMetric) -> str:
        """Which features drift most, for the message; the value stands without it if the query fails."""
        query = render_breakdown(metric, ctx)
        if query is None:
            return ""
        try:
            return describe_breakdown(metric, labelled(client.custom_query(query), "feature"))
        except Exception:
            return ""

    if not metrics:
        return []
    with ThreadPoolExecutor(max_workers=len(metrics)) as pool:
        return list(pool.map(one, metrics))


def value_of(url: str, query: str) -> tuple[float | None, str]:
    """The one value of an instant query, or None and why (unreachable, an error, no data, NaN)."""
    try:
        value, problem = scalar(client_for(url).custom_query(query))
    except Exception as error:  # unreachable, timeout, a bad query: no value, never a trigger
        return None, failure(error)
    if value is not None and (math.isnan(value) or math.isinf(value)):
        return None, "the query returned NaN or infinity (no traffic in the window?)"
    return value, problem


class InputFigures(NamedTuple):
    """One version's input monitor now: the rows in its window, and per feature its PSI, missing and
    out-of-range shares (a feature without a figure has no entry)."""

    rows: int | None
    by_feature: dict[str, dict[str, float]]


def input_figures(url: str, namespace: str, model: str, version: int, timeout: float = 3.0) -> InputFigures:
    """The input monitor's figures of one version (raises if Prometheus cannot answer)."""
    client = client_for(url, timeout)
    by_feature: dict[str, dict[str, float]] = {}
    rows: int | None = None
    for key, query in input_queries(namespace, model, version).items():
        result = client.custom_query(query)
        if key == "rows":
            value, _ = scalar(result)
            rows = None if value is None else int(value)
            continue
        for feature, value in labelled(result, "feature"):
            by_feature.setdefault(feature, {})[key] = value
    return InputFigures(rows, by_feature)
