"""Stack samples of several captures as one StackSet: each capture's stacks under a frame naming its
host when they come from more than one host (the flame graph's first level is then the machine), as
they are otherwise (captures of one host add up, as one longer capture would)."""

from __future__ import annotations

from collections.abc import Sequence

from uetrace.analyze.stacks.samples import Frame, StackSet


def combine(sets: Sequence[tuple[str, StackSet]]) -> StackSet:
    """sets: (host, its samples), in order. Weights of one unit only (the caller loads one kind)."""
    hosts = {h for h, _ in sets}
    out = StackSet(unit=sets[0][1].unit if sets else "samples",
                   max_depth=max((s.max_depth for _, s in sets), default=StackSet().max_depth))
    ids: dict[Frame, int] = {}

    def intern(f: Frame) -> int:
        got = ids.get(f)
        if got is None:
            got = ids[f] = len(out.frames)
            out.frames.append(f)
        return got

    for host, s in sets:
        top = (intern(Frame(f"[host {host or '?'}]", kind="marker")),) if len(hosts) > 1 else ()
        remap = [intern(f) for f in s.frames]
        for i, stack in enumerate(s.stacks):
            out.stacks.append(top + tuple(remap[f] for f in stack))
            out.weights.append(s.weights[i])
            out.pids.append(s.pids[i])
            out.comms.append(s.comms[i])
            out.truncated.append(s.truncated[i])
            out.keys.append(s.keys[i])
    return out
