"""Brendan Gregg's folded stacks: one line per distinct stack, `frame;frame;...;leaf count`,
root first, as written by stackcollapse-perf.pl and read by flamegraph.pl and inferno.

Kernel frames get the `_[k]` suffix (stackcollapse-perf.pl --kernel, which
flamegraph.pl --color=java and inferno colour as kernel), Python frames `_[py]`. A frame name cannot
hold ';' (the separator) or a newline: those become ':' and ' '.
"""

from __future__ import annotations

from collections.abc import Iterable

from uetrace.analyze.stacks.samples import Frame, StackSet

KERNEL_SUFFIX = "_[k]"
PYTHON_SUFFIX = "_[py]"


def frame_name(f: Frame) -> str:
    name = f.name.replace(";", ":").replace("\n", " ")
    return name + KERNEL_SUFFIX if f.kernel else name + PYTHON_SUFFIX if f.kind == "python" else name


def fold(stacks: StackSet) -> dict[tuple[str, ...], int]:
    """Merge stacks that print the same (e.g. two pids of one comm)."""
    out: dict[tuple[str, ...], int] = {}
    names = [frame_name(f) for f in stacks.frames]
    for path, w in zip(stacks.stacks, stacks.weights):
        key = tuple(names[i] for i in path)
        out[key] = out.get(key, 0) + w
    return out


def render(folded: dict[tuple[str, ...], int]) -> str:
    """Lines sorted by stack, so that the same capture always gives the same file."""
    return "".join(f"{';'.join(stack)} {count}\n" for stack, count in sorted(folded.items()) if count > 0)


def parse(lines: Iterable[str] | str) -> dict[tuple[str, ...], int]:
    """Read folded text back (counts of repeated stacks add up)."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    out: dict[tuple[str, ...], int] = {}
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, sep, count = line.rpartition(" ")
        if not sep or not count.isdigit():
            raise ValueError(f"folded line {n}: expected 'frame;...;frame count', got {line[:80]!r}")
        key = tuple(stack.split(";"))
        out[key] = out.get(key, 0) + int(count)
    return out
