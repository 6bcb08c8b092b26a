"""The bounded tar reader reads what tarfile writes (every format, long and non-ASCII names, big
sizes in base-256) and refuses, from the header alone, what a uetrace archive never holds."""

from __future__ import annotations

import io
import tarfile

import pytest

from uetrace.analyze.tar_stream import TarFormatError, TarRefusedError, TarStream, TruncatedError

NAMES = ["manifest.json", "events/sock_data/000001.parquet", "events/" + "k" * 120 + "/000001.parquet",
         "symbols/é_ü/000002.parquet", "p" * 99, "q" * 300]


def _tar(fmt: int, members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _read_all(data: bytes, **kw) -> list[tuple[str, bytes]]:
    tar = TarStream(io.BytesIO(data), **kw)
    out = []
    for m in tar:
        chunks = []
        while chunk := tar.read_data(7):
            chunks.append(chunk)
        out.append((m.name, b"".join(chunks)))
        assert len(out[-1][1]) == m.size
    return out


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_reads_what_tarfile_writes(fmt):
    names = NAMES if fmt != tarfile.USTAR_FORMAT else [n for n in NAMES if len(n) < 100 and n.isascii()]
    members = [(n, (n * 3).encode()[: 37 * i]) for i, n in enumerate(names)]
    assert _read_all(_tar(fmt, members)) == members


def test_skipping_data_keeps_the_stream_aligned():
    members = [("a", b"x" * 1000), ("b", b"y" * 513), ("c", b"z")]
    tar = TarStream(io.BytesIO(_tar(tarfile.PAX_FORMAT, members)))
    seen = []
    for m in tar:
        seen.append(m.name)
        if m.name == "b":
            tar.read_data(10)  # partly read, the rest skipped by the next header
    assert seen == ["a", "b", "c"]


def test_base256_size_is_parsed():
    info = tarfile.TarInfo("big")
    info.size = 9 << 30  # over the 8 GiB of octal: GNU writes it base-256
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    assert header[124] & 0x80
    member = next(iter(TarStream(io.BytesIO(header))))
    assert member.size == 9 << 30


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE])
def test_links_devices_and_folders_are_refused(kind):
    info = tarfile.TarInfo("events/x/000001.parquet")
    info.type = kind
    with pytest.raises(TarRefusedError, match="not a regular file"):
        _read_all(info.tobuf(format=tarfile.PAX_FORMAT))


def test_extended_header_over_the_limit_is_refused_before_reading():
    data = _tar(tarfile.PAX_FORMAT, [("é" * 40, b"x")])  # non-ASCII: a PAX header precedes it
    with pytest.raises(TarRefusedError, match="PAX header of"):
        _read_all(data, max_header=16)
    assert _read_all(data)[0][0] == "é" * 40


def test_corrupt_header_and_truncation():
    data = bytearray(_tar(tarfile.PAX_FORMAT, [("a", b"x" * 700)]))
    data[10] ^= 0xFF
    with pytest.raises(TarFormatError, match="checksum"):
        _read_all(bytes(data))
    whole = _tar(tarfile.PAX_FORMAT, [("a", b"x" * 700)])
    with pytest.raises(TruncatedError):
        _read_all(whole[:900])
