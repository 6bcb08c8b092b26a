"""The clock offset between captures of different hosts, from exchanges recorded at both ends: the
minimum-delay method of NTP (RFC 5905 §8).

A paired exchange gives the client's window [t1, t4] on the client's clock (first request byte written,
last response byte read) and the server's [t2, t3] on the server's (first request byte read, last
response byte written). Then offset = ((t2 - t1) + (t3 - t4)) / 2 is the server's clock minus the
client's, wrong by at most delay / 2 where delay = (t4 - t1) - (t3 - t2) is the time on the wire both
ways: the sample of least delay bounds the offset best. Times are wall times from each manifest's
anchors, so the offset is what those anchors leave (NTP's error between the hosts), not the boot times.

Several captures: the first is the reference (offset 0); every other is placed through the pairs it
shares with one already placed (breadth first), its uncertainty the sum along that chain. A capture
with no pair to any placed one is left unaligned (offset 0, uncertainty None): said, not guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sample:
    offset_ns: float  # server clock - client clock
    delay_ns: int

    @classmethod
    def of(cls, t1: int, t2: int, t3: int, t4: int) -> Sample:
        return cls(((t2 - t1) + (t3 - t4)) / 2, (t4 - t1) - (t3 - t2))


@dataclass(frozen=True, slots=True)
class Estimate:
    """One capture's clock against another's, from the sample of least delay."""

    offset_ns: int
    uncertainty_ns: int  # delay / 2 of that sample
    pairs: int  # samples it was chosen among


def best(samples: Iterable[Sample]) -> Estimate | None:
    """The least-delay sample. A negative delay is impossible on a real wire (windows that are not exact
    make one): such samples are used only when there is nothing else, by their smallest |delay|."""
    got = list(samples)
    if not got:
        return None
    sound = [s for s in got if s.delay_ns >= 0]
    pick = min(sound or got, key=lambda s: (abs(s.delay_ns), s.offset_ns))
    return Estimate(round(pick.offset_ns), abs(pick.delay_ns) // 2 + abs(pick.delay_ns) % 2, len(got))


@dataclass(frozen=True, slots=True)
class ClockOffset:
    """A capture's clock minus the reference capture's (subtract it from the capture's wall times to
    align them). `uncertainty_ns` None: no pair placed it; `via`: the capture it was estimated against."""

    offset_ns: int
    uncertainty_ns: int | None
    pairs: int
    via: int | None = None  # index of the capture it was estimated against (None: the reference, or unplaced)

    @property
    def aligned(self) -> bool:
        return self.uncertainty_ns is not None

    def to_dict(self) -> dict:
        return {"offset_ns": self.offset_ns, "uncertainty_ns": self.uncertainty_ns, "pairs": self.pairs,
                "aligned": self.aligned}


def solve(n: int, samples: dict[tuple[int, int], list[Sample]]) -> list[ClockOffset]:
    """Offsets of n captures against capture 0. samples[(client capture, server capture)]: the NTP samples
    of the exchanges paired between them (the offset of the server capture against the client's)."""
    edges: dict[int, list[tuple[int, Estimate, int]]] = {}  # capture -> (other, estimate, sign)
    for (c, s), got in samples.items():
        est = best(got)
        if est is None or c == s:
            continue
        edges.setdefault(c, []).append((s, est, 1))
        edges.setdefault(s, []).append((c, est, -1))
    out: list[ClockOffset | None] = [None] * n
    if n:
        out[0] = ClockOffset(0, 0, 0)
    queue = [0] if n else []
    while queue:
        here = queue.pop(0)
        base = out[here]
        assert base is not None
        # The tightest estimate first, so a capture is placed through its best link.
        for other, est, sign in sorted(edges.get(here, ()), key=lambda e: e[1].uncertainty_ns):
            if out[other] is not None:
                continue
            out[other] = ClockOffset(base.offset_ns + sign * est.offset_ns,
                                     (base.uncertainty_ns or 0) + est.uncertainty_ns, est.pairs, here)
            queue.append(other)
    return [o if o is not None else ClockOffset(0, None, 0) for o in out]
