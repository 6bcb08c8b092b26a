"""Differential flame graphs: one profile drawn with the widths of `after`, each frame coloured by how
its share of the samples changed from `before` (red: grew, blue: shrank, white: unchanged), as in
Brendan Gregg's difffolded.pl + flamegraph.pl. Shares, not counts, are compared: two endpoints or two
captures rarely have the same number of samples.
"""

from __future__ import annotations

from uetrace.analyze.stacks.folded import fold
from uetrace.analyze.stacks.samples import StackSet


def _prefix_weights(stacks: StackSet) -> dict[tuple[str, ...], int]:
    """Weight under every stack prefix (frame names root first), i.e. every node of the flame graph."""
    out: dict[tuple[str, ...], int] = {}
    names = [f.name for f in stacks.frames]
    for path, w in zip(stacks.stacks, stacks.weights):
        key: tuple[str, ...] = ()
        for fid in path:
            key = (*key, names[fid])
            out[key] = out.get(key, 0) + w
    return out


def render_diff_svg(after: StackSet, before: StackSet, title: str) -> str:
    from uetrace.analyze.stacks.svg import render_svg
    a_total, b_total = max(after.total, 1), max(before.total, 1)
    before_w = _prefix_weights(before)
    names = [f.name for f in after.frames]

    def paint(node) -> tuple[str, str]:
        key = tuple(names[i] for i in node.path())
        a = node.weight / a_total
        b = before_w.get(key, 0) / b_total
        return _shade(a - b), f"; before {100 * b:.2f}%, change {100 * (a - b):+.2f} points"

    return render_svg(after, title, paint=paint)


def _shade(delta: float) -> str:
    """delta in share points (-1..1) to white..red or white..blue; 20 points or more is full colour."""
    k = min(abs(delta) / 0.2, 1.0)
    fade = int(255 - 200 * k)
    return f"rgb(255,{fade},{fade})" if delta > 0 else f"rgb({fade},{fade},255)" if delta < 0 else "rgb(250,250,250)"


def render_diff_folded(after: StackSet, before: StackSet) -> str:
    """difffolded.pl's format: `stack before after` per line, the union of both profiles' stacks."""
    a, b = fold(after), fold(before)
    lines = []
    for stack in sorted(set(a) | set(b)):
        lines.append(f"{';'.join(stack)} {b.get(stack, 0)} {a.get(stack, 0)}\n")
    return "".join(lines)
