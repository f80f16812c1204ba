"""Decode ahead of the model: run a generator in a background thread, at most ``depth`` items ahead.

Decoding (libsndfile, the numpy resampler and high-pass, libjpeg via Pillow) and ONNX
Runtime / PyTorch all release the GIL in their heavy parts, so a thread is enough for the
next block or the next photos to be decoded while the model works on the current batch.
The queue is bounded, so memory holds ``depth`` decoded items whatever the input's size.
While the thread runs, numpy's BLAS (the resampler's and high-pass's matrix products) is held to
one thread: the model's runtime has its own pool, and two pools on the same cores thrash
(measured on 2 cores, 1-hour recording: 561x real time with OpenBLAS's default two threads,
848x with one, INT8 call model).
An exception in the generator is re-raised in the consumer at the point it happened;
when the consumer stops early (an error, Ctrl-C), the producer is told to stop and
exits at its next item.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetch(items: Iterable[T], depth: int = 2, *, name: str = "birdvision-decode") -> Iterator[T]:
    """Yield ``items`` in order, produced by a daemon thread that stays at most ``depth`` items ahead.

    ``depth=0`` runs the generator inline (no thread): the same results, one core.
    """
    if depth <= 0:
        yield from items
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield from _ahead(items, depth, name)


def _ahead(items: Iterable[T], depth: int, name: str) -> Iterator[T]:
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
            put(_Failed(e))
        finally:
            close = getattr(items, "close", None)
            if close is not None and stop.is_set():
                close()

    worker = threading.Thread(target=produce, name=name, daemon=True)
    worker.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join(timeout=5.0)
