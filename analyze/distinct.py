"""Distinct values and rows of integers, fast.

np.unique of numpy 2.x finds the distinct values of an integer array by hashing when it is asked for
nothing else: on millions of mostly distinct values (trace roots, timestamps) that took 2-3 s where
sorting takes 0.03 s. sorted_unique sorts.
"""

from __future__ import annotations

import math

import numpy as np


def distinct_rows(codes: tuple[np.ndarray, ...] | list[np.ndarray], sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True) for codes in [-1, size - 1)
    (-1: null): the distinct rows, and each row's index into them. Each row is packed into one integer
    (mixed radix) when it fits: a row-wise unique sorts a structured view, ten times slower."""
    if math.prod(sizes) >= 2**62:
        keys, inverse = np.unique(np.stack(codes, axis=1), axis=0, return_inverse=True)
        return keys, inverse.reshape(-1)
    packed = np.zeros(len(codes[0]), np.int64)
    for c, size in zip(codes, sizes):
        packed = packed * size + (c.astype(np.int64) + 1)
    distinct, inverse = np.unique(packed, return_inverse=True)
    keys = np.empty((len(distinct), len(codes)), np.int64)
    for i in range(len(codes) - 1, -1, -1):
        distinct, keys[:, i] = np.divmod(distinct, sizes[i])
    return keys - 1, inverse.reshape(-1)


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values) for an integer array: its distinct values, ascending."""
    s = np.sort(values)
    return s[np.concatenate(([True], s[1:] != s[:-1]))] if len(s) else s
