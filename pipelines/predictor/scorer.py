"""Instances in, probabilities out: batching, online enrichment, the forward pass and its metrics."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from .batcher import Batcher, Ticket
from .instances import Instances, Key
from .metrics import ModelMetrics

Lookup = Callable[[Sequence[Key]], np.ndarray]

#: The ticket of the request being handled, set by the HTTP layer when the request arrives.
ARRIVAL: contextvars.ContextVar[Ticket | None] = contextvars.ContextVar("slipway_arrival", default=None)

INLINE_ROWS = 4096  # bigger forward passes run in a thread so the event loop keeps serving


class ModelError(RuntimeError):
    """The model failed on a request (answered with 500)."""


@dataclass(frozen=True)
class Scored:
    probabilities: np.ndarray
    missing: int  # feature values still NaN after enrichment


class Scorer:
    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        n_features: int,
        metrics: ModelMetrics,
        lookup: Lookup | None = None,
        max_batch_size: int = 64,
        max_batch_wait_s: float = 0.002,
    ) -> None:
        self.model = model
        self.n_features = n_features
        self.metrics = metrics
        self.lookup = lookup
        self.batcher: Batcher[Instances, Scored] = Batcher(self._run, len, max_batch_size, max_batch_wait_s)
        # Feast's SQLite connection belongs to one thread, and lookups run one batch at a time anyway.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slipway-lookup")

    def arriving(self) -> Ticket:
        return self.batcher.arriving()

    async def score(self, instances: Instances) -> np.ndarray:
        """Probabilities for the instances (float32, one per row); records the prediction metrics."""
        scored = await self.batcher.submit(instances, ARRIVAL.get())
        self.metrics.predicted(scored.probabilities, scored.probabilities.size * self.n_features, scored.missing)
        return scored.probabilities

    def forward(self, values: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(values))
        result = out.numpy()
        if result.shape != (len(values),):
            raise ModelError(f"the model returned shape {tuple(result.shape)} for {len(values)} rows")
        if not np.isfinite(result).all():
            raise ModelError("the model returned a non-finite probability")
        return result

    async def _run(self, batch: Sequence[Instances]) -> list[Scored]:
        values = batch[0].values if len(batch) == 1 else np.concatenate([b.values for b in batch])
        keys = [key for b in batch for key in b.keys]
        loop = asyncio.get_running_loop()
        if self.lookup is not None and any(k is not None for k in keys):
            values = await loop.run_in_executor(self._pool, self._enrich, values, keys)
        if len(values) > INLINE_ROWS:
            probabilities = await loop.run_in_executor(None, self.forward, values)
        else:
            probabilities = self.forward(values)
        missing = np.isnan(values).sum(axis=1)
        out = []
        start = 0
        for b in batch:
            end = start + len(b)
            out.append(Scored(probabilities[start:end], int(missing[start:end].sum())))
            start = end
        return out

    def _enrich(self, values: np.ndarray, keys: Sequence[Key | None]) -> np.ndarray:
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

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
