"""The cycle search under the deadlock analyzer (analyze/cycles.py), checked
against a brute-force enumeration on small random graphs."""

from __future__ import annotations

import itertools
import random

from uetrace.analyze.cycles import simple_cycles, strongly_connected


def _canonical(cycle: list) -> tuple:
    i = cycle.index(min(cycle))
    return tuple(cycle[i:] + cycle[:i])


def _brute_force(graph: dict[int, set[int]]) -> set[tuple]:
    nodes = sorted(graph)
    found = set()
    for k in range(2, len(nodes) + 1):
        for perm in itertools.permutations(nodes, k):
            if all(perm[(i + 1) % k] in graph[perm[i]] for i in range(k)):
                found.add(_canonical(list(perm)))
    return found


def test_two_and_three_cycles():
    graph = {"a": ["b"], "b": ["a", "c"], "c": ["d"], "d": ["b"], "e": ["a"]}
    cycles = simple_cycles(graph)
    assert sorted(map(_canonical, cycles)) == [("a", "b"), ("b", "c", "d")]
    assert len(cycles[0]) == 2  # shortest first


def test_no_cycle_in_consistent_order():
    assert simple_cycles({"a": ["b", "c"], "b": ["c"], "c": []}) == []


def test_self_loop_is_not_a_cycle():
    assert simple_cycles({"a": ["a"]}) == []


def test_components():
    comps = {frozenset(c) for c in strongly_connected({1: [2], 2: [1, 3], 3: [4], 4: []})}
    assert comps == {frozenset({1, 2}), frozenset({3}), frozenset({4})}


def test_matches_brute_force_on_random_graphs():
    rng = random.Random(5)
    for _ in range(60):
        n = rng.randint(2, 6)
        graph = {v: {w for w in range(n) if w != v and rng.random() < 0.35} for v in range(n)}
        assert {_canonical(c) for c in simple_cycles(graph, limit=10_000, max_len=n)} == _brute_force(graph)


def test_limit_bounds_the_search():
    complete = {v: [w for w in range(9) if w != v] for v in range(9)}
    assert len(simple_cycles(complete, limit=50)) == 50
