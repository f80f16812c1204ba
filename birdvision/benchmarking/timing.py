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

    @classmethod
    def of(cls, times_ms: list[float]) -> Timing:
        """Statistics of raw per-call times."""
        times = sorted(times_ms)
        if not times:
            raise ValueError("no timed calls")
        p90 = times[min(len(times) - 1, int(round(0.9 * (len(times) - 1))))]
        return cls(statistics.median(times), p90, statistics.fmean(times), len(times))

    def as_dict(self) -> dict:
        return asdict(self)


def sample(fn: Callable[[], object], *, warmup: int = 3, iters: int = 20, min_seconds: float = 0.0) -> list[float]:
    """Per-call times of ``fn()`` in ms: ``warmup`` untimed calls, then at least ``iters`` (and ``min_seconds``)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < iters or time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def measure(fn: Callable[[], object], *, warmup: int = 3, iters: int = 20, min_seconds: float = 0.0) -> Timing:
    """Time ``fn()`` (see :func:`sample`)."""
    return Timing.of(sample(fn, warmup=warmup, iters=iters, min_seconds=min_seconds))


def round_ratios(slow_rounds: list[float], fast_rounds: list[float]) -> list[float]:
    """``slow[i] / fast[i]`` for each round ``i`` that both engines ran."""
    return [s / f for s, f in zip(slow_rounds, fast_rounds, strict=True) if f > 0]


def paired_ratio(slow_rounds: list[float], fast_rounds: list[float]) -> float:
    """Median over rounds of ``slow[i] / fast[i]``: a speed ratio that survives background load.

    Round ``i`` of both engines ran back to back, so a burst of load from another process
    slows both sides of one ratio; the median then drops the rounds where a burst hit
    only one of them. Comparing each engine's best or overall median instead lets one
    lucky quiet round, or one noisy engine, decide the ratio.
    """
    pairs = round_ratios(slow_rounds, fast_rounds)
    if not pairs:
        raise ValueError("no paired rounds")
    return statistics.median(pairs)


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
