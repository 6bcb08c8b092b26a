"""HTTP/2 (RFC 9113) frames and HPACK (RFC 7541) literals: header values masked in place.

What can be hidden: every literal value (with or without indexing, never-indexed) whose name is a
secret header, and the query values of literal `:path` values, Huffman-coded or not. A Huffman-coded
value is masked symbol by symbol: each hidden symbol is replaced by one whose code has the same
bit length, so the string keeps its byte length AND its decoded length (a decoder's dynamic table
stays the same size). What cannot be: an indexed representation only names a table entry; it hides
a value sent earlier as a literal (masked then) or one of the static table's (public). A header block
cut by the snaplen is read as far as it is visible; when the HPACK state of a stream is lost (a
frame not seen whole), literals whose name is a dynamic-table index are masked whatever they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
from hpack.table import HeaderTable

from uetrace.redaction.http1 import mask_url
from uetrace.redaction.policy import MASK, RedactionPolicy

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_HEADERS, _PUSH_PROMISE, _CONTINUATION, _SETTINGS = 1, 5, 9, 4
_STATIC = [name.decode() for name, _ in HeaderTable.STATIC_TABLE]
_DECODE = {(REQUEST_CODES_LENGTH[s], REQUEST_CODES[s]): s for s in range(256)}
# One replacement per code length: '*' where it has that length, else a letter or digit that does.
_REPLACE: dict[int, int] = {}
for _s in sorted(range(256), key=lambda s: (s != MASK, not chr(s).isalnum() or s > 127, s)):
    _REPLACE.setdefault(REQUEST_CODES_LENGTH[_s], _s)


@dataclass
class H2Direction:
    """One direction of one connection: where its frames are, and the names in its dynamic table."""

    skip: int = 0                  # bytes of the current frame still to come in later payloads
    lost: bool = False             # framing lost (a frame header not visible): resync at a payload start
    table_lost: bool = False       # the dynamic table is unknown (a header block not seen whole)
    table: list[tuple[str, int]] = field(default_factory=list)   # (name, entry size), newest first
    max_size: int = 4096


def looks_like_h2(payload: bytes) -> bool:
    """A payload that opens an HTTP/2 direction: the client preface or the server's first SETTINGS."""
    if payload.startswith(PREFACE[:16]):
        return True
    return (len(payload) >= 9 and payload[3] == _SETTINGS and payload[4] in (0, 1) and payload[5:9] == b"\0\0\0\0"
            and int.from_bytes(payload[:3], "big") % 6 == 0)


def looks_like_headers_frame(payload: bytes) -> bool:
    """A payload that starts with an HTTP/2 HEADERS frame (a connection whose start was not seen: a
    long-lived gRPC channel opened before the capture): its literals are masked from here on, with
    the dynamic table unknown."""
    return (len(payload) >= 9 and payload[3] == _HEADERS and not payload[4] & ~0x2D and not payload[5] & 0x80
            and 0 < int.from_bytes(payload[:3], "big") <= 1 << 14 and payload[5:9] != b"\0\0\0\0")


def _huffman_decode(data: bytes) -> list[int] | None:
    """Symbols of a Huffman string, None if it is not valid."""
    out, code, length = [], 0, 0
    for byte in data:
        for bit in range(7, -1, -1):
            code = (code << 1) | ((byte >> bit) & 1)
            length += 1
            sym = _DECODE.get((length, code))
            if sym is not None:
                out.append(sym)
                code, length = 0, 0
            elif length > 30:
                return None
    if length > 7 or code != (1 << length) - 1:
        return None
    return out


def _huffman_encode(symbols: list[int], nbytes: int) -> bytes:
    acc, bits = 0, 0
    for s in symbols:
        acc = (acc << REQUEST_CODES_LENGTH[s]) | REQUEST_CODES[s]
        bits += REQUEST_CODES_LENGTH[s]
    pad = nbytes * 8 - bits
    return ((acc << pad) | ((1 << pad) - 1)).to_bytes(nbytes, "big")


def _mask_string(buf: bytearray, lo: int, hi: int, huffman: bool, url: bool, start: int) -> int:
    """Mask the string at buf[lo:hi]: all of it, or (url) its query values and userinfo."""
    if hi <= max(lo, start):
        return 0
    if not huffman:
        if not url:
            buf[max(lo, start):hi] = bytes([MASK]) * (hi - max(lo, start))
            return 1
        return mask_url(buf, lo, hi, start)
    symbols = _huffman_decode(bytes(buf[lo:hi])) if lo >= start else None
    if symbols is None:   # invalid or partly before `start`: fill with a valid string of 5-bit symbols
        if lo < start:
            return 0
        n = (hi - lo) * 8 // 5
        buf[lo:hi] = _huffman_encode([_REPLACE[5]] * n, hi - lo)
        return 1
    plain = bytearray(symbols)
    hidden = bytearray(plain)
    count = mask_url(hidden, 0, len(hidden)) if url else 1
    if url and not count:
        return 0
    masked = [(_REPLACE[REQUEST_CODES_LENGTH[s]] if (not url or hidden[i] != s) else s) for i, s in enumerate(symbols)]
    buf[lo:hi] = _huffman_encode(masked, hi - lo)
    return count


