"""Dynamic batching: concurrent requests share one forward pass, a lone request never waits.

A request announces itself when it reaches the server (`arriving()`, a `Ticket`) and submits its
item once it is parsed. The worker takes the first queued item, then everything queued behind
it that fits in `max_batch_size`; it waits for more (at most `max_wait` seconds after the first)
only while other announced requests are still on their way. So at concurrency 1 a request runs
at once, and under load the requests that pile up while a batch runs form the next batch.

If a batch of several items fails, each item is run again alone, so one bad request fails only
itself. Pure asyncio; no knowledge of models or HTTP.

`max_concurrent` batches may run at once (default 1: one after the other). More than one suits a
`run` that hands the batch to other processes (the ray-serve engine's replicas): the next batch
forms, as before, from what queued while every slot was busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger(__name__)


class Ticket:
    """A request on its way to the batcher; closed when it submits or gives up (idempotent)."""

    def __init__(self, on_close: Callable[[], None] | None = None) -> None:
        self._on_close = on_close

    def close(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close()


@dataclass
class _Pending(Generic[T, R]):
    item: T
    size: int
    future: asyncio.Future[R] = field(repr=False)


class Batcher(Generic[T, R]):
    """Gathers submitted items into batches for `run`, which returns one result per item.

    `size(item)` is an item's weight (rows); a batch holds at most `max_batch_size` of them,
    except a single item larger than that, which runs alone.
    """

    def __init__(
        self,
        run: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        size: Callable[[T], int] = lambda _: 1,
        max_batch_size: int = 64,
        max_wait: float = 0.002,
        max_concurrent: int = 1,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if max_wait < 0:
            raise ValueError("max_wait must not be negative")
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._run = run
        self._size = size
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait
        self.max_concurrent = max_concurrent
        self._running: set[asyncio.Task[None]] = set()  # batches in flight when max_concurrent > 1
        self._queue: deque[_Pending[T, R]] = deque()
        self._incoming = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches_run = 0  # for tests and benchmarks: forward passes attempted

    @property
    def incoming(self) -> int:
        """Requests announced and not yet submitted (or given up)."""
        return self._incoming

    def arriving(self) -> Ticket:
        """Announce a request that will submit soon; close the ticket if it never does."""
        self._incoming += 1
        return Ticket(self._arrived)

    def _arrived(self) -> None:
        self._incoming -= 1
        if self._wakeup is not None:
            self._wakeup.set()

    async def submit(self, item: T, ticket: Ticket | None = None) -> R:
        """The result of `item`, computed in some batch; raises what running it raised."""
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._work(), name="slipway-batcher")
        pending: _Pending[T, R] = _Pending(item, self._size(item), loop.create_future())
        self._queue.append(pending)
        if ticket is not None:
            ticket.close()  # sets the wakeup event
        else:
            assert self._wakeup is not None
            self._wakeup.set()
        return await pending.future

    async def close(self) -> None:
        """Stop the worker and the batches in flight (pending items are cancelled)."""
        for task in [self._worker, *self._running]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._worker = None
        self._running.clear()
        while self._queue:
            self._queue.popleft().future.cancel()

    async def _work(self) -> None:
        wakeup = self._wakeup
        assert wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue or len(self._running) >= self.max_concurrent:
                wakeup.clear()
                await wakeup.wait()
            batch = [self._queue.popleft()]
            total = batch[0].size
            deadline = loop.time() + self.max_wait
            while total < self.max_batch_size:
                while self._queue and total + self._queue[0].size <= self.max_batch_size:
                    pending = self._queue.popleft()
                    batch.append(pending)
                    total += pending.size
                if self._queue or total >= self.max_batch_size or self._incoming <= 0:
                    break  # full, or the next item does not fit, or nobody else is coming
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                wakeup.clear()
                try:
                    await asyncio.wait_for(wakeup.wait(), remaining)
                except TimeoutError:
                    break
            if self.max_concurrent == 1:
                await self._run_batch(batch)
            else:
                task = loop.create_task(self._run_batch(batch), name="slipway-batch")
                self._running.add(task)
                task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._wakeup is not None:
            self._wakeup.set()

    async def _run_batch(self, batch: list[_Pending[T, R]]) -> None:
        live = [p for p in batch if not p.future.done()]  # a caller may have gone away
        if not live:
            return
        try:
            self.batches_run += 1
            results = await self._run([p.item for p in live])
            if len(results) != len(live):
                raise RuntimeError(f"the batch gave {len(results)} results for {len(live)} items")
        except Exception as exc:
            if len(live) == 1:
                _settle_error(live[0].future, exc)
                return
            log.warning("a batch of %d failed (%s); running each request alone", len(live), exc)
            for pending in live:
                await self._run_batch([pending])
            return
        for pending, result in zip(live, results, strict=True):
            if not pending.future.done():
                pending.future.set_result(result)


def _settle_error(future: asyncio.Future[R], exc: Exception) -> None:
    if not future.done():
        future.set_exception(exc)
