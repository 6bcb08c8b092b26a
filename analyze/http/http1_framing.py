"""What an HTTP/1 head says about its message's body length, read as RFC 9112 reads it, with the
anomalies a strict recipient would object to and the other lengths that lenient recipients would take.

The body length rules (RFC 9112 6.3), in order: Transfer-Encoding (every field, as one list, RFC 9110
5.3) overrides Content-Length; its final coding must be the token `chunked`, else a response runs to
the close and a request cannot be framed. Several Content-Length values must all be equal. A request
with neither has no body; a response with neither runs to the close. (HEAD, 1xx, 204, 304 and 2xx to
CONNECT are decided by the caller, which knows the request.)

Reading a header section walks its lines in Python, ~7 us for five fields: the caller caches the
result by the section's bytes, so keep-alive traffic pays it once per distinct section.
"""

from __future__ import annotations

from uetrace.analyze.http import anomalies as A

# Body length specs: n >= 0 is a Content-Length; these are the rest.
CHUNKED = -1
CLOSE = -2  # delimited by the connection's close (responses only)
UNKNOWN = -3  # a framing error: no length a strict recipient would accept

_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# request-target (RFC 9112 3.2): URI characters of origin-, absolute-, authority- and asterisk-form
_TARGET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,;=:@/?%[]"
_CTL = bytes(range(0, 9)) + bytes(range(10, 32)) + b"\x7f"
_MAX_HEAD = 256 * 1024

# Modes of a Content-Length or Transfer-Encoding field: how this parser reads it, and how another
# recipient might. HONOURED: used here, though a strict recipient rejects its syntax (another might
# ignore it); IGNORED: not used here (RFC 9112 2.2 lets it be consumed unread), but another might use it.
_PLAIN, _HONOURED, _IGNORED = 0, 1, 2


def bad_method(method: bytes) -> bool:
    return bool(method.translate(None, _TCHAR))


def bad_target(target: bytes) -> bool:
    return bool(target.translate(None, _TARGET))


def read_fields(data: bytes, e: int) -> tuple | None:
    """The header section starting at data[e] (the first field line, or the empty line):
    (host, upgrade lowercased, te fields, cl fields, anomalies, length of the section with its empty
    line), or None if the empty line is not within the bytes. te fields: ((codings, mode), ...);
    cl fields: ((values, mode), ...), a value -1 where it is not a number."""
    anoms: list[str] = []
    host = upgrade = ""
    te: list[tuple[tuple[bytes, ...], int]] = []
    cl: list[tuple[tuple[int, ...], int]] = []
    fields: list[list] = []  # [lowercased name, value, mode] in order, for obs-fold
    pos, limit, first = e, e + _MAX_HEAD, True
    while True:
        nl = data.find(b"\n", pos, limit)
        if nl < 0:
            return None
        if nl > pos and data[nl - 1] == 13:  # CR
            line = data[pos:nl - 1]
        else:
            line = data[pos:nl]
            _add(anoms, A.BARE_LF)
        pos = nl + 1
        if not line:
            break
        if b"\r" in line:  # RFC 9112 2.2: a bare CR is invalid, or replaced by SP before processing
            _add(anoms, A.BARE_CR)
            line = line.replace(b"\r", b" ")
        if line[0] in (32, 9):  # SP, HTAB
            if first:  # RFC 9112 2.2: consumed without further processing; another recipient may not
                _add(anoms, A.LEADING_WHITESPACE_HEADER)
                fields.append([*_split(line.lstrip(), anoms), _IGNORED])
            else:  # obs-fold (5.2): the line continues the previous value, joined by a space
                _add(anoms, A.OBS_FOLD)
                if fields:
                    prev = fields[-1]
                    prev[1] = prev[1] + b" " + line.strip(b" \t")
                    prev[2] = _HONOURED if prev[2] == _PLAIN else prev[2]
            continue
        first = False
        name, value = _split(line, anoms)
        if name is None:
            continue
        fields.append([name, value, _PLAIN if name == name.rstrip(b" \t") else _HONOURED])
    for name, value, mode in fields:
        if name is None:
            continue
        if name != name.rstrip(b" \t"):
            name = name.rstrip(b" \t")
        if len(value.translate(None, _CTL)) != len(value):
            _add(anoms, A.INVALID_HEADER_VALUE)
        if name == b"content-length":
            cl.append((tuple(int(v) if v.isdigit() else -1 for v in (p.strip(b" \t") for p in value.split(b","))
                             if v) or (-1,), mode))
        elif name == b"transfer-encoding":
            te.append((tuple(c.split(b";")[0].strip(b" \t").lower() for c in value.split(b",")
                             if c.strip(b" \t")), mode))
        elif name == b"host":
            if not host and mode != _IGNORED:
                host = value.decode("latin-1")
        elif name == b"upgrade" and not upgrade and mode != _IGNORED:
            upgrade = value.lower().decode("latin-1")
    return host, upgrade, tuple(te), tuple(cl), tuple(anoms), pos - e


