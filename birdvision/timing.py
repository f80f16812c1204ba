"""Latency measurement shared by the benchmarks: warm-up, repeats, median and p90, pinned threads."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass
class Timing:
    """Wall-clock statistics of repeated calls, in milliseconds."""

    median_ms: float
    p90_ms: float
    mean_ms: float
    iters: int

    def as_dict(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], object], *, warmup: int = 3, iters: int = 20, min_seconds: float = 0.0) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``iters`` calls (and ``min_seconds``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
    return Timing(statistics.median(times), p90, statistics.fmean(times), len(times))


def pin_threads(n: int) -> None:
    """Give PyTorch ``n`` intra-op threads (ONNX Runtime sessions take theirs in SessionOptions).

    On a 2-core machine two engines' thread pools fight and distort each other's timings,
    so benchmarks pin each engine and time them one after the other.
    """
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # can only be set once per process, before parallel work starts
        pass
