"""The input monitor: PSI, missing and out-of-range fractions of served rows against the training
profile (known answers), its time window, its series on /metrics, and where the scorer feeds it."""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from pipelines.churn import validation
from pipelines.predictor.instances import Instances, Key
from pipelines.predictor.metrics import INPUTS, ModelMetrics
from pipelines.predictor.monitor import BROADCAST_ROWS, FLUSH_ROWS, InputMonitor, Reference, monitor_for
from pipelines.predictor.scorer import BatchScorer, Computed, LocalCompute, Scorer
from pipelines.predictor.settings import MonitorSettings
from prometheus_client import REGISTRY

NAN, INF = math.nan, math.inf
EPS = validation.EPSILON
FEATURES = ("a", "b", "c")
# a: three bins with a training range; b: two bins, a profile from before min/max were recorded;
# c: not in the profile at all.
PROFILE: dict[str, Any] = {
    "features": {
        "a": {"edges": [1.0, 2.0], "fractions": [0.25, 0.5, 0.25], "min": 0.0, "max": 3.0},
        "b": {"edges": [10.0], "fractions": [0.5, 0.5]},
    }
}
_models = itertools.count()


def reference() -> Reference:
    return Reference(FEATURES, PROFILE)


def rows(a: Sequence[float], b: Sequence[float] | None = None, c: Sequence[float] | None = None) -> np.ndarray:
    n = len(a)
    columns = [a, b if b is not None else [5.0] * n, c if c is not None else [NAN] * n]
    return np.array(columns, dtype=np.float32).T


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def figures(values: np.ndarray, min_rows: int = 1) -> dict[str, Any]:
    monitor = InputMonitor(reference(), window_s=60, min_rows=min_rows)
    monitor.observe(values)
    count, by_feature = monitor.figures()
    return {"rows": count, **{f.feature: f for f in by_feature}}


# == coding: one value at a time ==========================================================================
# codes of feature a: 0 below min, 1..3 the profile's bins 0..2, 4 above max, 5 (width + 1) missing
@pytest.mark.parametrize(
    ("x", "code"),
    [
        (-1.0, 0),
        (0.0, 1),  # the training min is in range
        (0.5, 1),
        (1.0, 2),  # an edge belongs to the bin above it, as in training (searchsorted side="right")
        (1.5, 2),
        (2.0, 3),
        (3.0, 3),  # the training max is in range
        (3.5, 4),
        (NAN, 5),
        (INF, 5),  # the model imputes non-finite values: missing
        (-INF, 5),
    ],
)
def test_each_value_gets_its_bin_range_or_missing_code(x: float, code: int) -> None:
    ref = reference()
    assert (ref.width, ref.stride) == (4, 6)
    counts = ref.count(rows([x])).reshape(len(FEATURES), ref.stride)
    assert counts[0].tolist() == [int(i == code) for i in range(ref.stride)]
    assert counts[1].tolist() == [0, 1, 0, 0, 0, 0]  # b = 5: below its only edge; no range, so never code 0
    assert counts[2].tolist() == [0, 0, 0, 0, 0, 1]  # c: missing


def test_large_batches_count_as_the_rows_one_by_one() -> None:
    ref = reference()
    rng = np.random.default_rng(1)
    values = rng.uniform(-1, 4, size=(3 * BROADCAST_ROWS, 3)).astype(np.float32)
    values[rng.random(values.shape) < 0.1] = np.nan
    values[:8, 0] = [0, 1, 2, 3, np.inf, -np.inf, np.nextafter(np.float32(3), np.float32(4)), -0.0]
    one_by_one = sum(ref.count(values[i : i + 1]) for i in range(len(values)))
    np.testing.assert_array_equal(ref.count(values), one_by_one)  # searchsorted path
    np.testing.assert_array_equal(ref.count(values[:BROADCAST_ROWS]), one_by_one - ref.count(values[BROADCAST_ROWS:]))


def test_the_range_and_edges_are_compared_as_float32_like_the_served_values() -> None:
    # 0.1 in float32 is 0.100000001...: above the float64 max 0.1, yet it is the training max as served
    ref = Reference(["x"], {"features": {"x": {"edges": [0.1], "fractions": [0.5, 0.5], "min": 0.1, "max": 0.1}}})
    monitor = InputMonitor(ref, min_rows=1)
    monitor.observe(np.array([[0.1]], dtype=np.float32))
    _, (fig,) = monitor.figures()
    assert fig.out_of_range_fraction == 0.0
    assert ref.count(np.array([[0.1]], dtype=np.float32)).tolist()[:4] == [0, 0, 1, 0]  # the upper bin, as trained


