"""The two ends of one TCP connection: sockets paired by their 4-tuples, the offset shift between the
ends' streams, and the `View` a parser reads (roles decided, gaps filled from the other end).

The two sockets of one connection (client and server end, both captured when both processes run on the
traced host) carry the same bytes at the same stream offsets; `Connection` pairs them so that a parser
can read one end and look up who (pid/tid) and when at the other end.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar

import numpy as np

from uetrace.analyze.http.gap_fill import fill_from_peer, may_fill
from uetrace.analyze.http.streams import Stream


class Ends:
    """`local` and `remote` of a class with laddr, lport, raddr and rport fields, as pair_ends compares them."""

    __slots__ = ()
    laddr: str
    lport: int
    raddr: str
    rport: int

    @property
    def local(self) -> tuple[str, int]:
        return (norm_addr(self.laddr), self.lport)

    @property
    def remote(self) -> tuple[str, int]:
        return (norm_addr(self.raddr), self.rport)


@dataclass(slots=True)
class Socket(Ends):
    """One captured socket (one end of a connection) and its two byte streams."""

    sock_id: int
    family: int
    laddr: str
    lport: int
    raddr: str
    rport: int
    egress: Stream
    ingress: Stream
    source: str = "sock"  # "sock" (raw syscall bytes) or "tls" (plaintext from the TLS tracer)

    @property
    def first_ts(self) -> int:
        ts = [s.first_ts for s in (self.egress, self.ingress) if s.hi > s.lo]
        return min(ts) if ts else 0

    @property
    def pid(self) -> int:
        for s in (self.egress, self.ingress):
            if s.hi > s.lo:
                return int(s.rows.pid[s.lo])
        return 0


@dataclass(slots=True)
class Connection:
    """One TCP connection as captured: one socket, or both ends when both processes were traced.
    `peer`'s egress carries the bytes of `sock`'s ingress and vice versa."""

    sock: Socket
    peer: Socket | None = None
    notes: list[str] = field(default_factory=list)
    _shifts: dict[bool, int | None] = field(default_factory=dict)  # see shift(); keyed by "is sock.egress"

    def peer_stream(self, stream: Stream) -> Stream | None:
        """The other end's stream with the same bytes as `stream` (one of sock's two streams)."""
        if self.peer is None:
            return None
        return self.peer.ingress if stream is self.sock.egress else self.peer.egress

    def shift(self, stream: Stream) -> int | None:
        """d such that byte pos of `stream` is byte pos - d of the other end's stream, or None when
        the ends do not line up. The ends differ in length when one capture began later (its head
        is missing: align the tails) or when the reader never read the last bytes written (a gRPC
        GOAWAY before close: align the heads). The captured bytes decide; tails first."""
        key = stream is self.sock.egress
        if key in self._shifts:
            return self._shifts[key]
        other = self.peer_stream(stream)
        d: int | None = None
        if other is not None and other.length:
            tail = stream.length - other.length
            verdicts = {tail: _agreement(stream, other, tail)}
            if tail and verdicts[tail] is not True:
                verdicts[0] = _agreement(stream, other, 0)
            d = next((c for c, v in verdicts.items() if v is True), None)
            if d is None and verdicts[tail] is None:  # nothing to compare: trust the tails
                d = tail
        self._shifts[key] = d
        return d

    def peer_offset(self, stream: Stream, pos: int) -> int | None:
        """Offset at the other end of the byte at `pos` in `stream`, or None when the two ends do not
        line up (see shift), or their bytes at pos differ where both were captured."""
        other = self.peer_stream(stream)
        if other is None or other.length == 0:
            return None
        d = self.shift(stream)
        if d is None:
            return None
        q = pos - d
        if q < 0 or q >= other.length:
            return None
        mine = stream.read(pos, 8)
        theirs = other.read(q, 8)
        if mine is not None and theirs is not None and mine != theirs:
            return None
        return q


def _agreement(stream: Stream, other: Stream, d: int, samples: int = 16) -> bool | None:
    """Whether byte pos of stream equals byte pos - d of other, judged at the start of up to
    `samples` captured stretches of each: True (all compared agree), False (one differs), None
    (no captured byte to compare)."""
    seen = False
    for a, b, shift in ((stream, other, d), (other, stream, -d)):
        for st, data in zip(b.chunk_starts[:samples], b.chunks[:samples]):
            verdict = _same_at(a, st + shift, data)
            if verdict is False:
                return False
            seen = seen or verdict is True
    return True if seen else None


def _same_at(stream: Stream, pos: int, data: bytes) -> bool | None:
    """Whether stream holds data's first bytes (up to 16, at least 4) at pos; None: not captured."""
    hit = stream.chunk_at(pos) if 0 <= pos < stream.length else None
    if hit is None:
        return None
    mine, start = hit
    n = min(16, len(data), start + len(mine) - pos)
    if n < 4:
        return None
    return mine[pos - start:pos - start + n] == data[:n]


def norm_addr(addr: str) -> str:
    """IPv4-mapped IPv6 ("::ffff:1.2.3.4", a dual-stack server's view of an IPv4 client) as IPv4,
    so that the two ends of one connection compare equal."""
    if addr.startswith("::ffff:") and "." in addr:
        return addr[7:]
    return addr


class _End(Protocol):
    @property
    def local(self) -> tuple[str, int]: ...
    @property
    def remote(self) -> tuple[str, int]: ...
    @property
    def first_ts(self) -> int: ...


