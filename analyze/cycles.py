"""Elementary cycles of a small directed graph (a lock-order graph).

Tarjan's strongly connected components first (only nodes of one component can
share a cycle), then, inside each component, a depth-first search from every
node s that only visits nodes ordered after s: each elementary cycle is found
exactly once, from its smallest node. That search is exponential in the worst
case, so it stops after `limit` cycles and cycles longer than `max_len`; lock
graphs are small and sparse, and a report needs the short cycles.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

Graph = Mapping[Hashable, Iterable[Hashable]]


def strongly_connected(graph: Graph) -> list[list[Hashable]]:
    """Tarjan's algorithm, iterative (lock graphs can be deep enough for Python's recursion limit)."""
    index: dict[Hashable, int] = {}
    low: dict[Hashable, int] = {}
    on_stack: set[Hashable] = set()
    stack: list[Hashable] = []
    out: list[list[Hashable]] = []
    nodes = set(graph) | {w for vs in graph.values() for w in vs}
    for root in sorted(nodes, key=repr):
        if root in index:
            continue
        work = [(root, iter(graph.get(root, ())))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph.get(w, ()))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
    return out


def simple_cycles(graph: Graph, limit: int = 100, max_len: int = 8) -> list[list[Hashable]]:
    """Elementary cycles as node lists [a, b, c] meaning a->b->c->a, self-loops
    excluded, shortest first."""
    cycles: list[list[Hashable]] = []
    for comp in strongly_connected(graph):
        if len(comp) < 2:
            continue
        order = {v: i for i, v in enumerate(sorted(comp, key=repr))}
        for start in sorted(comp, key=order.__getitem__):
            path = [start]
            work = [iter(_succ(graph, start, order, order[start]))]
            while work and len(cycles) < limit:
                for w in work[-1]:
                    if w == start:
                        cycles.append(list(path))
                    elif w not in path and len(path) < max_len:
                        path.append(w)
                        work.append(iter(_succ(graph, w, order, order[start])))
                        break
                else:
                    work.pop()
                    path.pop()
    return sorted(cycles, key=len)[:limit]


def _succ(graph: Graph, v: Hashable, order: dict, floor: int) -> list[Hashable]:
    """Successors inside the component, not before the cycle's start node."""
    return sorted((w for w in graph.get(v, ()) if w in order and order[w] >= floor), key=order.__getitem__)
