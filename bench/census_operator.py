"""`slipway operator` that tells what holds its memory: SIGUSR1 appends a census to a file.

For `operator_scale.py --census FILE`, which signals it every few seconds while the parents are
worked off. Each census: the RSS, the live objects by type (count, and shallow size of the
largest types), and asyncio's tasks. A gc walk costs tens of milliseconds, once per signal.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
import time
from collections import Counter
from types import FrameType

import psutil


def census(signum: int, frame: FrameType | None) -> None:
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] += 1
        sizes[name] += sys.getsizeof(obj)
    try:
        tasks = len(asyncio.all_tasks())
    except RuntimeError:
        tasks = -1
    rss = psutil.Process().memory_info().rss / 2**20
    with open(os.environ["SLIPWAY_CENSUS_OUT"], "a") as out:
        out.write(f"=== t={time.time():.1f} rss={rss:.0f}MiB tasks={tasks} gc-tracked={sum(counts.values())}\n")
        for name, size in sizes.most_common(12):
            out.write(f"  {size / 2**20:8.1f} MiB {counts[name]:9d} {name}\n")


if __name__ == "__main__":
    signal.signal(signal.SIGUSR1, census)
    from slipway.cli.main import main

    sys.exit(main(["operator", *sys.argv[1:]]))
