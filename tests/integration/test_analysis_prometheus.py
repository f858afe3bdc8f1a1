"""The built-in prediction-mean-shift, measured by the operator's own client against a real Prometheus.

A small exporter plays two model servers of one model: version 1 (stable) predicts 0.5 on average,
version 2 (the candidate) 0.9, a shift of 0.4 against a max of 0.15. Their histograms'
`_count` and `_sum` grow with time at a rate the test sets, so `rate()` and `increase()` see
steady traffic. While the candidate makes fewer predictions per window than the analysis needs,
the measurement is Inconclusive and says why, although the bare shift is there to read; once it
makes enough, the same shift fails.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import start_http_server
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from slipway.api.modeldeployment import AnalysisMetric, AnalysisResult
from slipway.devstack.prometheus import LocalPrometheus, ScrapeTarget, write_targets
from slipway.prometheus import measure, value_of
from slipway.reconcile.analysis import MIN_PREDICTIONS, QueryContext, render_query
from tests.support import wait_for

pytestmark = pytest.mark.integration

NAMESPACE, MODEL = "analysis", "churn"
WINDOW_S = 3
CTX = QueryContext(NAMESPACE, MODEL, candidate=2, stable=1, window=f"{WINDOW_S}s")
SHIFT = AnalysisMetric(name="prediction-mean-shift", max=0.15)
MEANS = {"1": 0.5, "2": 0.9}
LABELS = ["model", "revision"]
STABLE_RATE = 20.0  # predictions per second
FEW_RATE = 0.5 * MIN_PREDICTIONS / WINDOW_S  # half of what a window needs
MANY_RATE = 3.0 * MIN_PREDICTIONS / WINDOW_S


@dataclass
class Revision:
    mean: float
    rate: float
    count: float = 0.0
    since: float = 0.0


class ModelServers(Collector):
    """slipway_prediction_value (the predictor's histogram) of each revision, computed at scrape time."""

    def __init__(self) -> None:
        now = time.monotonic()
        self.revisions = {
            "1": Revision(MEANS["1"], STABLE_RATE, since=now),
            "2": Revision(MEANS["2"], FEW_RATE, since=now),
        }
        self.lock = threading.Lock()

    def _count(self, r: Revision, now: float) -> float:
        return r.count + r.rate * (now - r.since)

    def set_rate(self, revision: str, rate: float) -> None:
        """From now on; the counts made so far stay (a counter only grows)."""
        with self.lock:
            r = self.revisions[revision]
            now = time.monotonic()
            r.count, r.since, r.rate = self._count(r, now), now, rate

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily("slipway_prediction_value", "Predicted probabilities.", labels=LABELS)
        now = time.monotonic()
        with self.lock:
            for name, r in self.revisions.items():
                count = self._count(r, now)
                family.add_metric([MODEL, name], buckets=[("+Inf", count)], sum_value=count * r.mean)
        yield family


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[ModelServers, LocalPrometheus]]:
    servers = ModelServers()
    registry = CollectorRegistry()
    registry.register(servers)
    exporter, _ = start_http_server(0, "127.0.0.1", registry)
    prometheus = LocalPrometheus(tmp_path, scrape_interval="500ms")
    address = f"127.0.0.1:{exporter.server_address[1]}"
    write_targets(prometheus.targets_file, [ScrapeTarget(address, NAMESPACE, MODEL, f"{MODEL}-0")])
    prometheus.start()
    try:
        yield servers, prometheus
    finally:
        prometheus.stop()
        exporter.shutdown()


def shift(prometheus: LocalPrometheus) -> AnalysisResult:
    now = datetime.now(UTC).isoformat()
    [result] = measure(prometheus.url, [SHIFT], CTX, now)
    return result


def bare_shift(prometheus: LocalPrometheus) -> float | None:
    """The shift without the guard: what the analysis would judge on if it took any window."""
    query = render_query(SHIFT, CTX).split(" and on() ")[0]
    value, _ = value_of(prometheus.url, query)
    return value


def test_a_mean_shift_on_too_few_predictions_is_inconclusive_until_there_are_enough(
    servers: tuple[ModelServers, LocalPrometheus],
) -> None:
    model_servers, prometheus = servers
    # A full window of both versions' series, so only the candidate's count can hold the verdict.
    wait_for(lambda: bare_shift(prometheus), timeout=60, interval=0.5, what="both versions' series in Prometheus")
    time.sleep(WINDOW_S)  # the first scrapes leave the window: every measurement below sees a full one
    few = []
    for _ in range(4):  # a measurement a second, as a window slides along
        few.append(shift(prometheus))
        time.sleep(1)
    assert {r.verdict for r in few} == {"Inconclusive"}, few
    assert all(r.value is None and f"fewer than {MIN_PREDICTIONS} predictions" in r.message for r in few), few
    bare = bare_shift(prometheus)
    assert bare is not None and bare == pytest.approx(0.4, abs=0.01), bare  # the shift was there to misjudge

    model_servers.set_rate("2", MANY_RATE)

    def judged() -> AnalysisResult | None:
        result = shift(prometheus)
        return result if result.verdict != "Inconclusive" else None

    result = wait_for(judged, timeout=30, interval=0.5, what="a verdict once the candidate predicts enough")
    assert result.verdict == "Failed" and result.value == pytest.approx(0.4, abs=0.01), result
    assert result.message.startswith(f"{result.value:g} > max 0.15"), result
