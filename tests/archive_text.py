"""Every byte an archive holds, decompressed: each member's raw bytes and, for a Parquet member,
every value of every column (binary and text as they are, other types as text). For tests that
search an archive for strings that must not be in it."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard


def member_texts(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """(member name, its bytes) and, for Parquet, (member:column, the column's values joined)."""
    with open(path, "rb") as fh:
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        data = reader.read()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for m in tar:
            body = tar.extractfile(m).read() if m.isfile() else b""
            yield m.name, body
            if m.name.endswith(".parquet"):
                table = pq.read_table(io.BytesIO(body))
                for name in table.column_names:
                    col = table.column(name)
                    if pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type):
                        values = [v for v in col.to_pylist() if v is not None]
                    else:
                        values = [str(v).encode() for v in col.to_pylist() if v is not None]
                    yield f"{m.name}:{name}", b"\n".join(values)


def find_secrets(path: str | Path, secrets: list[str]) -> list[tuple[str, str]]:
    """(member or member:column, secret) for each secret found."""
    wanted = [s.encode() for s in secrets]
    return [(where, s.decode()) for where, blob in member_texts(path) for s in wanted if s in blob]
