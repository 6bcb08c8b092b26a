"""TLS detection: the record layer (RFC 8446 section 5.1) and the ClientHello/ServerHello fields that
travel in clear: server name (SNI), offered and chosen ALPN, negotiated version.

The capture cannot decrypt; a connection found here is reported as encrypted, unless the TLS tracer
recorded its plaintext (then its HTTP is decoded from that plaintext like any other stream).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from uetrace.analyze.http.streams import Stream

_HANDSHAKE = 22
_CONTENT_TYPES = (20, 21, 22, 23)  # change_cipher_spec, alert, handshake, application_data
_MAX_RECORD = (1 << 14) + 2048  # TLSCiphertext limit
_VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
_EXT_SNI, _EXT_ALPN, _EXT_VERSIONS = 0, 16, 43


@dataclass(slots=True)
class TlsInfo:
    handshake_seen: bool  # False: the connection was already encrypted when the capture began
    sni: str = ""
    alpn_offered: list[str] = field(default_factory=list)
    alpn: str = ""  # the server's choice
    version: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def is_record_header(b: bytes | None) -> bool:
    """A plausible TLS record header (content type, version 3.x, length within the limit)."""
    return (b is not None and len(b) >= 5 and b[0] in _CONTENT_TYPES and b[1] == 3 and b[2] <= 4
            and int.from_bytes(b[3:5], "big") <= _MAX_RECORD)


def _handshake_body(stream: Stream, pos: int, msg_type: int) -> bytes | None:
    """The captured part of the handshake message of `msg_type` in the record at pos."""
    head = stream.read(pos, 5)
    if not is_record_header(head) or head is None or head[0] != _HANDSHAKE:
        return None
    hit = stream.chunk_at(pos)
    if hit is None:
        return None
    data, base = hit
    i = pos - base + 5
    rec = data[i:i + int.from_bytes(head[3:5], "big")]
    if len(rec) < 4 or rec[0] != msg_type:
        return None
    return rec[4:4 + int.from_bytes(rec[1:4], "big")]


def _vec(b: bytes, i: int, width: int) -> tuple[bytes, int]:
    """A length-prefixed vector at i: (its bytes, index after it); truncated input gives what exists."""
    n = int.from_bytes(b[i:i + width], "big")
    j = i + width
    return b[j:j + n], j + n


def _extensions(b: bytes, i: int) -> list[tuple[int, bytes]]:
    exts, _ = _vec(b, i, 2)
    out = []
    j = 0
    while j + 4 <= len(exts):
        typ = int.from_bytes(exts[j:j + 2], "big")
        body, j = _vec(exts, j + 2, 2)
        out.append((typ, body))
    return out


def _alpn_list(body: bytes) -> list[str]:
    lst, _ = _vec(body, 0, 2)
    out, j = [], 0
    while j < len(lst):
        name, j = _vec(lst, j, 1)
        out.append(name.decode("latin-1"))
    return out


def parse_client_hello(body: bytes, info: TlsInfo) -> None:
    """Fill SNI, offered ALPN and the highest offered version from a ClientHello body."""
    if len(body) < 2:
        return
    info.version = _VERSIONS.get(int.from_bytes(body[0:2], "big"), "")
    i = 2 + 32
    _, i = _vec(body, i, 1)  # legacy_session_id
    _, i = _vec(body, i, 2)  # cipher_suites
    _, i = _vec(body, i, 1)  # legacy_compression_methods
    for typ, ext in _extensions(body, i):
        if typ == _EXT_SNI:
            names, _ = _vec(ext, 0, 2)
            if len(names) >= 3 and names[0] == 0:  # host_name
                info.sni = _vec(names, 1, 2)[0].decode("latin-1")
        elif typ == _EXT_ALPN:
            info.alpn_offered = _alpn_list(ext)


def parse_server_hello(body: bytes, info: TlsInfo) -> None:
    """Fill the negotiated version and ALPN from a ServerHello body."""
    if len(body) < 2:
        return
    info.version = _VERSIONS.get(int.from_bytes(body[0:2], "big"), info.version)
    i = 2 + 32
    _, i = _vec(body, i, 1)  # legacy_session_id_echo
    i += 3  # cipher_suite, legacy_compression_method
    for typ, ext in _extensions(body, i):
        if typ == _EXT_VERSIONS and len(ext) == 2:
            info.version = _VERSIONS.get(int.from_bytes(ext, "big"), info.version)
        elif typ == _EXT_ALPN:
            names = _alpn_list(ext)
            info.alpn = names[0] if names else ""


def detect(client_to_server: Stream, server_to_client: Stream) -> TlsInfo | None:
    """TLS on this connection, or None. Roles are as given; see `client_hello_in` to decide them."""
    try:
        body = _handshake_body(client_to_server, 0, 1)
        if body is not None:
            info = TlsInfo(True)
            parse_client_hello(body, info)
            reply = _handshake_body(server_to_client, 0, 2)
            if reply is not None:
                parse_server_hello(reply, info)
            return info
        # Began before the capture: records at syscall boundaries in both directions are enough.
        if _records_at_rows(client_to_server) and _records_at_rows(server_to_client):
            return TlsInfo(False)
    except Exception:  # malformed input: not TLS as far as we can tell
        return None
    return None


def client_hello_in(stream: Stream) -> bool:
    """Whether the stream begins with a ClientHello (its writer is the TLS client)."""
    try:
        return _handshake_body(stream, 0, 1) is not None
    except Exception:
        return False


def _records_at_rows(stream: Stream, rows: int = 3, chain: int = 3) -> bool:
    """Whether, from one of the first syscall boundaries, records chain by their lengths: reads need
    not align with records, but a record boundary followed by `chain` plausible headers is TLS."""
    for n, pos in enumerate(stream.row_starts(0)):
        if n >= rows:
            break
        p, ok = pos, 0
        while ok < chain and p < stream.length:
            head = stream.read(p, 5)
            if not is_record_header(head):
                break
            assert head is not None
            p += 5 + int.from_bytes(head[3:5], "big")
            ok += 1
        if ok == chain or (ok and p == stream.length):
            return True
    return False
