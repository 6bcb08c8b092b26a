"""Command-line arguments that look like secrets, masked at the same length.

The processes table keeps a command line as its arguments joined by spaces: `--password=x`,
`--db-password x`, `token=x`, `PGPASSWORD=x`, header arguments such as curl's
`-H "Authorization: Bearer x"` or `-H "X-Api-Key: x"`, and URLs with userinfo or query values are
masked; a secret that does not say what it is (`-p hunter2`, a positional argument) is not.
"""

from __future__ import annotations

import re

from uetrace.redaction.http1 import mask_url

_SECRET_WORD = (rb"(?:passw(?:or)?d|passwd|pwd|secret|token|api[-_]?key|access[-_]?key|private[-_]?key|auth"
                rb"|credential|session|cookie|bearer)")
_FLAG_VALUE = re.compile(rb"-{1,2}[A-Za-z0-9_.-]*" + _SECRET_WORD + rb"[A-Za-z0-9_.-]*=", re.I)
_FLAG_ALONE = re.compile(rb"-{1,2}[A-Za-z0-9_.-]*" + _SECRET_WORD + rb"[A-Za-z0-9_.-]*", re.I)
_ASSIGN = re.compile(rb"[A-Za-z0-9_.-]*" + _SECRET_WORD + rb"[A-Za-z0-9_.-]*=", re.I)
_URL = re.compile(rb"[a-zA-Z][a-zA-Z0-9+.-]{0,15}://")
# `Name:` of a header argument; a value may follow in the same word (`Cookie:a=b`), not a URL's `//`.
_HEADER = re.compile(rb"[A-Za-z0-9_-]*" + _SECRET_WORD + rb"[A-Za-z0-9_-]*:(?!//)", re.I)
# Authorization schemes (IANA registry and common ones): the credential is the word after.
_SCHEME = re.compile(rb"(?:basic|bearer|digest|token|negotiate|ntlm|hoba|mutual|vapid|dpop|gnap|privatetoken"
                     rb"|scram-sha-1|scram-sha-256|aws4-hmac-sha256|apikey|oauth)", re.I)


def mask_cmdline(text: str) -> tuple[str, int]:
    """The masked command line and how many values were masked."""
    buf = bytearray(text.encode("utf-8", "surrogatepass"))
    count = 0
    words = [(m.start(), m.end()) for m in re.finditer(rb"\S+", buf)]
    hide_next = header_next = False
    for lo, hi in words:
        if header_next and _SCHEME.fullmatch(buf, lo, hi):
            header_next, hide_next = False, True   # `Bearer`: the credential is the next word
            continue
        if (hide_next or header_next) and buf[lo] != 0x2D:
            buf[lo:hi] = b"*" * (hi - lo)
            count += 1
            hide_next = header_next = False
            continue
        hide_next = header_next = False
        h = None if buf[lo] == 0x2D else _HEADER.match(buf, lo, hi)
        if h:
            if h.end() == hi:
                header_next = True
            elif _SCHEME.fullmatch(buf, h.end(), hi):
                hide_next = True
            else:
                buf[h.end():hi] = b"*" * (hi - h.end())
                count += 1
            continue
        m = _FLAG_VALUE.match(buf, lo, hi) or (None if buf[lo] == 0x2D else _ASSIGN.match(buf, lo, hi))
        if m and m.end() < hi:
            buf[m.end():hi] = b"*" * (hi - m.end())
            count += 1
            continue
        if _FLAG_ALONE.fullmatch(buf, lo, hi):
            hide_next = True
            continue
        u = _URL.search(buf, lo, hi)
        if u:
            count += mask_url(buf, u.start(), hi)
    if not count:
        return text, 0
    # Masking replaced whole UTF-8 sequences byte by byte: the text decodes, possibly longer in characters.
    return buf.decode("utf-8", "replace"), count
