"""The cheap test of redaction: which rows of a payload column may hold a secret.

A row is a candidate when it holds a trigger word (the name of a secret header, any case), a
`?...=` query, `://...@` userinfo or, for packets, an HTTP/2 client preface anywhere; when it
starts an HTTP/2 direction; or when it was wholly captured and ends in an unfinished line after a
CRLF, which the stream's next payload may complete into a secret header's name. Only candidates
(and the later rows of their streams) are parsed in Python.

The unanchored triggers are searched with Hyperscan over the column's data buffer at once, every
match mapped back to the row holding its last byte: 63 ns a row against RE2's 437 (pyarrow's
match_substring_regex, which runs RE2 in UTF-8 mode on binary and cannot skip ahead on an
alternation of caseless words), measured on 100 K nginx payloads of 365 bytes on average. A match
that straddles two rows only adds a candidate; a match inside a row is always found, since
Hyperscan reports every match, not just the leftmost. The anchored triggers need row boundaries:
the row-start ones (an HTTP/2 preface or SETTINGS frame) are fixed bytes, compared as words on each
row's first 16 bytes (row_heads, which redaction gathers anyway); the row-end one stays with RE2,
which then reads only the end of the rows that were captured whole and end in a byte an unfinished
header line can end in (printable ASCII or a tab; a truncated payload's last line is never carried).
Without the hyperscan module the unanchored search runs as one RE2 alternation, as before.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.byte_windows import byte_windows

try:
    import hyperscan
except ImportError:   # the RE2 fallback below gives the same rows, ~7x slower
    hyperscan = None

QUERY = rb"\?[!-~]*="
USERINFO = rb"://[!-.0-~]*@"
H2_PREFACE = b"PRI * HTTP/2"
# preface, or a server's first SETTINGS frame (type 4, flags 0 or ACK, stream 0), at a row's start
H2_START = r"^PRI \* HTTP/2|^\x00\x00[\x00-\x7f]\x04[\x00\x01]\x00\x00\x00\x00"
UNFINISHED_LINE = r"\r\n[-!#$%&'*+.^_`|~0-9A-Za-z]{1,64}(?::[ -~\t]*)?$"


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isascii() and c.isalpha() else re.escape(c) for c in word)


class TriggerScan:
    """Candidate rows of a binary column. `packets`: net_packet frames (the preface is searched
    anywhere, no row-start triggers: a frame starts with its headers)."""

    def __init__(self, words: list[str], packets: bool = False):
        self.packets = packets
        literals = [re.escape(w.lower().encode()) for w in words]
        extra = [re.escape(H2_PREFACE)] if packets else []
        self._db = None
        if hyperscan is not None:
            exprs = literals + [QUERY, USERINFO] + extra
            flags = [hyperscan.HS_FLAG_CASELESS] * len(literals) + [0] * (2 + len(extra))
            self._db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
            self._db.compile(expressions=exprs, ids=list(range(len(exprs))), elements=len(exprs), flags=flags)
        # ASCII-only classes: `(?i)` in RE2's UTF-8 mode expands to multi-byte sequences (2.2 ns a byte, not 1.3)
        self._re2 = "|".join([_any_case(w) for w in words] + [QUERY.decode(), USERINFO.decode()]
                             + ([r"PRI \* HTTP/2"] if packets else []))

    def rows(self, plain: pa.Array, whole: np.ndarray | None = None, starts: np.ndarray | None = None,
             heads: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """bool per row of `plain` (binary, offset 0 or sliced). `whole`: rows captured whole, whose
        unfinished last line the next payload may continue. `starts`: per row, how
        many leading bytes hold no trigger (a frame's headers): a match ending in them is not counted
        (with Hyperscan; the RE2 fallback searches every byte: more candidates, the same masking).
        `heads`: row_heads(plain), when the caller has it already."""
        hits = self._unanchored(plain, starts)
        if not len(plain):
            return hits
        if not self.packets:
            hits |= h2_starts(*(row_heads(plain) if heads is None else heads))
        if whole is not None:
            ends = np.flatnonzero(_open_ended(plain) & whole & ~hits)
            hits[ends] |= unfinished_lines(plain, ends)
        return hits

    def _unanchored(self, plain: pa.Array, starts: np.ndarray | None = None) -> np.ndarray:
        n = len(plain)
        if self._db is None or n == 0:
            if n == 0:
                return np.zeros(0, dtype=bool)
            return pc.fill_null(pc.match_substring_regex(plain, self._re2), False).to_numpy(zero_copy_only=False)
        offsets = _offsets(plain)
        lo, hi = int(offsets[0]), int(offsets[-1])
        hits = np.zeros(n, dtype=bool)
        if hi <= lo:
            return hits
        ends: list[int] = []
        self._db.scan(plain.buffers()[2].slice(lo, hi - lo),
                      match_event_handler=lambda _id, _start, end, _flags, _ctx: ends.append(end))
        if ends:
            last = np.asarray(ends, dtype=np.int64) + (lo - 1)   # offset of each match's last byte
            row = np.searchsorted(offsets, last, side="right") - 1
            if starts is not None:
                row = row[last >= offsets[row] + starts[row]]
            hits[row] = True
        if plain.null_count:
            hits &= plain.is_valid().to_numpy(zero_copy_only=False)
        return hits


HEAD_BYTES = 16   # what row_heads gathers: the preface's 12 bytes and a 9-byte frame header fit
_P8, _P4 = np.frombuffer(H2_PREFACE[:8], "<u8")[0], np.frombuffer(H2_PREFACE[8:12], "<u4")[0]
# A SETTINGS frame header's first 8 bytes as a little-endian u64: length < 2^23 (bytes 0-2), type 4,
# flags 0 or ACK (byte 4), stream id's first 3 bytes 0 (byte 8, the last, is tested apart).
_S_MASK, _S_VALUE = np.uint64(0xFFFFFFFE_FF80FFFF), np.uint64(0x04 << 24)


def row_heads(plain: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [rows, HEAD_BYTES]: each row's first bytes (past a row's end: whatever follows, so a
    test of n bytes must also test the length), and the rows' lengths."""
    offsets = _offsets(plain).astype(np.int64)
    return byte_windows(_data(plain), offsets[:-1], HEAD_BYTES), offsets[1:] - offsets[:-1]


def _data(plain: pa.Array) -> np.ndarray:
    buf = plain.buffers()[2] if len(plain) else None
    return np.frombuffer(buf, dtype=np.uint8) if buf is not None else np.zeros(0, dtype=np.uint8)


_TOKEN = np.zeros(256, dtype=bool)
_TOKEN[np.frombuffer(b"-!#$%&'*+.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz", np.uint8)] = True
NAME_MAX = 64   # UNFINISHED_LINE's {1,64}


def unfinished_lines(plain: pa.Array, rows: np.ndarray) -> np.ndarray:
    """UNFINISHED_LINE on plain[rows], bool per entry of rows. Neither the name nor the value of that
    pattern can hold CR or LF, so only a row's last line can match, right after its last LF: numpy
    finds it (54 ns a row of 328 bytes; RE2 took 376 on rows ending in a JSON body, as most API
    responses do, because it searches the whole row for a `$`-anchored pattern), checks the CR before
    it and the name after it; the few rows whose last line is `name:` and more go to RE2 for the
    value, whole, so the answer stays the pattern's own."""
    out = np.zeros(len(rows), dtype=bool)
    if not len(rows):
        return out
    offsets = _offsets(plain).astype(np.int64)
    data = _data(plain)
    starts, ends = offsets[rows], offsets[rows + 1]
    lo, hi = int(offsets[0]), int(offsets[-1])
    lf = np.flatnonzero(data[lo:hi] == 0x0A) + lo
    if not len(lf):
        return out
    k = np.searchsorted(lf, ends) - 1             # the last LF before each row's end...
    last = np.where(k >= 0, lf[np.maximum(k, 0)], -1)
    ok = last >= starts + 1                        # ...inside the row, with a byte before it...
    ok[ok] = data[last[ok] - 1] == 0x0D            # ...which is CR
    cand = np.flatnonzero(ok & (ends > last + 1))
    if not len(cand):
        return out
    tail_len = ends[cand] - last[cand] - 1
    win = byte_windows(data, last[cand] + 1, NAME_MAX + 1)
    token = _TOKEN[win] & (np.arange(NAME_MAX + 1) < tail_len[:, None])
    name = np.where(token.all(axis=1), NAME_MAX + 1, np.argmin(token, axis=1))   # the name's length
    named = (name >= 1) & (name <= NAME_MAX)
    out[cand[named & (name == tail_len)]] = True   # the line is a name alone
    colon = named & (name < tail_len)
    colon[colon] = win[np.flatnonzero(colon), name[colon]] == ord(":")
    if colon.any():
        picks = rows[cand[colon]]
        found = pc.match_substring_regex(plain.take(pa.array(picks)), UNFINISHED_LINE)
        out[cand[colon]] = pc.fill_null(found, False).to_numpy(zero_copy_only=False)
    return out


def h2_starts(heads: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """H2_START on row_heads: the same rows as the regex (measured: 30 ns a row with RE2, which pyarrow
    runs on every row; ~3 with these word compares on the heads redaction gathers anyway)."""
    words = heads.view("<u8")
    lo, hi = words[:, 0], words[:, 1] & np.uint64(0xFFFFFFFF)
    preface = (lengths >= 12) & (lo == _P8) & (hi == _P4)
    settings = (lengths >= 9) & ((lo & _S_MASK) == _S_VALUE) & (heads[:, 8] == 0)
    return preface | settings


def _offsets(plain: pa.Array) -> np.ndarray:
    return np.frombuffer(plain.buffers()[1], dtype=np.int32)[plain.offset: plain.offset + len(plain) + 1]


def _open_ended(plain: pa.Array) -> np.ndarray:
    """Rows of at least 3 bytes (CRLF and a name's first byte) whose last byte may end UNFINISHED_LINE."""
    offsets = _offsets(plain)
    out = np.zeros(len(plain), dtype=bool)
    rows = np.flatnonzero(offsets[1:] - offsets[:-1] >= 3)
    if len(rows):
        last = np.frombuffer(plain.buffers()[2], dtype=np.uint8)[offsets[rows + 1] - 1]
        out[rows] = ((last >= 0x20) & (last <= 0x7E)) | (last == 0x09)
    return out
