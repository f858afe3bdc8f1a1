"""Input monitoring: the rows the model is served, against the profile of its training data.

The model manifest carries the training data's profile (`pipelines/churn/validation.py`: per
feature, interior quantile bin edges, the fraction of values in each bin, min and max). Per
feature, over a sliding window of the rows the model was given (after online enrichment, so a
feature Feast returned empty counts as missing), the predictor exports

- `slipway_input_psi`: the population stability index of the window's present values on the
  profile's bins against the training fractions (the training-time drift check's formula and
  epsilon, `validation.psi`); only once the window holds `min_rows` present values of the
  feature, since a PSI of a handful of rows is noise (for k equally likely bins and n rows of the
  training distribution itself, PSI is about (k - 1) / n: 0.045 for 10 bins at n = 200);
- `slipway_input_missing_fraction`: rows whose value is missing (NaN, null, left out, not found
  in the online store; non-finite counts as missing, as the model imputes it);
- `slipway_input_out_of_range_fraction`: present values outside the training [min, max] (only
  for profiles that record them);
- `slipway_input_window_rows`: the rows in the window.

Cost: the request path only keeps each batch's rows (a reference) until `FLUSH_ROWS` rows have
gathered, the time bucket changes or Prometheus scrapes; then they are coded per feature in one
vectorised step (a comparison with each feature's edges, or `np.searchsorted` for many rows) and
counted with one `np.bincount` into their bucket of a ring of `BUCKETS` time buckets. Counting
costs about 10 us for one row, mostly numpy's per-call overhead, and 50 us for 256 rows: gathered,
a single-row request pays 1-2 us on average (bench/README.md has the measured cost). The
fractions and PSI are computed only when Prometheus scrapes (`InputCollector`), from the buckets
inside the window: the last `window_s` seconds, give or take one bucket (`window_s / BUCKETS`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipelines.churn.validation import psi

from .settings import MonitorSettings

log = logging.getLogger("slipway.predictor.monitor")

BUCKETS = 10
DEFAULT_WINDOW_S = 300.0
DEFAULT_MIN_ROWS = 200
BROADCAST_ROWS = 64  # up to this many rows, one comparison of every value with every edge; above, searchsorted
FLUSH_ROWS = 256  # rows kept uncounted at most (counting many rows at once costs far less per row)
LABELS = ("model", "revision", "feature")


@dataclass(frozen=True)
class FeatureFigures:
    """One feature over the window; None where there is nothing to say (too few rows, no profile)."""

    feature: str
    psi: float | None
    missing_fraction: float | None
    out_of_range_fraction: float | None


class Reference:
    """A profile turned into one edge matrix, so that a batch is coded for every feature at once.

    Feature f with interior edges e_0 .. e_{m-1} and training range [lo, hi] gets the row
    [lo, e_0, .., e_{m-1}, next(hi)] (padded with +inf). The code of a present value x is the count
    of edges <= x: 0 is below lo, 1 .. m+1 the profile's bins 0 .. m, m+2 above hi. Missing values
    get code `width + 1`. Without a recorded range, lo is -inf and next(hi) +inf, so codes 0 and
    m+2 never occur. Comparisons are in float32 with the edges rounded to float32: the request's
    values are float32, so a training value at an edge (or at min/max) codes as it did in training.
    """

    def __init__(self, features: Sequence[str], profile: Mapping[str, Any]) -> None:
        stored = profile.get("features") or {}
        self.features = tuple(features)
        self.fractions: list[np.ndarray | None] = []
        self.interior: list[int] = []
        self.ranged = np.zeros(len(features), dtype=bool)
        rows: list[list[float]] = []
        for f, name in enumerate(features):
            entry = stored.get(name)
            if not isinstance(entry, Mapping):
                self.fractions.append(None)
                self.interior.append(0)
                rows.append([-math.inf, math.inf])
                continue
            edges = [float(e) for e in entry.get("edges") or []]
            fractions = np.asarray(entry.get("fractions") or [], dtype=float)
            self.fractions.append(fractions if len(fractions) == len(edges) + 1 else None)
            self.interior.append(len(edges))
            lo, hi = entry.get("min"), entry.get("max")
            if isinstance(lo, int | float) and isinstance(hi, int | float):
                self.ranged[f] = True
                low = float(np.float32(lo))
                high = float(np.nextafter(np.float32(hi), np.float32(np.inf)))
            else:
                low, high = -math.inf, math.inf
            rows.append([low, *edges, high])
        self.width = max((len(r) for r in rows), default=2)
        self.stride = self.width + 2  # codes 0 .. width, and the missing code width + 1
        self.edges = np.full((len(features), self.width), np.inf, dtype=np.float32)
        for f, row in enumerate(rows):
            self.edges[f, : len(row)] = row
        self.offsets = np.arange(len(features), dtype=np.intp) * self.stride
        self.missing_codes = self.offsets + self.width + 1

    @property
    def size(self) -> int:
        """Length of a flat count vector: `stride` codes per feature."""
        return len(self.features) * self.stride

    @property
    def useful(self) -> bool:
        """Whether any feature has bins to compare with."""
        return any(f is not None for f in self.fractions)

    def count(self, values: np.ndarray) -> np.ndarray:
        """The flat counts (`size`) of one batch of rows (N, n_features), codes as in the class docstring."""
        finite = np.isfinite(values)
        if len(values) <= BROADCAST_ROWS:
            codes = np.count_nonzero(values[:, :, None] >= self.edges, axis=2)
        else:
            codes = np.empty(values.shape, dtype=np.intp)
            for f in range(values.shape[1]):
                codes[:, f] = np.searchsorted(self.edges[f], values[:, f], side="right")
        flat = np.where(finite, codes + self.offsets, self.missing_codes)
        return np.bincount(flat.ravel(), minlength=self.size)

    def figures(self, counts: np.ndarray, rows: int, min_rows: int) -> list[FeatureFigures]:
        """PSI, missing and out-of-range fractions per feature from the flat counts of `rows` rows."""
        out = []
        per_feature = counts.reshape(len(self.features), self.stride)
        for f, name in enumerate(self.features):
            c = per_feature[f]
            m = self.interior[f]
            below, above = int(c[0]), int(c[m + 2])
            present = int(c[: m + 3].sum())
            reference = self.fractions[f]
            drift = None
            if reference is not None and present >= max(min_rows, 1):
                bins = c[1 : m + 2].astype(float)
                bins[0] += below
                bins[-1] += above
                drift = psi(reference, bins / present)
            out.append(
                FeatureFigures(
                    feature=name,
                    psi=drift,
                    missing_fraction=int(c[self.width + 1]) / rows if rows else None,
                    out_of_range_fraction=(below + above) / present if self.ranged[f] and present else None,
                )
            )
        return out


class InputMonitor:
    """Counts of the rows served in a ring of `BUCKETS` time buckets covering `window_s` seconds.

    `observe` runs on the request path (the event loop); `window`/`figures` at scrape time, maybe in
    another thread: a lock guards the ring and the rows not counted yet.
    """

    def __init__(
        self,
        reference: Reference,
        window_s: float = DEFAULT_WINDOW_S,
        min_rows: int = DEFAULT_MIN_ROWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not window_s > 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.reference = reference
        self.window_s = window_s
        self.min_rows = min_rows
        self.clock = clock
        self._bucket_s = window_s / BUCKETS
        self._counts = np.zeros((BUCKETS, reference.size), dtype=np.int64)
        self._rows = [0] * BUCKETS
        self._epochs = [-1] * BUCKETS
        self._pending: list[np.ndarray] = []  # rows of the bucket `_pending_epoch`, not counted yet
        self._pending_rows = 0
        self._pending_epoch = -1
        self._lock = threading.Lock()

    def observe(self, values: np.ndarray) -> None:
        """Count a batch of rows as the model was given them (N, n_features).

        The array is kept (not copied) until it is counted: the caller must not change it afterwards
        (the scorer never does; each request's rows are its own).
        """
        if not len(values):
            return
        epoch = int(self.clock() // self._bucket_s)
        with self._lock:
            if epoch != self._pending_epoch:
                self._flush()
                self._pending_epoch = epoch
            self._pending.append(values)
            self._pending_rows += len(values)
            if self._pending_rows >= FLUSH_ROWS:
                self._flush()

    def _flush(self) -> None:
        """Count the rows kept so far into their bucket (the lock is held)."""
        if not self._pending:
            return
        values = self._pending[0] if len(self._pending) == 1 else np.concatenate(self._pending)
        self._pending, self._pending_rows = [], 0
        epoch = self._pending_epoch
        slot = epoch % BUCKETS
        if self._epochs[slot] > epoch:  # their bucket was reused since: they are out of the window anyway
            return
        if self._epochs[slot] != epoch:  # a bucket from an earlier lap of the ring: start it over
            self._counts[slot] = 0
            self._rows[slot] = 0
            self._epochs[slot] = epoch
        self._counts[slot] += self.reference.count(values)
        self._rows[slot] += len(values)

    def window(self) -> tuple[np.ndarray, int]:
        """The flat counts and the rows of the buckets inside the window now."""
        epoch = int(self.clock() // self._bucket_s)
        with self._lock:
            self._flush()
            live = [i for i, e in enumerate(self._epochs) if epoch - BUCKETS < e <= epoch]
            counts = self._counts[live].sum(axis=0) if live else np.zeros(self.reference.size, dtype=np.int64)
            rows = sum(self._rows[i] for i in live)
        return counts, rows

    def figures(self) -> tuple[int, list[FeatureFigures]]:
        counts, rows = self.window()
        return rows, self.reference.figures(counts, rows, self.min_rows)


def monitor_for(features: Sequence[str], profile: Mapping[str, Any], settings: MonitorSettings) -> InputMonitor | None:
    """A monitor for a manifest's features and training profile; None when it is switched off or the
    profile gives nothing to compare with (a manifest from before profiles, or one written by hand)."""
    if not settings.enabled:
        log.info("input monitoring is off (SLIPWAY_INPUT_MONITOR)")
        return None
    reference = Reference(features, profile)
    if not reference.useful:
        log.warning("input monitoring is off: the manifest has no training profile for the model's features")
        return None
    if not reference.ranged.all():
        unranged = [f for f, ranged in zip(features, reference.ranged, strict=True) if not ranged]
        log.info("no training range (min/max) in the profile for %s: no out-of-range figures", ", ".join(unranged))
    return InputMonitor(reference, settings.window_s, settings.min_rows)


class InputCollector(Collector):
    """The monitors' figures as gauges, computed when Prometheus scrapes (one per model revision)."""

    def __init__(self) -> None:
        self._monitors: dict[tuple[str, str], InputMonitor] = {}

    def watch(self, model: str, revision: str, monitor: InputMonitor | None) -> None:
        """Export `monitor`'s figures as this revision's (None: stop exporting them)."""
        if monitor is None:
            self._monitors.pop((model, revision), None)
        else:
            self._monitors[(model, revision)] = monitor

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "slipway_input_psi",
                "Population stability index of each feature's served values (sliding window) against the "
                "training data's profile bins.",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "slipway_input_missing_fraction",
                "Share of the window's rows whose feature value was missing after enrichment.",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "slipway_input_out_of_range_fraction",
                "Share of the window's present feature values outside the training data's [min, max].",
                labels=LABELS,
            ),
            GaugeMetricFamily(
                "slipway_input_window_rows", "Rows in the input monitor's sliding window.", labels=LABELS[:2]
            ),
        )

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        drift, missing, out_of_range, window = self._families()
        for (model, revision), monitor in list(self._monitors.items()):
            rows, figures = monitor.figures()
            window.add_metric([model, revision], rows)
            for fig in figures:
                labels = [model, revision, fig.feature]
                if fig.psi is not None:
                    drift.add_metric(labels, fig.psi)
                if fig.missing_fraction is not None:
                    missing.add_metric(labels, fig.missing_fraction)
                if fig.out_of_range_fraction is not None:
                    out_of_range.add_metric(labels, fig.out_of_range_fraction)
        yield from (drift, missing, out_of_range, window)