def _int(buf: bytearray, pos: int, end: int, prefix: int) -> tuple[int, int] | None:
    if pos >= end:
        return None
    mask = (1 << prefix) - 1
    value = buf[pos] & mask
    pos += 1
    if value < mask:
        return value, pos
    shift = 0
    while pos < end and shift < 28:
        b = buf[pos]
        pos += 1
        value += (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos
    return None


def _name(d: H2Direction, index: int) -> str | None:
    if 1 <= index <= len(_STATIC):
        return _STATIC[index - 1]
    i = index - len(_STATIC) - 1
    if d.table_lost or i >= len(d.table):
        return None
    return d.table[i][0]


def _string_length(buf: bytearray, lo: int, hi: int, huffman: bool) -> int:
    if not huffman:
        return hi - lo
    symbols = _huffman_decode(bytes(buf[lo:hi]))
    return len(symbols) if symbols is not None else hi - lo


def mask_header_block(buf: bytearray, pos: int, end: int, d: H2Direction, policy: RedactionPolicy,
                      start: int = 0, whole: bool = True) -> int:
    """Mask the literals of a header block fragment buf[pos:end]; keep `d`'s dynamic table. `whole`:
    the fragment is all visible (else its tail is cut and the table is lost after it)."""
    count = 0
    while pos < end:
        b = buf[pos]
        if b & 0x80:                           # indexed: nothing literal here
            r = _int(buf, pos, end, 7)
            if r is None:
                break
            pos = r[1]
            continue
        if b & 0xE0 == 0x20:                   # dynamic table size update
            r = _int(buf, pos, end, 5)
            if r is None:
                break
            d.max_size, pos = r[0], r[1]
            _evict(d)
            continue
        indexing = b & 0xC0 == 0x40
        r = _int(buf, pos, end, 6 if indexing else 4)
        if r is None:
            break
        index, pos = r
        name: str | None
        if index == 0:
            s = _read_string(buf, pos, end)
            if s is None:
                break
            huff, lo, hi = s
            pos = hi
            if hi > end:
                break
            raw = bytes(buf[lo:hi])
            symbols = _huffman_decode(raw) if huff else list(raw)
            name = bytes(symbols).decode("latin-1") if symbols is not None else None
        else:
            name = _name(d, index)
        s = _read_string(buf, pos, end)
        if s is None:
            break
        huff, lo, hi = s
        secret = name is None or policy.secret_header(name)
        url = name == ":path"
        if secret or url:
            count += _mask_string(buf, lo, min(hi, end), huff, url and not secret, start)
        if hi > end:
            break
        if indexing:
            size = len(name or "") + _string_length(buf, lo, hi, huff) + 32
            d.table.insert(0, (name or "", size))
            _evict(d)
            if name is None:
                d.table_lost = True
        pos = hi
    if not whole or pos < end:
        d.table_lost = True
    return count


def _read_string(buf: bytearray, pos: int, end: int) -> tuple[bool, int, int] | None:
    if pos >= end:
        return None
    huff = bool(buf[pos] & 0x80)
    r = _int(buf, pos, end, 7)
    if r is None:
        return None
    return huff, r[1], r[1] + r[0]


def _evict(d: H2Direction) -> None:
    total = sum(size for _, size in d.table)
    while d.table and total > d.max_size:
        total -= d.table.pop()[1]


def mask_h2(buf: bytearray, total: int, d: H2Direction, policy: RedactionPolicy) -> int:
    """Mask one payload of an HTTP/2 direction: buf is what was captured of `total` bytes moved."""
    count, pos, n = 0, 0, len(buf)
    if d.skip:
        pos = min(d.skip, total)
        d.skip -= pos
    elif d.lost:   # writers send whole frames: try the payload's start as a frame boundary
        d.lost = False
        d.table_lost = True
    if pos == 0 and buf.startswith(PREFACE[:min(n, len(PREFACE))]) and n:
        pos = len(PREFACE)
    while pos < total:
        if pos + 9 > n:
            d.lost = True
            break
        length = int.from_bytes(buf[pos:pos + 3], "big")
        ftype, flags = buf[pos + 3], buf[pos + 4]
        body, frame_end = pos + 9, pos + 9 + length
        if ftype in (_HEADERS, _PUSH_PROMISE, _CONTINUATION):
            lo, hi = body, frame_end
            if ftype != _CONTINUATION and flags & 0x8 and lo < n:   # PADDED
                hi -= buf[lo]
                lo += 1
            if ftype == _HEADERS and flags & 0x20:                   # PRIORITY
                lo += 5
            if ftype == _PUSH_PROMISE:
                lo += 4
            count += mask_header_block(buf, lo, min(hi, n), d, policy, whole=hi <= n)
        pos = frame_end
    if pos > total:
        d.skip = pos - total
    return count
