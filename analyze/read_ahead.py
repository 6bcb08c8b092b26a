"""Reading the next piece of work while this one is processed: DuckDB on one core, Python on the other.

DuckDB releases the GIL while it runs a query, so a query for the next item, started in a thread
before this item is processed, costs no wall time when it is done first. The thread must use a
DuckDB connection that nothing else uses meanwhile (a cursor of its own, or one the caller leaves
alone while it processes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(items: Iterable[T], read: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """(item, read(item)) for each item, read(next item) running while the caller handles this one.
    The next item is drawn from `items` only once this one's read is done, so a generator can take
    into account what the caller did with the items before."""
    it = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="uetrace-read") as pool:
        item = next(it, None)
        reading = pool.submit(read, item) if item is not None else None
        while reading is not None:
            got = reading.result()
            this, item = item, next(it, None)
            reading = pool.submit(read, item) if item is not None else None
            yield this, got  # type: ignore[misc]
            del got
