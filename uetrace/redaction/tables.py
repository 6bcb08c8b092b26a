"""Redaction of decoded tables: the payload columns of sock_data, tls_data and net_packet, and the
command lines of the processes table. The same code serves the capture (every table passes through
SegmentSink on its way to the spool) and `trace redact` (an existing archive).

The cheap test is vectorized (trigger_scan.py: Hyperscan over the column's data buffer, RE2 for
what is anchored to a row's start or end) and picks the rows that may hold a secret; only those,
and the later rows of their streams, are parsed in Python. State is kept per stream (connection
and direction; for packets, interface, direction and ports), bounded by STREAMS_MAX.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.redaction.cmdline import mask_cmdline
from uetrace.redaction.hpack_values import H2Direction, looks_like_h2, looks_like_headers_frame, mask_h2
from uetrace.redaction.http1 import mask_http1
from uetrace.redaction.policy import RedactionPolicy
from uetrace.redaction.trigger_scan import TriggerScan, row_heads

PAYLOAD_KINDS = ("sock_data", "tls_data")
_MESSAGE_START = re.compile(rb"HTTP/[0-9]|[A-Z][A-Z_-]{2,15} +[^ \r\n]")
STREAMS_MAX = 65536      # streams with state; beyond it the oldest are forgotten (a header split then is missed)
_CMDLINE_TRIGGER = r"(?i)pass|pwd|secret|token|key|auth|credential|session|cookie|bearer|://"


@dataclass
class _Stream:
    carry: bytes = b""
    h2: H2Direction | None = None
    next_seq: int | None = None     # packets: the sequence number the carry continues at


@dataclass
class TableRedactor:
    """Not thread-safe: one caller at a time (the sink's worker thread)."""

    policy: RedactionPolicy = field(default_factory=RedactionPolicy)
    masked: dict[str, int] = field(default_factory=dict)     # values masked, per table
    # Per table: a TLS connection's sock_data (ciphertext) and tls_data (its text) share stream keys.
    _by_kind: dict[str, dict[int, _Stream]] = field(default_factory=dict)
    blanked: dict[str, int] = field(default_factory=dict)   # rows whose column was masked whole (a failure)
    error: str = ""

    def __post_init__(self) -> None:
        self._streams: dict[int, _Stream] = {}
        self._payload_scan = TriggerScan(self.policy.trigger_words())
        self._packet_scan = TriggerScan(self.policy.trigger_words(), packets=True)

    def to_manifest(self) -> dict:
        out = {"enabled": True, "policy": self.policy.to_manifest(), "masked": dict(sorted(self.masked.items()))}
        if self.blanked:
            out["blanked"] = dict(sorted(self.blanked.items()))
            out["error"] = self.error
        return out

    def redact(self, kind: str, table: pa.Table) -> pa.Table:
        """`table` with its secrets masked, same rows, same lengths. Should masking fail (a bug, input
        no test foresaw), the column is masked whole instead: never a secret written, never a
        capture stopped; the manifest counts such rows under `blanked`."""
        if not table.num_rows:
            return table
        self._streams = self._by_kind.setdefault(kind, {})
        column = {"net_packet": "payload", "processes": "cmdline"}.get(kind, "payload" if kind in PAYLOAD_KINDS else "")
        if column not in table.column_names:
            return table
        try:
            if kind in PAYLOAD_KINDS:
                return self._payloads(kind, table)
            if kind == "net_packet":
                return self._packets(kind, table)
            return self._cmdlines(kind, table)
        except Exception as e:
            self._by_kind[kind] = {}
            self.blanked[kind] = self.blanked.get(kind, 0) + table.num_rows
            self.error = self.error or f"{kind}: {type(e).__name__}: {str(e)[:200]}"
            return _blank(table, column)

    # ---- socket and TLS payloads -------------------------------------------------------------

    def _payloads(self, kind: str, table: pa.Table) -> pa.Table:
        plain = _binary(table.column("payload"))
        tls, frames, heads = _starts(plain)
        captured = table.column("captured").to_numpy()
        moved = table.column("bytes").to_numpy()
        lengths = pc.fill_null(pc.binary_length(plain), 0).to_numpy(zero_copy_only=False)
        whole = (moved == captured) & (captured == lengths)
        hits = self._payload_scan.rows(plain, whole, heads=heads)
        rows, keys = self._candidates(plain, lambda: _stream_keys(table), hits,
                                      skip=tls if kind == "sock_data" else None, extra=frames)
        if not len(rows):
            return table
        payloads = pc.take(plain, pa.array(rows)).to_pylist()
        changed: dict[int, bytes] = {}
        count = 0
        for row, data in zip(rows.tolist(), payloads):
            if data is None:
                continue
            key = int(keys[row])
            st = self._stream(key)
            complete = int(moved[row]) == int(captured[row]) == len(data)
            buf = bytearray(data)
            if st.h2 is None and not st.carry:
                if looks_like_h2(data):
                    st.h2 = H2Direction()
                elif looks_like_headers_frame(data):
                    st.h2 = H2Direction(table_lost=True)
            if st.h2 is not None:
                n = mask_h2(buf, max(int(moved[row]), len(data)), st.h2, self.policy)
            else:
                buf, n, carry = _mask_with_carry(buf, st.carry, self.policy)
                st.carry = carry if complete else b""
                if not st.carry:
                    del self._streams[key]
            if n:
                count += n
                changed[row] = bytes(buf)
        return self._replace(kind, table, "payload", changed, count)

    # ---- packets -----------------------------------------------------------------------------

    def _packets(self, kind: str, table: pa.Table) -> pa.Table:
        plain = _binary(table.column("payload"))
        cols = {c: table.column(c).to_numpy() for c in ("protocol", "l4_offset", "payload_len", "seq")}
        tcp = (cols["protocol"] == 6) & (cols["l4_offset"] > 0) & (cols["payload_len"] > 0)
        starts = _tcp_payload_starts(plain, cols["l4_offset"], tcp)
        lengths = pc.fill_null(pc.binary_length(plain), 0).to_numpy(zero_copy_only=False)
        whole = tcp & (lengths - starts == cols["payload_len"])
        hits = self._packet_scan.rows(plain, whole, starts) & tcp
        rows, keys = self._candidates(plain, lambda: _flow_keys(table), hits)
        if not len(rows):
            return table
        rows = rows[tcp[rows]]
        if not len(rows):
            return table
        frames = pc.take(plain, pa.array(rows)).to_pylist()
        changed: dict[int, bytes] = {}
        count = 0
        for row, frame in zip(rows.tolist(), frames):
            l4 = int(cols["l4_offset"][row])
            if frame is None or l4 + 13 > len(frame):
                continue
            body = l4 + (frame[l4 + 12] >> 4) * 4
            total = int(cols["payload_len"][row])
            if body >= len(frame):
                continue
            key, seq = int(keys[row]), int(cols["seq"][row])
            st = self._stream(key)
            if st.next_seq is not None and st.next_seq != seq:
                st.carry = b""
                if st.h2 is not None:
                    st.h2.lost, st.h2.skip = True, 0
            buf = bytearray(frame)
            payload = buf[body:]
            if st.h2 is None and not st.carry and looks_like_h2(bytes(payload)):
                st.h2 = H2Direction()
            if st.h2 is not None:
                n = mask_h2(payload, max(total, len(payload)), st.h2, self.policy)
                out = payload
            else:
                out, n, carry = _mask_with_carry(payload, st.carry, self.policy)
                st.carry = carry if len(payload) == total else b""
            st.next_seq = (seq + total) & 0xFFFFFFFF
            if st.h2 is None and not st.carry:
                # Nothing to continue: a flow kept with no state would have every later packet parsed
                # here (one chance match in a header made that 1.4 us a packet under the nginx bench).
                del self._streams[key]
            if n:
                _fix_checksum(buf, l4, body, out)
                buf[body:] = out
                count += n
                changed[row] = bytes(buf)
        return self._replace(kind, table, "payload", changed, count)

    # ---- command lines -----------------------------------------------------------------------

    def _cmdlines(self, kind: str, table: pa.Table) -> pa.Table:
        col = table.column("cmdline")
        hits = pc.fill_null(pc.match_substring_regex(col, _CMDLINE_TRIGGER), False)
        rows = np.flatnonzero(hits.to_numpy(zero_copy_only=False))
        changed: dict[int, str] = {}
        count = 0
        for row, text in zip(rows.tolist(), pc.take(col, pa.array(rows, pa.int64())).to_pylist()):
            if text is None:
                continue
            masked, n = mask_cmdline(text)
            if n:
                changed[row] = masked
                count += n
        return self._replace(kind, table, "cmdline", changed, count)

    # ---- common ------------------------------------------------------------------------------

    def _candidates(self, plain: pa.Array, make_keys: Callable[[], np.ndarray], hits: np.ndarray,
                    skip: np.ndarray | None = None,
                    extra: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows to parse: the trigger `hits` (less the rows in `skip`) or `extra` picks, and every row
        of a stream that has state or has a matching row in this batch (its later payloads may
        continue what that one began); and the rows' stream keys, computed only then (80 ns a row)."""
        if skip is not None:
            hits &= ~skip
        if extra is not None:
            hits |= extra
        if not self._streams and not hits.any():
            return np.flatnonzero(hits), np.zeros(0, np.uint64)
        keys = make_keys()
        streams = np.unique(keys[hits])
        if self._streams:
            streams = np.union1d(streams, np.fromiter(self._streams, dtype=np.uint64, count=len(self._streams)))
        return np.flatnonzero(hits | np.isin(keys, streams)), keys

    def _stream(self, key: int) -> _Stream:
        st = self._streams.get(key)
        if st is None:
            if len(self._streams) >= STREAMS_MAX:
                self._streams.pop(next(iter(self._streams)))
            st = self._streams[key] = _Stream()
        return st

    def _replace(self, kind: str, table: pa.Table, name: str, changed: dict, count: int) -> pa.Table:
        if not changed:
            return table
        self.masked[kind] = self.masked.get(kind, 0) + count
        idx = table.schema.get_field_index(name)
        col = table.column(name)
        typ = col.type
        base = col.cast(pa.binary()) if pa.types.is_binary_view(typ) else col.combine_chunks()
        mask = np.zeros(table.num_rows, dtype=bool)
        rows = sorted(changed)
        mask[rows] = True
        values = pa.array([changed[r] for r in rows], type=base.type)
        new = pc.replace_with_mask(base.combine_chunks() if isinstance(base, pa.ChunkedArray) else base,
                                   pa.array(mask), values)
        return table.set_column(idx, table.schema.field(idx), new.cast(typ) if new.type != typ else new)


def _mask_with_carry(buf: bytearray, carry: bytes, policy: RedactionPolicy) -> tuple[bytearray, int, bytes]:
    """Mask a payload read after `carry`, the unfinished last line of the stream's previous payload:
    its first line is read as the rest of that line (a header name or a target cut in two), then the
    whole payload on its own. A payload that starts a message (a request or status line) does not
    continue anything: the carry was the end of a body."""
    if not carry or _MESSAGE_START.match(buf):
        n, out = mask_http1(buf, policy)
        return buf, n, out
    nl = buf.find(b"\n")
    first_end = len(buf) if nl < 0 else nl + 1
    text = bytearray(carry) + buf[:first_end]
    n_first, joined_carry = mask_http1(text, policy, len(carry))
    buf[:first_end] = text[len(carry):]
    n, out = mask_http1(buf, policy)
    one_line = nl < 0 or nl == len(buf) - 1   # then the joined line is the payload's last
    return buf, n_first + n, joined_carry if one_line else out


def _blank(table: pa.Table, name: str) -> pa.Table:
    """Every byte of the column replaced by the mask, lengths kept (for binary, binary_view, string)."""
    idx = table.schema.get_field_index(name)
    col = table.column(name)
    typ = col.type
    arr = col.combine_chunks()
    arr = arr.cast(pa.binary()) if not pa.types.is_binary(arr.type) else arr
    if arr.offset:   # a slice: its validity bitmap starts mid-byte; copy it to offset 0 (rare)
        arr = pa.array(arr.to_pylist(), pa.binary())
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[: len(arr) + 1]
    rel = (offsets - offsets[0]).astype(np.int32)
    data = np.full(int(rel[-1]), ord("*"), dtype=np.uint8)
    blank = pa.Array.from_buffers(pa.binary(), len(arr), [bufs[0], pa.py_buffer(rel), pa.py_buffer(data)],
                                  null_count=arr.null_count, offset=0)
    return table.set_column(idx, table.schema.field(idx), blank.cast(typ))


def _binary(col: pa.ChunkedArray) -> pa.Array:
    """One binary array (the capture builds payloads as binary_view, which the kernels do not take)."""
    arr = col.combine_chunks()
    return arr.cast(pa.binary()) if not pa.types.is_binary(arr.type) else arr


def _starts(plain: pa.Array) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """From the first bytes of each row (one gather): rows that start with a TLS record header
    (content type 20-23, version 3.x), i.e. ciphertext, which holds no secret in the clear and is not
    searched (the regex costs ~2 ns a byte, this a few ns a row; the plaintext is in tls_data); and
    rows that start with an HTTP/2 HEADERS frame (see looks_like_headers_frame). Both need 9 bytes.
    Also the heads themselves, for TriggerScan.rows."""
    h, lengths = row_heads(plain)
    nine = lengths >= 9
    tls = nine & (h[:, 0] >= 20) & (h[:, 0] <= 23) & (h[:, 1] == 3) & (h[:, 2] <= 4)
    length = (h[:, 0].astype(np.int64) << 16) | (h[:, 1].astype(np.int64) << 8) | h[:, 2]
    frames = (nine & (h[:, 3] == 1) & ((h[:, 4] & ~np.uint8(0x2D)) == 0) & ((h[:, 5] & 0x80) == 0)
              & (length > 0) & (length <= 1 << 14) & h[:, 5:9].any(axis=1))
    return tls, frames, (h, lengths)


def _tcp_payload_starts(plain: pa.Array, l4: np.ndarray, tcp: np.ndarray) -> np.ndarray:
    """Where each TCP frame's payload starts (l4 offset + the header's data offset); other rows, and
    frames cut before the data offset, get their length: nothing in them is searched."""
    n = len(plain)
    bufs = plain.buffers()
    offsets = np.frombuffer(bufs[1], dtype=np.int32)[plain.offset: plain.offset + n + 1].astype(np.int64)
    lengths = offsets[1:] - offsets[:-1]
    starts = lengths.copy()
    l4 = l4.astype(np.int64)
    rows = np.flatnonzero(tcp & (l4 + 13 <= lengths))
    if len(rows) and bufs[2] is not None:
        data = np.frombuffer(bufs[2], dtype=np.uint8)
        starts[rows] = np.minimum(l4[rows] + (data[offsets[rows] + l4[rows] + 12] >> 4).astype(np.int64) * 4,
                                  lengths[rows])
    return starts


def _sum16(data: bytes | bytearray) -> int:
    if len(data) % 2:
        data = bytes(data) + b"\0"
    total = int(np.frombuffer(bytes(data), dtype=">u2").sum(dtype=np.uint64))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _fix_checksum(frame: bytearray, l4: int, body: int, new_payload: bytearray) -> None:
    """Update the TCP checksum for a masked payload, incrementally (RFC 1624: HC' = ~(~HC + ~m + m')
    over the changed words): it needs only the bytes that changed, which are all visible, so it holds
    for a frame cut by the snaplen too. (A checksum left partial by offload stays as wrong as it was.)
    The payload starts at an even offset of the segment (the TCP header is whole words)."""
    old_sum, new_sum = _sum16(frame[body:]), _sum16(new_payload)
    hc = int.from_bytes(frame[l4 + 16:l4 + 18], "big")
    total = (~hc & 0xFFFF) + (~old_sum & 0xFFFF) + new_sum
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    frame[l4 + 16:l4 + 18] = (~total & 0xFFFF).to_bytes(2, "big")


def _flow_keys(table: pa.Table) -> np.ndarray:
    """One u64 per (interface, direction, ports) of a packet."""
    u64 = {c: table.column(c).to_numpy().astype(np.uint64) for c in ("ifindex", "direction", "sport", "dport")}
    return ((u64["ifindex"] << np.uint64(40)) | (u64["direction"] << np.uint64(32))
            | (u64["sport"] << np.uint64(16)) | u64["dport"])


def _stream_keys(table: pa.Table) -> np.ndarray:
    """One u64 per (connection, direction): sock_id is random per socket; pid and fd tell apart the
    TLS records whose socket is unknown (sock_id 0)."""
    sock = table.column("sock_id").to_numpy().astype(np.uint64)
    pid = table.column("pid").to_numpy().astype(np.uint64)
    fd = table.column("fd").to_numpy().astype(np.int64).astype(np.uint64)
    direction = table.column("direction").to_numpy().astype(np.uint64)
    with np.errstate(over="ignore"):
        return sock ^ (pid * np.uint64(0x9E3779B97F4A7C15)) ^ (fd << np.uint64(33)) ^ (direction << np.uint64(63))
