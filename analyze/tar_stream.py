"""A tar reader for untrusted streams, bounded before anything is read into memory.

Python's tarfile reads a PAX or GNU long-name header whole into memory whatever size it declares (a
98 KB archive can declare a 3 GiB header), and knows every member type. Here the 512-byte header
blocks are parsed by hand: an extended header larger than `max_header` is refused from its size
field, before its body is read, and only what a uetrace archive holds is accepted (regular files,
PAX and GNU long-name headers). The member's data is then read by the caller, in chunks, through
`read_data`, so the caller bounds and hashes it as it goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from uetrace.errors import BadInputError

BLOCK = 512
DEFAULT_MAX_HEADER = 64 << 10
_REGULAR = (b"0", b"\0", b"7")
_PAX, _PAX_GLOBAL, _GNU_LONGNAME, _GNU_LONGLINK = b"x", b"g", b"L", b"K"


class TarFormatError(BadInputError):
    """The tar stream is malformed or holds what a uetrace archive never does."""


class TarRefusedError(TarFormatError):
    """The stream holds what is refused outright, not read around: an oversized header, a link."""


class TruncatedError(EOFError):
    """The stream ended inside a member: a capture killed while writing."""


@dataclass
class TarMember:
    name: str
    size: int


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    parts, left = [], n
    while left:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise TruncatedError(f"stream ended {left} bytes short of a {n}-byte block")
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or base-256 when the top bit of the first byte is set."""
    if field[:1] and field[0] & 0x80:
        if field[0] & 0x40:
            raise TarFormatError("negative number in a tar header")
        value = field[0] & 0x3F
        for b in field[1:]:
            value = (value << 8) | b
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise TarFormatError("corrupt tar header (bad number)") from None


def _checksum_ok(block: bytes) -> bool:
    stored = _number(block[148:156])
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:])
    if stored == unsigned:
        return True
    return stored == unsigned - 256 * sum(1 for b in block[:148] + block[156:] if b > 127)  # old writers signed it


def _text(field: bytes) -> str:
    raw = field.split(b"\0", 1)[0]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise TarFormatError(f"member name is not UTF-8: {raw[:60]!r}") from None


def _pax_records(body: bytes) -> dict[str, str]:
    """`"%d %s=%s\\n"` records; a record whose length does not add up makes the header corrupt."""
    out: dict[str, str] = {}
    pos = 0
    while pos < len(body) and body[pos:pos + 1] != b"\0":
        space = body.find(b" ", pos, pos + 20)
        if space < 0:
            raise TarFormatError("corrupt PAX header")
        try:
            length = int(body[pos:space])
        except ValueError:
            raise TarFormatError("corrupt PAX header") from None
        record = body[space + 1:pos + length]
        if length <= space - pos or pos + length > len(body) or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("corrupt PAX header")
        key, _, value = record[:-1].partition(b"=")
        try:
            out[key.decode("utf-8")] = value.decode("utf-8")
        except UnicodeDecodeError:
            raise TarFormatError("PAX header is not UTF-8") from None
        pos += length
    return out


class TarStream:
    """`for member in tar: tar.read_data(out_write)`: members of a tar stream one by one; a member's
    data must be read (or skipped) before the next header."""

    def __init__(self, stream: BinaryIO, max_header: int = DEFAULT_MAX_HEADER):
        self._stream = stream
        self.max_header = max_header
        self._pending = 0  # data bytes of the current member not yet consumed, padding included

    def __iter__(self) -> Iterator[TarMember]:
        while True:
            member = self._next()
            if member is None:
                return
            yield member

    def _extended(self, size: int, what: str) -> bytes:
        if size > self.max_header:
            raise TarRefusedError(f"{what} header of {size:,} bytes (the limit is {self.max_header:,})")
        body = _read_exact(self._stream, size)
        _read_exact(self._stream, -size % BLOCK)
        return body

    def _next(self) -> TarMember | None:
        if self._pending:
            self.skip_data()
        pax: dict[str, str] = {}
        long_name: str | None = None
        while True:
            block = self._stream.read(BLOCK)
            if len(block) < BLOCK:
                block += _read_exact(self._stream, BLOCK - len(block)) if block else b""
            if not block or block == bytes(BLOCK):
                return None  # end-of-archive blocks, or a stream that ends between members
            if not _checksum_ok(block):
                raise TarFormatError("corrupt tar header (checksum)")
            size = _number(block[124:136])
            kind = block[156:157]
            if kind in (_PAX, _PAX_GLOBAL):
                records = _pax_records(self._extended(size, "PAX"))
                if kind == _PAX:
                    pax.update(records)
                continue
            if kind in (_GNU_LONGNAME, _GNU_LONGLINK):
                body = self._extended(size, "GNU long-name")
                if kind == _GNU_LONGNAME:
                    long_name = _text(body)
                continue
            name = _text(block[0:100])
            if block[257:262] == b"ustar" and block[345:346] != b"\0":
                name = f"{_text(block[345:500])}/{name}"
            name = pax.get("path", long_name if long_name is not None else name)
            if kind not in _REGULAR:
                raise TarRefusedError(f"unexpected member {name!r} (not a regular file)")
            if "size" in pax:
                try:
                    size = int(pax["size"])
                except ValueError:
                    raise TarFormatError("corrupt PAX header (size)") from None
                if size < 0:
                    raise TarFormatError("corrupt PAX header (size)")
            self._pending = size + (-size % BLOCK)
            self._data_left = size
            return TarMember(name, size)

    def read_data(self, chunk: int = 1 << 20) -> bytes:
        """The next chunk of the current member's data (b"" at its end)."""
        if not self._data_left:
            return b""
        n = min(chunk, self._data_left)
        data = _read_exact(self._stream, n)
        self._data_left -= n
        self._pending -= n
        return data

    def skip_data(self) -> None:
        while self._pending:
            n = min(self._pending, 1 << 20)
            _read_exact(self._stream, n)
            self._pending -= n
        self._data_left = 0
