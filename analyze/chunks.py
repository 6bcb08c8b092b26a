"""Consecutive items in lists of bounded total size: how big work is cut into batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def packed(items: Iterable[T], size: Callable[[T], int], limit: int) -> Iterator[list[T]]:
    """Consecutive items in lists of at most `limit` total size; an item bigger than that alone."""
    pack: list[T] = []
    n = 0
    for item in items:
        m = size(item)
        if pack and n + m > limit:
            yield pack
            pack, n = [], 0
        pack.append(item)
        n += m
    if pack:
        yield pack
