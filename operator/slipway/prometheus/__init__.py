"""Measurements from Prometheus (prometheus-api-client); failures become Inconclusive results."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from prometheus_api_client import PrometheusConnect
from urllib3.util.retry import Retry

from ..api.modeldeployment import AnalysisMetric, AnalysisResult
from ..reconcile.analysis import QueryContext, judge, render_query

TIMEOUT_SECONDS = 5  # a slow Prometheus must not stall the rollout's other work


def scalar(result: list[dict[str, object]]) -> tuple[float | None, str]:
    """The single value of an instant-query result, or why there is none."""
    if not result:
        return None, "no data (no series, or no traffic in the window)"
    if len(result) > 1:
        return None, f"the query returned {len(result)} series; aggregate it to one (e.g. with sum)"
    value = result[0].get("value")
    if not isinstance(value, list) or len(value) != 2:
        return None, "the query did not return an instant vector"
    return float(value[1]), ""


def measure(url: str, metrics: Sequence[AnalysisMetric], ctx: QueryContext, now: str) -> list[AnalysisResult]:
    """One measurement of every metric, queried in parallel. Unreachable or a bad query is Inconclusive.

    No retries: a measurement that fails is Inconclusive and the next interval measures again,
    so a down Prometheus costs one connection attempt, not a back-off that stalls the rollout.
    """
    client = PrometheusConnect(url=url, disable_ssl=True, timeout=TIMEOUT_SECONDS, retry=Retry(total=0))

    def one(metric: AnalysisMetric) -> AnalysisResult:
        try:
            value, problem = scalar(client.custom_query(render_query(metric, ctx)))
        except Exception as error:  # unreachable, timeout, 4xx/5xx from a bad query: never a pass
            value, problem = None, f"query failed: {type(error).__name__}: {str(error)[:200]}"
        return judge(metric, value, problem, now)

    if not metrics:
        return []
    with ThreadPoolExecutor(max_workers=len(metrics)) as pool:
        return list(pool.map(one, metrics))
