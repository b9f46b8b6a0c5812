"""Work a batch at a time: the one helper behind every loop that takes its items in batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``size`` items (the last one shorter), read from ``items`` as
    needed: a generator of samples is never held whole."""
    if size < 1:
        raise ValueError(f"a batch holds at least 1 item, got {size}")
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def index_batches(n: int, size: int) -> Iterator[np.ndarray]:
    """The indices 0..n-1 in consecutive arrays of ``size`` (the last one shorter)."""
    for first in range(0, n, size):
        yield np.arange(first, min(first + size, n))