def _split(line: bytes, anoms: list[str]) -> tuple[bytes | None, bytes]:
    """(lowercased name, value without surrounding whitespace) of a field line; name None if the line
    has no colon. The name keeps trailing whitespace, so the caller can tell `Name : value`."""
    k = line.find(b":")
    if k <= 0:
        _add(anoms, A.INVALID_HEADER_NAME)
        return None, b""
    name = line[:k]
    stripped = name.rstrip(b" \t")
    if len(stripped) != len(name):
        _add(anoms, A.SPACE_BEFORE_COLON)
    if not stripped or stripped.translate(None, _TCHAR):
        _add(anoms, A.INVALID_HEADER_NAME)
    return name.lower(), line[k + 1:].strip(b" \t")


def _add(anoms: list[str], kind: str) -> None:
    if kind not in anoms:
        anoms.append(kind)


def body_specs(request: bool, http10: bool, te: tuple, cl: tuple) -> tuple[int, tuple[int, ...], tuple[str, ...]]:
    """(the RFC's spec, other specs that lenient recipients take, anomalies) for a message's fields."""
    if not te:  # the common heads, in a fraction of the general walk's ~2 us
        if not cl:
            return (0 if request else CLOSE), (), ()
        if len(cl) == 1:
            values, mode = cl[0]
            if mode == _PLAIN and len(values) == 1 and values[0] >= 0:
                return values[0], (), ()
    anoms: list[str] = []
    codings = [c for cs, mode in te if mode != _IGNORED for c in cs]
    lengths = [v for vs, mode in cl if mode != _IGNORED for v in vs]
    has_te = any(mode != _IGNORED for _, mode in te)
    if te:
        all_codings = [c for cs, _ in te for c in cs]
        if not all_codings or all_codings[-1] != b"chunked":
            anoms.append(A.TE_NOT_FINAL_CHUNKED)
        if all_codings.count(b"chunked") > 1:
            anoms.append(A.TE_CHUNKED_TWICE)
        if http10:
            anoms.append(A.TE_IN_HTTP10)
    if cl:
        all_lengths = [v for vs, _ in cl for v in vs]
        if te:
            anoms.append(A.CL_AND_TE)
        if -1 in all_lengths:
            anoms.append(A.INVALID_CONTENT_LENGTH)
        valid = set(all_lengths) - {-1}
        if len(valid) > 1:
            anoms.append(A.CONFLICTING_CONTENT_LENGTH)
        elif len(all_lengths) > 1:
            anoms.append(A.DUPLICATE_CONTENT_LENGTH)
    rfc = _spec(request, has_te, codings, lengths)
    if not anoms and all(mode == _PLAIN for _, mode in (*te, *cl)):
        return rfc, (), ()
    # What other recipients make of the same fields.
    alts: list[int] = []
    if te:
        alts.append(_spec(request, False, [], lengths))  # Content-Length over (or without) Transfer-Encoding
        if any(b"chunked" in c for cs, _ in te for c in cs):  # a substring match, or any position
            alts.append(CHUNKED)
    alts.extend(v for vs, _ in cl for v in vs if v >= 0)  # first, last, or any one Content-Length
    if any(mode != _PLAIN for _, mode in (*te, *cl)):  # the fields with bad syntax read the other way
        other_te = [(cs, m) for cs, m in te if m != _HONOURED]
        other_cl = [v for vs, m in cl if m != _HONOURED for v in vs]
        alts.append(_spec(request, bool(other_te), [c for cs, _ in other_te for c in cs], other_cl))
    seen = {rfc, UNKNOWN}
    out = []
    for s in alts:
        if s not in seen:
            seen.add(s)
            out.append(s)
    return rfc, tuple(out), tuple(anoms)


def _spec(request: bool, has_te: bool, codings: list[bytes], lengths: list[int]) -> int:
    if has_te:
        if codings and codings[-1] == b"chunked":
            return CHUNKED
        return UNKNOWN if request else CLOSE
    if lengths:
        if -1 in lengths or len(set(lengths)) > 1:
            return UNKNOWN
        return lengths[0]
    return 0 if request else CLOSE
