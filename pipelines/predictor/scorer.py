"""Instances in, probabilities out: batching, online enrichment, the forward pass and its metrics.

Two halves, so the ray-serve engine can put the second in other processes:

- `BatchScorer` (the server's side): gathers concurrent requests into batches (`batcher`), hands
  each batch's rows to a `Compute`, splits the answer per request and records the prediction
  metrics, and counts each batch's rows as the model saw them for the input monitor (`monitor`).
  The metrics always live here, in the process that serves `/metrics`.
- `LocalCompute` (the model's side): fills rows from the online store, runs the TorchScript and
  checks its output; returns the probabilities, each row's count of still-missing values and,
  when the store filled any, the rows as filled (so the front monitors what the model saw).

`Scorer` is the kserve engine's pairing: a `BatchScorer` over a `LocalCompute` in this process.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from .batcher import Batcher, Ticket
from .instances import Instances, Key
from .metrics import ModelMetrics

Lookup = Callable[[Sequence[Key]], np.ndarray]

log = logging.getLogger("slipway.predictor")

#: The ticket of the request being handled, set by the HTTP layer when the request arrives.
ARRIVAL: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("slipway_arrival", default=None)

INLINE_ROWS = 4096  # bigger forward passes run in a thread so the event loop keeps serving


class ModelError(RuntimeError):
    """The model failed on a request (answered with 500)."""


@dataclass(frozen=True)
class Scored:
    probabilities: np.ndarray
    missing: int  # feature values still NaN after enrichment


@dataclass(frozen=True)
class Computed:
    """The answer for a batch of rows: float32 probabilities and int32 missing values, one per row,
    and the rows after enrichment (None: the rows as given; nothing was looked up)."""

    probabilities: np.ndarray
    missing: np.ndarray
    values: np.ndarray | None = None

    def split(self, sizes: Sequence[int]) -> list[Computed]:
        """One `Computed` per consecutive group of `sizes` rows."""
        out = []
        start = 0
        for size in sizes:
            end = start + size
            values = None if self.values is None else self.values[start:end]
            out.append(Computed(self.probabilities[start:end], self.missing[start:end], values))
            start = end
        return out


class Compute(Protocol):
    """What scores a batch's rows (NaN = not given) with their entity keys (None: no lookup)."""

    async def __call__(self, values: np.ndarray, keys: Sequence[Key | None]) -> Computed: ...

    def close(self) -> None: ...


class LocalCompute:
    """Enrichment and the forward pass in this process (on `device`: "cpu" or "cuda")."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        n_features: int,
        lookup: Lookup | None = None,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.n_features = n_features
        self.lookup = lookup
        self.device = torch.device(device)
        # Feast's SQLite connection belongs to one thread, and lookups run one batch at a time anyway.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slipway-lookup")

    def forward(self, values: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(values)
        with torch.inference_mode():
            out = self.model(x if self.device.type == "cpu" else x.to(self.device))
        result = out.cpu().numpy() if out.device.type != "cpu" else out.numpy()
        if result.shape != (len(values),):
            raise ModelError(f"the model returned shape {tuple(result.shape)} for {len(values)} rows")
        if not np.isfinite(result).all():
            raise ModelError("the model returned a non-finite probability")
        return result

    def enrich(self, values: np.ndarray, keys: Sequence[Key | None]) -> np.ndarray:
        """Store values where the request gave none (values given in the request win)."""
        assert self.lookup is not None
        distinct = list(dict.fromkeys(k for k in keys if k is not None))
        found = self.lookup(distinct)
        where = {key: i for i, key in enumerate(distinct)}
        rows = [i for i, k in enumerate(keys) if k is not None]
        stored = found[[where[keys[i]] for i in rows]]  # type: ignore[index]
        values = values.copy()
        given = values[rows]
        values[rows] = np.where(np.isnan(given), stored, given)
        return values

    async def __call__(self, values: np.ndarray, keys: Sequence[Key | None]) -> Computed:
        loop = asyncio.get_running_loop()
        enriched = self.lookup is not None and any(k is not None for k in keys)
        if enriched:
            values = await loop.run_in_executor(self._pool, self.enrich, values, keys)
        if len(values) > INLINE_ROWS:
            probabilities = await loop.run_in_executor(None, self.forward, values)
        else:
            probabilities = self.forward(values)
        missing = np.isnan(values).sum(axis=1, dtype=np.int32)
        return Computed(probabilities, missing, values if enriched else None)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class BatchScorer:
    """Batches requests for a `Compute` and records what was predicted.

    `max_concurrent` batches may be in flight at once (1 for an in-process model: a second would
    only compete for the same core).
    """

    def __init__(
        self,
        compute: Compute,
        n_features: int,
        metrics: ModelMetrics,
        max_batch_size: int = 64,
        max_batch_wait_s: float = 0.002,
        max_concurrent: int = 1,
    ) -> None:
        self.compute = compute
        self.n_features = n_features
        self.metrics = metrics
        self.batcher: Batcher[Instances, Scored] = Batcher(
            self._run, len, max_batch_size, max_batch_wait_s, max_concurrent
        )

    def arriving(self) -> Ticket:
        return self.batcher.arriving()

    async def score(self, instances: Instances) -> np.ndarray:
        """Probabilities for the instances (float32, one per row); records the prediction metrics."""
        scored = await self.batcher.submit(instances, ARRIVAL.get())
        self.metrics.predicted(scored.probabilities, scored.probabilities.size * self.n_features, scored.missing)
        return scored.probabilities

    async def _run(self, batch: Sequence[Instances]) -> list[Scored]:
        values = batch[0].values if len(batch) == 1 else np.concatenate([b.values for b in batch])
        keys = [key for b in batch for key in b.keys]
        computed = await self.compute(values, keys)
        if computed.probabilities.shape != (len(values),) or computed.missing.shape != (len(values),):
            raise ModelError(f"got {computed.probabilities.shape} probabilities for {len(values)} rows")
        if self.metrics.inputs is not None:
            self._monitor(values if computed.values is None else computed.values)
        return [Scored(part.probabilities, int(part.missing.sum())) for part in computed.split([len(b) for b in batch])]

    def _monitor(self, seen: np.ndarray) -> None:
        """Count the batch for the input monitor; a monitoring fault never fails a prediction."""
        monitor = self.metrics.inputs
        try:
            if monitor is not None and seen.shape == (len(seen), self.n_features):
                monitor.observe(seen)
        except Exception:
            log.exception("input monitoring failed; it is off for this revision from now on")
            self.metrics.monitor_inputs(None)

    def close(self) -> None:
        self.compute.close()


class Scorer(BatchScorer):
    """The kserve engine's scorer: batches scored by the model in this process."""

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        n_features: int,
        metrics: ModelMetrics,
        lookup: Lookup | None = None,
        max_batch_size: int = 64,
        max_batch_wait_s: float = 0.002,
    ) -> None:
        self.local = LocalCompute(model, n_features, lookup)
        super().__init__(self.local, n_features, metrics, max_batch_size, max_batch_wait_s)


def warm_up(compute: LocalCompute, max_batch_size: int) -> None:
    """A few forward passes at batch sizes up to the maximum: TorchScript optimizes on its first calls."""
    sizes = sorted({1, 2, max(1, max_batch_size // 2), max_batch_size})
    failures = 0
    for _ in range(3):
        for n in sizes:
            try:
                compute.forward(np.zeros((n, compute.n_features), dtype=np.float32))
            except Exception:  # a model that fails on some calls still serves the others
                failures += 1
    if failures:
        log.warning("the model failed %d of %d warm-up calls", failures, 3 * len(sizes))
