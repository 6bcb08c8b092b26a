"""HTTP/1 messages located in a rebuilt stream: start line, header section, body, as RFC 9112 frames them.

A message's body is chunked, or Content-Length long, or (responses only) runs to the end of the
connection; responses to HEAD, 1xx, 204, 304 and 2xx to CONNECT have none, nor does a CONNECT request
(RFC 9110 9.3.6: what follows it is tunnel data). http1_framing.py decides the length from the fields.
Empty lines before a start line are skipped (RFC 9112 2.2). Bodies are stepped over by length, so a body
the snaplen cut off costs nothing; only a chunked body needs its chunk-size lines.

Parsing is lenient: LF alone ends a line, a bad field is still read. What a strict recipient would have
refused is recorded in the message's anomalies (anomalies.py). When the framing fields let recipients
disagree on where the message ends, every reading is tried and the one after which the next message
starts is kept.

Parsing works on whole captured stretches with regex/find per message, never per byte, and a head seen
before is not parsed again: the benchmark asks for tens of thousands of exchanges per second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from uetrace.analyze.http import anomalies as A
from uetrace.analyze.http.http1_framing import CHUNKED, CLOSE, UNKNOWN, bad_method, bad_target, body_specs, read_fields
from uetrace.analyze.http.streams import Stream

# A method is a token; anything visible is taken so that a bad one is flagged rather than missed.
REQUEST_LINE = re.compile(rb"([!-~]{1,24}) ([^ \r\n]{1,16384}) HTTP/1\.([01])(\r?)\n")
STATUS_LINE = re.compile(rb"HTTP/1\.([01]) (\d{3})(?: [^\r\n]*)?(\r?)\n")
_VERSIONS = {b"0": "1.0", b"1": "1.1"}
_METHODS = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT")}
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})\r\n")  # the common line: tried first, checked no further
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,64})([^\r\n]{0,1024})(\r?)\n")
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CHUNK_EXT = re.compile(rb"(?:[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN
                        + rb"|\"(?:[^\"\\]|\\.)*\"))?)+")
_MAX_CHUNK = 1 << 62


@dataclass(slots=True)
class Message:
    """One HTTP/1 request or response, located by stream offsets [start, end)."""

    start: int
    end: int
    request: bool
    version: str = "1.1"
    method: str = ""
    path: str = ""
    host: str = ""
    status: int = 0
    upgrade: str = ""  # the Upgrade header, lowercased ("websocket", "h2c")
    body_len: int = 0
    complete: bool = True
    note: str = ""
    anomalies: tuple[str, ...] = ()  # kinds from anomalies.py


def skip_empty_lines(data: bytes, i: int) -> int:
    """The offset after the CRLFs (or LFs) at data[i:]."""
    n = len(data)
    while i < n:
        c = data[i]
        if c == 10:
            i += 1
        elif c == 13 and data.startswith(b"\n", i + 1):
            i += 2
        else:
            break
    return i


def parse_message(stream: Stream, pos: int, request: bool, req_method: str = "") -> Message | None:
    """The message starting at pos (after any empty lines), or None if none starts there. `req_method`
    is the method of the request a response answers (HEAD and CONNECT change response framing)."""
    if len(stream.chunk_starts) == 1:  # chunk_at's common case, without the call
        data = stream.chunks[0]
        base = stream.chunk_starts[0]
        if not base <= pos < base + len(data):
            return None
    else:
        hit = stream.chunk_at(pos)
        if hit is None:
            return None
        data, base = hit
    i = pos - base
    # Fast path: a head seen before parses as it did then. The key is the bytes up to the first
    # CRLFCRLF, which the parse of those bytes alone decides (it may end earlier, at a bare LF). No
    # key starts with an empty line: those are skipped on a miss.
    he = data.find(b"\r\n\r\n", i, i + _HEAD_KEY_MAX)
    head = (_REQ_HEADS if request else _RESP_HEADS).get(data[i:he]) if he >= 0 else None
    if head is None:
        c = data[i]
        if c == 13 or c == 10:
            j = skip_empty_lines(data, i)
            if j >= len(data):
                return None
            if j > i:
                return parse_message(stream, base + j, request, req_method)
        head = _parse_head(data, i, request, he)
        if head is None:
            return None
        if len(head) == 5:  # a start line only: the header section does not end in the captured bytes
            version, method, path, status, anoms = head
            return Message(pos, base + len(data), request, version, method, path, "", status, complete=False,
                           note="headers not captured", anomalies=anoms)
    version, method, path, status, host, upgrade, spec, alts, anoms, head_len = head
    body = pos + head_len
    if not request:
        host = upgrade = ""
        if (req_method == "HEAD" or status < 200 or status == 204 or status == 304
                or (req_method == "CONNECT" and status < 300)):
            return Message(pos, body, False, version, "", "", "", status, "", 0, True, "", anoms)
    if spec >= 0 and not alts:  # the common case: Content-Length, or no body (a CONNECT request's spec)
        end = body + spec
        if end > stream.length:
            return Message(pos, stream.length, request, version, method, path, host, status, upgrade, spec,
                           False, "truncated at capture end", anoms)
        if anoms:
            return Message(pos, end, request, version, method, path, host, status, upgrade, spec, True, "", anoms)
        return Message(pos, end, request, version, method, path, host, status, upgrade, spec)
    if alts:
        spec, ends = _choose(stream, body, request, spec, alts)
        if len(ends) > 1:
            anoms = (*anoms, A.DESYNC)
    if spec == CHUNKED:  # frame_body's case, without the call
        end, body_len, complete, more = _skip_chunked(stream, body)
        note = "" if complete else "chunked body not captured" if end < stream.length else "truncated at capture end"
    else:
        end, body_len, complete, note, more = frame_body(stream, body, spec, request)
    return Message(pos, end, request, version, method, path, host, status, upgrade, body_len, complete, note,
                   tuple(A.merged(anoms, more)) if more else anoms)


def frame_body(stream: Stream, body: int, spec: int, request: bool) -> tuple[int, int, bool, str, tuple]:
    """(end, body bytes, complete?, note, anomalies) of a body starting at `body` framed as `spec`."""
    if spec == CHUNKED:
        end, body_len, complete, anoms = _skip_chunked(stream, body)
        if complete:
            return end, body_len, True, "", anoms
        return end, body_len, False, "chunked body not captured" if end < stream.length else \
            "truncated at capture end", anoms
    if spec == UNKNOWN or (spec == CLOSE and request):
        return body, 0, False, "framing error: no body length a strict recipient accepts", ()
    end = stream.length if spec == CLOSE else body + spec
    if end > stream.length:
        return stream.length, spec, False, "truncated at capture end", ()
    return end, end - body, True, "", ()


def _choose(stream: Stream, body: int, request: bool, spec: int, alts: tuple[int, ...]) -> tuple[int, set[int]]:
    """Of the readings (the RFC's first, when it has one), the one after which a message most clearly
    starts (or the stream ends): the spec to frame by (UNKNOWN when the RFC has none and nothing
    follows any other), and the distinct ends the complete readings give."""
    cands = ([spec] if spec != UNKNOWN else []) + list(alts)
    ends: set[int] = set()
    best, best_score = cands[0], -1
    for s in cands:
        end, _, complete, _, _ = frame_body(stream, body, s, request)
        if not complete:
            continue
        ends.add(end)
        score = _next_message_at(stream, end, request)
        if score > best_score:
            best, best_score = s, score
    if spec == UNKNOWN and best_score <= 0:
        return UNKNOWN, ends
    return best, ends


def _next_message_at(stream: Stream, pos: int, request: bool) -> int:
    """How well what follows pos fits a message boundary: 2 the stream ends there or a start line with
    a registered method (any status line) begins there, after empty lines; 1 its bytes there were not
    captured, or another start line begins there; 0 anything else."""
    if pos >= stream.length:
        return 2 if pos == stream.length else 0
    hit = stream.chunk_at(pos)
    if hit is None:
        return 1
    data, base = hit
    i = skip_empty_lines(data, pos - base)
    if i >= len(data):
        return 2 if base + i >= stream.length else 1
    m = (REQUEST_LINE if request else STATUS_LINE).match(data, i)
    if m is None:
        return 0
    return 2 if not request or m.group(1) in _METHODS else 1


def _parse_head(data: bytes, i: int, request: bool, he: int) -> tuple | None:
    """(version, method, path, status, host, upgrade, body spec, other specs, anomalies, head length)
    of the head at data[i:], kept for the next head with the same bytes; None if no start line is
    there; only the first four and the anomalies if the header section does not end in the bytes.
    `he`: the first CRLFCRLF at or after i (-1 if none near)."""
    m = (REQUEST_LINE if request else STATUS_LINE).match(data, i)
    if m is None:
        return None
    anoms: tuple[str, ...] = ()
    if request:
        method, target = m.group(1), m.group(2)
        line = (_VERSIONS[m.group(3)], _METHODS.get(method) or method.decode("latin-1"), target.decode("latin-1"), 0)
        if bad_method(method):
            anoms += (A.INVALID_METHOD,)
        if bad_target(target):
            anoms += (A.INVALID_TARGET,)
        cr = m.group(4)
    else:
        line = (_VERSIONS[m.group(1)], "", "", int(m.group(2)))
        cr = m.group(3)
    if not cr:
        anoms += (A.BARE_LF,)
    e = m.end()
    key = data[e:he + 2] if he >= 0 else None
    fields = _FIELDS.get(key) if key is not None else None
    if fields is None:
        fields = read_fields(data, e)
        if fields is None:
            return (*line, anoms)
        if key is not None and len(key) <= _FIELDS_KEY_MAX:  # big blocks (cookies) rarely repeat
            if len(_FIELDS) >= _FIELDS_MAX:
                _FIELDS.clear()
            _FIELDS[key] = fields
    host, upgrade, te, cl, field_anoms, section_len = fields
    spec, alts, body_anoms = body_specs(request, line[0] == "1.0", te, cl)
    if line[1] == "CONNECT":  # RFC 9110 9.3.6: its content has no defined semantics; tunnel data follows
        spec, alts = 0, ()
    if field_anoms or body_anoms:
        anoms = tuple(A.merged(anoms, field_anoms, body_anoms))
    head = (*line, host, upgrade, spec, alts, anoms, e - i + section_len)
    if he >= 0 and he - i <= _HEAD_KEY_MAX:
        heads = _REQ_HEADS if request else _RESP_HEADS
        if len(heads) >= _FIELDS_MAX:
            heads.clear()
        heads[data[i:he]] = head
    return head


# Header sections repeat: one client library sends the same fields request after request, one server
# the same response fields (a Date changes once a second). Their reading is kept by the section's bytes
# (start line excluded), which halves the cost of a message on keep-alive traffic.
_FIELDS: dict[bytes, tuple] = {}
_FIELDS_MAX = 8192
_FIELDS_KEY_MAX = 2048  # so the cache holds at most ~16 MiB
# Whole heads (start line included) by their bytes, up to the first CRLFCRLF: a keep-alive client
# repeats its request lines too, and a server its status lines. Same bounds as _FIELDS.
_REQ_HEADS: dict[bytes, tuple] = {}
_RESP_HEADS: dict[bytes, tuple] = {}
_HEAD_KEY_MAX = 2048


def _skip_chunked(stream: Stream, pos: int) -> tuple[int, int, bool, tuple[str, ...]]:
    """Walk a chunked body from pos: (offset after it, body bytes, complete?, anomalies). Chunk data is
    skipped by length; the size lines must have been captured."""
    total = 0
    data, base = b"", 0
    anoms: tuple[str, ...] = ()
    while True:
        if not base <= pos < base + len(data):  # not in the stretch of the last size line
            hit = stream.chunk_at(pos)
            if hit is None:
                return pos, total, False, anoms
            data, base = hit
        m = _CHUNK_SIZE.match(data, pos - base)
        if m is None:  # an extension, a bare LF, or not a size line
            m = _CHUNK_LINE.match(data, pos - base)
            if m is None or int(m.group(1), 16) >= _MAX_CHUNK:
                if data.find(b"\n", pos - base, pos - base + 1100) >= 0:  # a whole line, not a size line
                    anoms = _add(anoms, A.INVALID_CHUNK_SIZE)
                return pos, total, False, anoms
            if m.group(2) and not _CHUNK_EXT.fullmatch(m.group(2)):
                anoms = _add(anoms, A.INVALID_CHUNK_SIZE)
            if not m.group(3):
                anoms = _add(anoms, A.BARE_LF)
        size = int(m.group(1), 16)
        j = m.end()
        if size == 0:
            if data.startswith(b"\r\n", j):
                return base + j + 2, total, True, anoms
            return _trailers(data, base, j, total, anoms)
        total += size
        k = j + size  # the CRLF after the chunk data, if captured
        if data.startswith(b"\r\n", k) or k + 2 > len(data):
            pos = base + k + 2
        elif data.startswith(b"\n", k):
            anoms = _add(anoms, A.BARE_LF)
            pos = base + k + 1
        else:
            anoms = _add(anoms, A.CHUNK_MISSING_CRLF)
            pos = base + k + 2
        if pos > stream.length:
            return stream.length, total, False, anoms


def _trailers(data: bytes, base: int, j: int, total: int, anoms: tuple[str, ...]) -> tuple[int, int, bool, tuple]:
    """After the last chunk: trailer fields, then the empty line that ends the message."""
    while True:
        nl = data.find(b"\n", j)
        if nl < 0:
            return base + len(data), total, False, anoms
        if nl == j or data[nl - 1] != 13:
            anoms = _add(anoms, A.BARE_LF)
        if nl - j <= 1 and (nl == j or data[j] == 13):  # the empty line
            return base + nl + 1, total, True, anoms
        j = nl + 1


def _add(anoms: tuple[str, ...], kind: str) -> tuple[str, ...]:
    return anoms if kind in anoms else (*anoms, kind)
