"""The predictor's batcher: order, size limit, no wait for a lone request, per-request retry."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest
from pipelines.predictor.batcher import Batcher


class Recorder:
    """A run function that records its batches; items equal to "bad" make a batch fail."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate: asyncio.Event | None = None

    async def __call__(self, items: Sequence[str]) -> list[str]:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]


async def turns(n: int = 20) -> None:
    """Let the event loop run every ready callback a few times (no wall-clock wait)."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_results_match_their_items_and_batches_keep_submission_order() -> None:
    async def scenario() -> None:
        run = Recorder()
        batcher: Batcher[str, str] = Batcher(run, max_batch_size=64, max_wait=5)
        tickets = [batcher.arriving() for _ in range(5)]
        items = [f"r{i}" for i in range(5)]
        results = await asyncio.gather(*(batcher.submit(item, t) for item, t in zip(items, tickets, strict=True)))
        assert results == [item.upper() for item in items]
        assert run.batches == [items]
        assert batcher.incoming == 0
        await batcher.close()

    asyncio.run(scenario())


def test_a_batch_holds_at_most_max_batch_size_rows() -> None:
    async def scenario() -> None:
        run = Recorder()
        batcher: Batcher[str, str] = Batcher(run, size=len, max_batch_size=4, max_wait=5)
        items = ["a", "b", "c", "d", "e", "ff", "g", "hhhhhhh"]  # sizes 1,1,1,1,1,2,1,7
        results = await asyncio.gather(*(batcher.submit(item) for item in items))
        assert results == [item.upper() for item in items]
        assert run.batches == [["a", "b", "c", "d"], ["e", "ff", "g"], ["hhhhhhh"]]  # an oversized item runs alone
        assert all(sum(map(len, b)) <= 4 for b in run.batches[:-1])
        await batcher.close()

    asyncio.run(scenario())


def test_a_lone_request_runs_at_once_even_with_a_long_max_wait() -> None:
    async def scenario() -> None:
        run = Recorder()
        batcher: Batcher[str, str] = Batcher(run, max_batch_size=64, max_wait=30.0)
        for i in range(3):  # concurrency 1: one request after the other
            ticket = batcher.arriving()
            start = time.monotonic()
            assert await asyncio.wait_for(batcher.submit(f"x{i}", ticket), timeout=1.0) == f"X{i}"
            assert time.monotonic() - start < 1.0
        assert run.batches == [["x0"], ["x1"], ["x2"]]
        await batcher.close()

    asyncio.run(scenario())


def test_a_batch_waits_for_requests_on_their_way_and_no_longer() -> None:
    async def scenario() -> None:
        run = Recorder()
        batcher: Batcher[str, str] = Batcher(run, max_batch_size=64, max_wait=30.0)
        first, second, third = batcher.arriving(), batcher.arriving(), batcher.arriving()
        a = asyncio.ensure_future(batcher.submit("a", first))
        await turns()
        assert run.batches == []  # two more announced: the batch waits for them
        b = asyncio.ensure_future(batcher.submit("b", second))
        await turns()
        assert run.batches == []
        third.close()  # the third gave up (e.g. a bad request): nobody else is coming
        assert await asyncio.wait_for(asyncio.gather(a, b), timeout=1.0) == ["A", "B"]
        assert run.batches == [["a", "b"]]
        await batcher.close()

    asyncio.run(scenario())


def test_the_wait_is_bounded_by_max_wait() -> None:
    async def scenario() -> None:
        run = Recorder()
        batcher: Batcher[str, str] = Batcher(run, max_batch_size=64, max_wait=0.05)
        batcher.arriving()  # announced, never submits, never closes
        start = time.monotonic()
        assert await asyncio.wait_for(batcher.submit("a", batcher.arriving()), timeout=5.0) == "A"
        assert time.monotonic() - start >= 0.045
        await batcher.close()

    asyncio.run(scenario())


def test_requests_arriving_while_a_batch_runs_form_the_next_batch() -> None:
    async def scenario() -> None:
        run = Recorder()
        run.gate = asyncio.Event()
        batcher: Batcher[str, str] = Batcher(run, max_batch_size=64, max_wait=0.0)
        a = asyncio.ensure_future(batcher.submit("a"))
        await turns()
        assert run.batches == [["a"]]  # running, held by the gate
        rest = [asyncio.ensure_future(batcher.submit(x)) for x in ("b", "c", "d")]
        await turns()
        run.gate.set()
        assert await asyncio.wait_for(asyncio.gather(a, *rest), timeout=1.0) == ["A", "B", "C", "D"]
        assert run.batches == [["a"], ["b", "c", "d"]]
        await batcher.close()

    asyncio.run(scenario())


def test_a_failing_batch_is_retried_one_request_at_a_time() -> None:
    async def scenario() -> None:
        run = Recorder()
        batcher: Batcher[str, str] = Batcher(run, max_batch_size=64, max_wait=5)
        tickets = [batcher.arriving() for _ in range(3)]
        results = await asyncio.gather(
            *(batcher.submit(item, t) for item, t in zip(["a", "bad", "c"], tickets, strict=True)),
            return_exceptions=True,
        )
        assert results[0] == "A" and results[2] == "C"
        assert isinstance(results[1], ValueError)
        assert run.batches == [["a", "bad", "c"], ["a"], ["bad"], ["c"]]
        # a lone failing request fails once, without a retry
        with pytest.raises(ValueError, match="bad item"):
            await batcher.submit("bad")
        assert run.batches[-1] == ["bad"] and len(run.batches) == 5
        await batcher.close()

    asyncio.run(scenario())


def test_a_caller_that_went_away_is_skipped() -> None:
    async def scenario() -> None:
        run = Recorder()
        run.gate = asyncio.Event()
        batcher: Batcher[str, str] = Batcher(run, max_batch_size=64, max_wait=0.0)
        first = asyncio.ensure_future(batcher.submit("a"))
        await turns()
        gone = asyncio.ensure_future(batcher.submit("gone"))
        kept = asyncio.ensure_future(batcher.submit("kept"))
        await turns()
        gone.cancel()
        run.gate.set()
        assert await asyncio.wait_for(asyncio.gather(first, kept), timeout=1.0) == ["A", "KEPT"]
        assert run.batches == [["a"], ["kept"]]
        await batcher.close()

    asyncio.run(scenario())


def test_settings_are_checked() -> None:
    async def run(items: Sequence[str]) -> list[str]:
        return list(items)

    with pytest.raises(ValueError, match="max_batch_size"):
        Batcher(run, max_batch_size=0)
    with pytest.raises(ValueError, match="max_wait"):
        Batcher(run, max_wait=-1)