# == known answers ======================================================================================
def test_served_data_like_the_training_data_has_zero_psi() -> None:
    got = figures(rows([0.5] * 25 + [1.5] * 50 + [2.5] * 25, [5.0] * 50 + [15.0] * 50))
    assert got["rows"] == 100
    assert got["a"].psi == pytest.approx(0.0, abs=1e-12)
    assert got["b"].psi == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("a", "b", "psi_a", "psi_b"),
    [
        # a: [0.5, 0.5, 0] against [0.25, 0.5, 0.25]; the empty bin is clipped to epsilon
        (
            [0.5] * 50 + [1.5] * 50,
            [5.0] * 50 + [15.0] * 50,
            0.25 * math.log(0.5 / 0.25) + (EPS - 0.25) * math.log(EPS / 0.25),
            0.0,
        ),
        # b: [0.75, 0.25] against [0.5, 0.5]
        (
            [0.5] * 25 + [1.5] * 50 + [2.5] * 25,
            [5.0] * 75 + [15.0] * 25,
            0.0,
            0.25 * math.log(0.75 / 0.5) + (0.25 - 0.5) * math.log(0.25 / 0.5),
        ),
        # a: everything below the training range still lands in the first bin: [1, 0, 0]
        (
            [-7.0] * 100,
            [5.0] * 50 + [15.0] * 50,
            (1 - 0.25) * math.log(1 / 0.25) + (EPS - 0.5) * math.log(EPS / 0.5) + (EPS - 0.25) * math.log(EPS / 0.25),
            0.0,
        ),
    ],
)
def test_psi_known_answers(a: list[float], b: list[float], psi_a: float, psi_b: float) -> None:
    got = figures(rows(a, b))
    assert got["a"].psi == pytest.approx(psi_a, rel=1e-9, abs=1e-12)
    assert got["b"].psi == pytest.approx(psi_b, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize(
    ("a", "missing", "out_of_range"),
    [
        ([0.5, 1.5, 2.5, 2.9], 0.0, 0.0),
        ([0.5, NAN, 2.5, NAN], 0.5, 0.0),  # missing: a share of the rows
        ([-1.0, NAN, 3.5, 1.0], 0.25, 2 / 3),  # out of range: a share of the present values
        ([0.0, 3.0, INF, 1.0], 0.25, 0.0),  # min and max are in range; infinity is missing
        ([NAN, NAN, NAN, NAN], 1.0, None),  # nothing present: no out-of-range share to give
    ],
)
def test_missing_and_out_of_range_fractions(a: list[float], missing: float, out_of_range: float | None) -> None:
    got = figures(rows(a))
    assert got["a"].missing_fraction == pytest.approx(missing)
    if out_of_range is None:
        assert got["a"].out_of_range_fraction is None
    else:
        assert got["a"].out_of_range_fraction == pytest.approx(out_of_range)


def test_features_without_a_range_or_a_profile() -> None:
    got = figures(rows([1.0] * 4, [100.0, 5.0, NAN, 5.0]))
    assert got["b"].out_of_range_fraction is None  # a profile from before min/max: no range to judge
    assert got["b"].missing_fraction == 0.25 and got["b"].psi is not None
    assert got["c"].psi is None and got["c"].out_of_range_fraction is None  # not in the profile
    assert got["c"].missing_fraction == 1.0  # missing values are still counted


def test_psi_waits_for_enough_present_values() -> None:
    monitor = InputMonitor(reference(), min_rows=100)
    monitor.observe(rows([1.5] * 99 + [NAN]))
    _, (a, *_) = monitor.figures()
    assert a.psi is None and a.missing_fraction == 0.01  # 99 present values: too few for a PSI
    monitor.observe(rows([1.5]))
    _, (a, *_) = monitor.figures()
    # [0, 1, 0] against [0.25, 0.5, 0.25]
    assert a.psi == pytest.approx(2 * (EPS - 0.25) * math.log(EPS / 0.25) + (1 - 0.5) * math.log(1 / 0.5), rel=1e-9)


def test_the_same_psi_as_the_training_time_drift_check() -> None:
    rng = np.random.default_rng(3)
    names = ["x", "y"]
    train = pd.DataFrame({"x": rng.normal(size=4000), "y": rng.exponential(size=4000)})
    served = pd.DataFrame({"x": rng.normal(0.5, 1, size=1500), "y": rng.exponential(2, size=1500)})
    monitor = InputMonitor(Reference(names, validation.profile(train, names)), min_rows=1)
    monitor.observe(served.to_numpy(dtype=np.float32))
    _, got = monitor.figures()
    expected = validation.drift(served.astype("float32"), validation.profile(train, names), names)
    assert {f.feature: f.psi for f in got} == pytest.approx(expected, rel=1e-9)
    assert expected["x"] > 0.1 and expected["y"] > 0.1


# == the window ============================================================================================
def test_rows_leave_the_window_after_window_s() -> None:
    clock = Clock()
    monitor = InputMonitor(reference(), window_s=10, min_rows=1, clock=clock)  # 10 buckets of 1 s
    clock.now = 0.5
    monitor.observe(rows([NAN] * 10))
    clock.now = 5.0
    monitor.observe(rows([1.5] * 5))
    clock.now = 9.99
    assert monitor.window()[1] == 15
    count, (a, *_) = monitor.figures()
    assert a.missing_fraction == pytest.approx(10 / 15)
    clock.now = 10.0  # the first second's bucket has left the window
    assert monitor.figures()[0] == 5 and monitor.figures()[1][0].missing_fraction == 0.0
    clock.now = 15.0
    count, (a, *_) = monitor.figures()
    assert count == 0 and a.psi is None and a.missing_fraction is None
    clock.now = 20.5  # the ring's first slot again: its old counts are gone
    monitor.observe(rows([2.5]))
    assert monitor.window()[1] == 1


def test_rows_kept_uncounted_still_count_in_their_own_bucket() -> None:
    clock = Clock()
    monitor = InputMonitor(reference(), window_s=10, min_rows=1, clock=clock)
    clock.now = 0.5
    monitor.observe(rows([1.5] * 3))  # kept, not counted yet: fewer than FLUSH_ROWS rows
    clock.now = 12.0  # counted at this scrape, into the bucket of t=0.5, which is out of the window now
    assert monitor.window()[1] == 0
    clock.now = 13.0
    monitor.observe(rows([1.5] * FLUSH_ROWS))  # enough rows: counted at once
    monitor.observe(rows([NAN]))
    assert monitor.window()[1] == FLUSH_ROWS + 1
    assert monitor.figures()[1][0].missing_fraction == pytest.approx(1 / (FLUSH_ROWS + 1))


def test_an_empty_batch_is_nothing() -> None:
    monitor = InputMonitor(reference())
    monitor.observe(np.empty((0, 3), dtype=np.float32))
    assert monitor.window()[1] == 0


# == set-up and /metrics =====================================================================================
def test_monitor_for_a_manifest() -> None:
    assert monitor_for(FEATURES, PROFILE, MonitorSettings(enabled=False)) is None
    assert monitor_for(FEATURES, {}, MonitorSettings()) is None  # no profile: nothing to compare with
    monitor = monitor_for(FEATURES, PROFILE, MonitorSettings(window_s=30, min_rows=7))
    assert monitor is not None and (monitor.window_s, monitor.min_rows) == (30, 7)


def gauge(name: str, model: str, feature: str | None = None) -> float | None:
    labels = {"model": model, "revision": "1"} | ({"feature": feature} if feature else {})
    return REGISTRY.get_sample_value(name, labels)


def test_series_on_the_registry_per_model_revision_and_feature() -> None:
    name = f"monitor-unit-{next(_models)}"
    metrics = ModelMetrics(name, "1")
    monitor = InputMonitor(reference(), min_rows=1)
    metrics.monitor_inputs(monitor)
    assert gauge("slipway_input_window_rows", name) == 0
    assert gauge("slipway_input_psi", name, "a") is None  # no rows, no PSI
    monitor.observe(rows([-0.5] * 50 + [1.5] * 50))  # bins [0.5, 0.5, 0], half below the range
    assert gauge("slipway_input_window_rows", name) == 100
    assert gauge("slipway_input_psi", name, "a") == pytest.approx(
        0.25 * math.log(0.5 / 0.25) + (EPS - 0.25) * math.log(EPS / 0.25)
    )
    assert gauge("slipway_input_out_of_range_fraction", name, "a") == 0.5
    assert gauge("slipway_input_missing_fraction", name, "c") == 1.0
    assert gauge("slipway_input_out_of_range_fraction", name, "c") is None
    metrics.monitor_inputs(None)
    assert gauge("slipway_input_window_rows", name) is None
    assert {f.name for f in INPUTS.describe()} == {
        "slipway_input_psi",
        "slipway_input_missing_fraction",
        "slipway_input_out_of_range_fraction",
        "slipway_input_window_rows",
    }


# == where the scorer feeds it ================================================================================
def mean_model(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(torch.nan_to_num(x).mean(dim=1))


class Store:
    def __init__(self, rows: dict[Key, list[float]]) -> None:
        self.rows = rows

    def __call__(self, keys: Sequence[Key]) -> np.ndarray:
        return np.array([self.rows.get(k, [NAN] * 3) for k in keys], dtype=np.float32)


def monitored(scorer_metrics: ModelMetrics) -> InputMonitor:
    monitor = InputMonitor(reference(), min_rows=1)
    scorer_metrics.monitor_inputs(monitor)
    return monitor


def by_feature(monitor: InputMonitor) -> dict[str, Any]:
    return {f.feature: f for f in monitor.figures()[1]}


def test_the_kserve_scorer_monitors_the_rows_after_enrichment() -> None:
    metrics = ModelMetrics(f"monitor-unit-{next(_models)}", "1")
    monitor = monitored(metrics)
    store = Store({1: [0.5, 5.0, 7.0], 2: [-4.0, NAN, 7.0]})  # customer 2's b is empty in the store
    scorer = Scorer(mean_model, 3, metrics, lookup=store)
    nothing = np.full((3, 3), NAN, dtype=np.float32)
    nothing[2] = [1.5, 15.0, NAN]  # a row given in full, without a key
    asyncio.run(scorer.score(Instances(nothing, (1, 2, None))))
    got = by_feature(monitor)
    assert monitor.window()[1] == 3
    assert got["a"].missing_fraction == 0 and got["a"].out_of_range_fraction == pytest.approx(1 / 3)
    assert got["b"].missing_fraction == pytest.approx(1 / 3)  # what the store returned empty
    assert got["c"].missing_fraction == pytest.approx(1 / 3)
    scorer.close()


def test_the_values_the_model_saw_come_back_with_each_part_of_a_batch() -> None:
    local = LocalCompute(mean_model, 3, Store({1: [0.5, 5.0, 7.0]}))
    values = np.array([[NAN, NAN, NAN], [1.0, 2.0, 3.0], [4.0, NAN, 6.0]], dtype=np.float32)
    computed = asyncio.run(local(values, (1, None, None)))
    assert computed.values is not None and computed.values[0].tolist() == [0.5, 5.0, 7.0]
    first, rest = computed.split([1, 2])
    assert first.values is not None and first.values.tolist() == [[0.5, 5.0, 7.0]]
    assert rest.values is not None and rest.values.shape == (2, 3)
    plain = asyncio.run(local(values, (None, None, None)))
    assert plain.values is None  # nothing looked up: the front has the rows already
    local.close()


class Remote:
    """The ray-serve front's Compute: the rows come back filled from elsewhere (a replica)."""

    def __init__(self, filled: np.ndarray | None) -> None:
        self.filled = filled

    async def __call__(self, values: np.ndarray, keys: Sequence[Key | None]) -> Computed:
        missing = np.zeros(len(values), dtype=np.int32)
        return Computed(np.full(len(values), 0.5, dtype=np.float32), missing, self.filled)

    def close(self) -> None:
        pass


@pytest.mark.parametrize("filled", [True, False])
def test_the_ray_serve_front_monitors_what_the_replica_filled(filled: bool) -> None:
    metrics = ModelMetrics(f"monitor-unit-{next(_models)}", "1")
    monitor = monitored(metrics)
    given = np.full((2, 3), NAN, dtype=np.float32)
    back = np.array([[1.5, 5.0, 1.0], [1.5, 5.0, 1.0]], dtype=np.float32)
    scorer = BatchScorer(Remote(back if filled else None), 3, metrics, max_concurrent=2)
    asyncio.run(scorer.score(Instances(given, (1, 2))))
    got = by_feature(monitor)
    assert got["a"].missing_fraction == (0.0 if filled else 1.0)


def test_a_monitoring_fault_never_fails_a_prediction(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(InputMonitor):
        def observe(self, values: np.ndarray) -> None:
            raise RuntimeError("boom")

    metrics = ModelMetrics(f"monitor-unit-{next(_models)}", "1")
    metrics.monitor_inputs(Broken(reference()))
    scorer = BatchScorer(Remote(None), 3, metrics)
    got = asyncio.run(scorer.score(Instances(np.zeros((2, 3), dtype=np.float32), (None, None))))
    assert got.tolist() == [0.5, 0.5]
    assert metrics.inputs is None and "input monitoring failed" in caplog.text
