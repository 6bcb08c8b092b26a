"""The kinds of HTTP/1 framing anomaly an exchange can carry, as evidence of what went over the wire.

Each kind is a stable snake_case name (they are data: `trace requests --json`, the `anomalies` column
of `http_exchanges`). The parser keeps going as a lenient recipient would, so an anomaly never stops the
rest of the connection from being read; it says what a strict RFC 9112 recipient would have rejected or
read differently. Request smuggling is built from exactly these: two recipients (a proxy and a server,
or the two ends of one connection) that frame the same bytes differently.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uetrace.analyze.http.exchange import Exchange

# Body length (RFC 9112 6.1-6.3)
CL_AND_TE = "cl_and_te"  # Content-Length and Transfer-Encoding in one message (TE wins)
DUPLICATE_CONTENT_LENGTH = "duplicate_content_length"  # several Content-Length values, all equal
CONFLICTING_CONTENT_LENGTH = "conflicting_content_length"  # several, different: unrecoverable framing error
INVALID_CONTENT_LENGTH = "invalid_content_length"  # not 1*DIGIT
TE_NOT_FINAL_CHUNKED = "te_not_final_chunked"  # Transfer-Encoding whose final coding is not `chunked`
TE_CHUNKED_TWICE = "te_chunked_twice"  # `chunked` applied more than once
TE_IN_HTTP10 = "te_in_http10"  # Transfer-Encoding in an HTTP/1.0 message: framing faulty (6.1)
# Line ends and field syntax (RFC 9112 2.2, 5.1, 5.2)
BARE_LF = "bare_lf"  # a line ended by LF alone
BARE_CR = "bare_cr"  # a CR not followed by LF (read as a space)
SPACE_BEFORE_COLON = "space_before_colon"  # "Name : value"
LEADING_WHITESPACE_HEADER = "leading_whitespace_header"  # whitespace before the first field line
OBS_FOLD = "obs_fold"  # a field value continued on a line that starts with whitespace
INVALID_HEADER_NAME = "invalid_header_name"  # not a token, or a field line without a colon
INVALID_HEADER_VALUE = "invalid_header_value"  # a control character (other than HTAB) in a value
# Start line (RFC 9112 3)
INVALID_METHOD = "invalid_method"  # the method is not a token
INVALID_TARGET = "invalid_target"  # bytes the request-target grammar does not allow
# Chunked coding (RFC 9112 7.1)
INVALID_CHUNK_SIZE = "invalid_chunk_size"  # a chunk-size line that is not 1*HEXDIG [chunk-ext] CRLF
CHUNK_MISSING_CRLF = "chunk_missing_crlf"  # chunk data not followed by CRLF
# Derived: the message's end differs between readings that real recipients take (strict RFC, CL
# over TE, first or last Content-Length, a field with bad syntax honoured or ignored). This is the
# request smuggling (desync) signature; the parser keeps the reading after which the next message starts.
DESYNC = "desync"
# Not an error: after a CONNECT (answered 2xx, or followed by bytes) the connection carries tunnel
# data, not HTTP/1 messages (RFC 9110 9.3.6).
TUNNEL = "tunnel"

KINDS: tuple[str, ...] = (
    CL_AND_TE, DUPLICATE_CONTENT_LENGTH, CONFLICTING_CONTENT_LENGTH, INVALID_CONTENT_LENGTH, TE_NOT_FINAL_CHUNKED,
    TE_CHUNKED_TWICE, TE_IN_HTTP10, BARE_LF, BARE_CR, SPACE_BEFORE_COLON, LEADING_WHITESPACE_HEADER, OBS_FOLD,
    INVALID_HEADER_NAME, INVALID_HEADER_VALUE, INVALID_METHOD, INVALID_TARGET, INVALID_CHUNK_SIZE,
    CHUNK_MISSING_CRLF, DESYNC, TUNNEL,
)
# Kinds that, on their own, let two recipients disagree on where a message ends.
SMUGGLING: frozenset[str] = frozenset({CL_AND_TE, CONFLICTING_CONTENT_LENGTH, TE_NOT_FINAL_CHUNKED, DESYNC})


def merged(*groups: tuple[str, ...]) -> list[str]:
    """The kinds of several messages in first-seen order, each once."""
    out: list[str] = []
    for g in groups:
        for k in g:
            if k not in out:
                out.append(k)
    return out


@dataclass(slots=True)
class ConnectionAnomalies:
    """The anomalies of one connection's exchanges: how many exchanges carry each kind, and whether
    the two ends could frame its bytes differently (a smuggling signature: see SMUGGLING)."""

    conn_id: int
    client: str
    server: str
    exchanges: int  # exchanges with at least one anomaly
    counts: dict[str, int]  # kind -> exchanges that carry it
    smuggling: bool

    def to_dict(self) -> dict:
        return asdict(self)


def by_connection(exchanges: list[Exchange]) -> list[ConnectionAnomalies]:
    """Per connection with anomalies, in order of first appearance; `tunnel` alone is no anomaly."""
    out: dict[int, ConnectionAnomalies] = {}
    for e in exchanges:
        kinds = [k for k in e.anomalies if k != TUNNEL]
        if not kinds:
            continue
        c = out.get(e.conn_id)
        if c is None:
            c = out[e.conn_id] = ConnectionAnomalies(e.conn_id, e.client, e.server, 0, {}, False)
        c.exchanges += 1
        for k in kinds:
            c.counts[k] = c.counts.get(k, 0) + 1
        c.smuggling = c.smuggling or any(k in SMUGGLING for k in kinds)
    return list(out.values())
