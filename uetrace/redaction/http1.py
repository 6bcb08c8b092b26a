"""HTTP/1 header values, request targets and URL-valued headers, masked in a payload prefix.

A payload is whatever one syscall (or packet) moved, cut at the snaplen: it may start or end inside
a line. Every line that looks like a header line is checked, wherever it is (a request pipelined
after a body, a header block split across two writes), and a caller may prepend the unfinished last
line of the previous payload of the same stream (`carry`) so that a name or a target cut in two is
still recognised; bytes before `start` (the carry) are read, never written.
"""

from __future__ import annotations

import re

from uetrace.redaction.policy import MASK, URL_HEADERS, RedactionPolicy

_HEADER = re.compile(rb"([!#$%&'*+.^_`|~0-9A-Za-z-]{1,128})[ \t]*:[ \t]*")
_REQUEST = re.compile(rb"[A-Z][A-Z_-]{2,15} +")
_URL_START = re.compile(rb"[a-zA-Z][a-zA-Z0-9+.-]{0,15}://")
CARRY_MAX = 1024  # the unfinished last line kept for the next payload of the stream


def mask_range(buf: bytearray, lo: int, hi: int, start: int = 0) -> int:
    """Mask buf[lo:hi] (only what lies at or after `start`); 1 if anything was there to mask."""
    lo = max(lo, start)
    if hi <= lo:
        return 0
    buf[lo:hi] = bytes([MASK]) * (hi - lo)
    return 1


def mask_url(buf: bytearray, lo: int, hi: int, start: int = 0) -> int:
    """Query values (keys kept) and userinfo of the URL or request target in buf[lo:hi]."""
    count = 0
    m = _URL_START.match(buf, lo, hi)
    if m:
        auth_end = hi
        for sep in b"/?#":
            i = buf.find(bytes([sep]), m.end(), hi)
            if i >= 0:
                auth_end = min(auth_end, i)
        at = buf.rfind(b"@", m.end(), auth_end)
        if at >= 0:
            count += mask_range(buf, m.end(), at, start)
    q = buf.find(b"?", lo, hi)
    if q < 0:
        return count
    end = buf.find(b"#", q, hi)
    end = hi if end < 0 else end
    pos = q + 1
    while pos < end:
        amp = buf.find(b"&", pos, end)
        amp = end if amp < 0 else amp
        eq = buf.find(b"=", pos, amp)
        if eq >= 0:
            count += mask_range(buf, eq + 1, amp, start)
        pos = amp + 1
    return count


def mask_http1(buf: bytearray, policy: RedactionPolicy, start: int = 0) -> tuple[int, bytes]:
    """Mask in place; return (values masked, the carry for the next payload of this stream: its
    unfinished last line, or a secret header line a folded line may continue)."""
    count = 0
    pos, n = 0, len(buf)
    secret_line = False   # the previous line was a secret header: a folded line continues its value
    carry = b""
    while pos < n:
        nl = buf.find(b"\n", pos)
        end = n if nl < 0 else nl
        line_end = end - 1 if end > pos and buf[end - 1] == 0x0D else end
        first = buf[pos] if pos < line_end else None
        if secret_line and first in (0x20, 0x09):   # obs-fold: the value goes on
            count += mask_range(buf, pos + 1, line_end, start)
        else:
            secret_line = False
            h = _HEADER.match(buf, pos, line_end)
            r = None if h else _REQUEST.match(buf, pos, line_end)
            if h:
                name = h.group(1).decode("latin-1")
                if policy.secret_header(name):
                    count += mask_range(buf, h.end(), line_end, start)
                    secret_line = True
                elif name.lower() in URL_HEADERS:
                    count += mask_url(buf, h.end(), line_end, start)
            elif r:
                sp = buf.find(b" ", r.end(), line_end)
                count += mask_url(buf, r.end(), line_end if sp < 0 else sp, start)
        if nl < 0:
            carry = bytes(buf[pos:n]) if n - pos <= CARRY_MAX else b""
        elif nl == n - 1 and secret_line:
            carry = bytes(buf[pos:n])
        pos = end + 1
    return count, carry