E = TypeVar("E", bound=_End)


def pair_sockets(sockets: list[Socket]) -> list[Connection]:
    """Match the two ends of each connection (see pair_ends)."""
    return [Connection(a, b) for a, b in pair_ends(sockets)]


def pair_ends(sockets: list[E]) -> list[tuple[E, E | None]]:
    """Match the two ends of each connection: one end's (local, remote) is the other's (remote, local).
    When a 4-tuple was reused within the capture, ends are matched in order of first activity. Works on
    sockets and on planned ones (batches.py), which pair before any payload is read."""
    groups: dict[tuple, list[E]] = defaultdict(list)
    for s in sockets:
        groups[tuple(sorted((s.local, s.remote)))].append(s)
    conns: list[tuple[E, E | None]] = []
    for members in groups.values():
        members.sort(key=lambda s: s.first_ts)
        one = [s for s in members if s.local <= s.remote]
        other = [s for s in members if s.local > s.remote]
        if members[0].local == members[0].remote:  # a socket connected to itself: no peer to find
            conns.extend((s, None) for s in members)
            continue
        for i in range(max(len(one), len(other))):
            a = one[i] if i < len(one) else None
            b = other[i] if i < len(other) else None
            if a is not None and b is not None:
                conns.append((a, b))
            else:
                conns.append((a or b, None))  # type: ignore[arg-type]
    conns.sort(key=lambda c: c[0].first_ts)
    return conns


@dataclass(slots=True)
class View:
    """A connection seen from the one end a parser reads, with roles decided: `requests` carries the
    client's bytes to the server, `responses` the server's to the client."""

    conn: Connection
    requests: Stream
    responses: Stream
    at_client: bool  # the end read is the client's socket

    @classmethod
    def of(cls, conn: Connection, sock: Socket, sock_is_client: bool) -> View:
        if sock is not conn.sock:  # keep `conn.sock` the end being read, so peer lookups work
            conn = Connection(sock, conn.sock, conn.notes)
        if conn.peer is not None:  # bytes one end missed the other may have: a reader's big recv
            peer = conn.peer
            egress = fill_from_peer(sock.egress, peer.ingress, conn.shift(sock.egress)) \
                if may_fill(sock.egress, peer.ingress) else sock.egress
            ingress = fill_from_peer(sock.ingress, peer.egress, conn.shift(sock.ingress)) \
                if may_fill(sock.ingress, peer.egress) else sock.ingress
            if egress is not sock.egress or ingress is not sock.ingress:
                sock = replace(sock, egress=egress, ingress=ingress)
                conn = Connection(sock, conn.peer, conn.notes)
        if sock_is_client:
            return cls(conn, sock.egress, sock.ingress, True)
        return cls(conn, sock.ingress, sock.egress, False)

    def who(self, stream: Stream, pos: int) -> tuple[int | None, int | None, int | None, int | None]:
        """(client pid, client tid, server pid, server tid) of the syscalls that moved byte pos of
        `stream` at both ends; the far end's are None when it was not captured or does not line up."""
        near: tuple[int | None, int | None] = stream.pid_tid(pos) if stream.hi > stream.lo else (None, None)
        far: tuple[int | None, int | None] = (None, None)
        q = self.conn.peer_offset(stream, pos)
        if q is not None:
            other = self.conn.peer_stream(stream)
            if other is not None and other.hi > other.lo:
                far = other.pid_tid(q)
        return (*near, *far) if self.at_client else (*far, *near)

    def who_many(self, stream: Stream, positions: Sequence[int]) -> tuple[list, list, list, list]:
        """`who` for many offsets of one stream: (client pids, client tids, server pids, server tids).
        The far end is mapped by one offset shift checked at the first and last position; if the ends
        do not line up there, each position is checked on its own."""
        n = len(positions)
        none: list[int | None] = [None] * n
        near_pid, near_tid = stream.pid_tid_many(positions) if n and stream.hi > stream.lo else (none, none)
        far_pid, far_tid = none, none
        other = self.conn.peer_stream(stream)
        if n and other is not None and other.hi > other.lo:
            mapped = [self.conn.peer_offset(stream, p) for p in (positions[0], positions[-1])]
            if None not in mapped:
                q = np.asarray(positions, dtype=np.int64) - (self.conn.shift(stream) or 0)
                inside = (q >= 0) & (q < other.length)
                far_pid, far_tid = other.pid_tid_many(q)
                if not inside.all():
                    ok = inside.tolist()
                    far_pid = [p if k else None for p, k in zip(far_pid, ok, strict=True)]
                    far_tid = [t if k else None for t, k in zip(far_tid, ok, strict=True)]
            else:
                far_pid, far_tid = [], []
                for p in positions:
                    qq = self.conn.peer_offset(stream, p)
                    pt = other.pid_tid(qq) if qq is not None else (None, None)
                    far_pid.append(pt[0])
                    far_tid.append(pt[1])
        if self.at_client:
            return near_pid, near_tid, far_pid, far_tid
        return far_pid, far_tid, near_pid, near_tid

    @property
    def client_addr(self) -> str:
        s = self.conn.sock
        return _fmt(*(s.local if self.at_client else s.remote))

    @property
    def server_addr(self) -> str:
        s = self.conn.sock
        return _fmt(*(s.remote if self.at_client else s.local))


def _fmt(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
