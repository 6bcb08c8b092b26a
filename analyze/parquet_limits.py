"""What a Parquet segment would cost in memory, read from its metadata before any row is.

A segment is small on disk but may expand without bound when read: dictionary encoding (20 M rows
that all point at one 4 KiB value) and prefix-delta encoding (DELTA_BYTE_ARRAY) store a value
once for many rows, and integer encodings (dictionary, delta) store a long column in a few bytes.
Every column is estimated from its metadata: at least its number of values times its width. A
dictionary-encoded text column chunk (archives of format 1 and snapshot tables use them) is bounded
by its number of values times its own decoded size; when that bound is large, the exact size is
computed from the dictionary and the indices, never from the expanded values.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

SMALL_BOUND = 1 << 20  # below this, a dictionary chunk's upper bound is used as is
MAX_CHUNKS = 1 << 20  # row groups times columns: each costs a metadata read here (a segment has thousands)
_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


class SegmentError(Exception):
    """The file is not a Parquet file uetrace can read safely (the message says why)."""


def estimate_bytes(path: Path, budget: int | None = None) -> int:
    """Bytes the file's columns take once decoded (an upper-bound estimate), or SegmentError. When the
    metadata alone already exceeds `budget`, that is returned without reading any dictionary (whose
    indices alone could be billions: a run-length header encodes 2^31 of them in a few bytes)."""
    try:
        md = pq.read_metadata(path)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise SegmentError(f"not a readable Parquet file ({_first_line(e)})") from None
    if md.num_row_groups * md.num_columns > MAX_CHUNKS:
        raise SegmentError(f"{md.num_row_groups:,} row groups of {md.num_columns:,} columns: more than uetrace reads")
    total = 0
    dict_columns: dict[int, list[int]] = {}
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        for ci in range(group.num_columns):
            col = group.column(ci)
            kind = col.physical_type
            encodings = set(col.encodings)
            if kind == "BYTE_ARRAY" and "DELTA_BYTE_ARRAY" in encodings:
                raise SegmentError(f"column {col.path_in_schema} uses DELTA_BYTE_ARRAY, which uetrace never "
                                   "writes (it can expand without bound)")
            values = max(col.num_values, 0)
            width = _WIDTH.get(kind) or (_fixed_width(md, ci) if kind == "FIXED_LEN_BYTE_ARRAY" else 0)
            estimate = max(col.total_uncompressed_size, values * width)
            if kind == "BYTE_ARRAY":
                estimate += 4 * values  # offsets
                if col.has_dictionary_page or encodings & {"RLE_DICTIONARY", "PLAIN_DICTIONARY"}:
                    bound = values * col.total_uncompressed_size
                    if bound <= SMALL_BOUND:
                        estimate += bound
                    elif "." in md.schema.column(ci).path:
                        raise SegmentError(f"column {col.path_in_schema}: {values:,} values that may expand "
                                           f"to {bound:,} bytes")
                    else:
                        dict_columns.setdefault(ci, []).append(rg)
            total += estimate
    if dict_columns and (budget is None or total <= budget):
        total += _dictionary_bytes(path, md, dict_columns)
    return total


def _fixed_width(md: pq.FileMetaData, ci: int) -> int:
    try:
        return int(md.schema.column(ci).length or 0)
    except (ValueError, IndexError):
        return 0


def _dictionary_bytes(path: Path, md: pq.FileMetaData, columns: dict[int, list[int]]) -> int:
    """The decoded size of dictionary-encoded text columns: each index's value length, summed,
    computed on the indices and the dictionary only."""
    names = {ci: md.schema.column(ci).path for ci in columns}
    total = 0
    try:
        pf = pq.ParquetFile(path, read_dictionary=list(names.values()))
        for ci, groups in columns.items():
            for rg in groups:
                chunked = pf.read_row_group(rg, columns=[names[ci]]).column(0)
                for chunk in chunked.chunks:
                    if not isinstance(chunk, pa.DictionaryArray):
                        total += chunk.nbytes
                        continue
                    lengths = pc.binary_length(chunk.dictionary)
                    total += int(pc.sum(pc.take(lengths, chunk.indices)).as_py() or 0)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise SegmentError(f"unreadable dictionary ({_first_line(e)})") from None
    return total


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:160] if text else type(e).__name__
