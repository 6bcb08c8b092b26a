"""Vectorized decoding of ring records into Arrow tables.

Every record struct is named `ue_<kind>` in bpf/*.h, starts with a __u32 `kind`
whose value is the enumerator UE_KIND_<KIND> of enum ue_kind, and is read from
the object's BTF (capture/btf.py). Decoding gathers each kind's fixed part as
8-byte words with one numpy fancy index and views it through a structured
dtype; a trailing flexible array (`payload[]`) becomes a binary column.
Fields named `kind` or starting with `_pad` are not written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from uetrace.capture.btf import Btf, Field, StructLayout
from uetrace.capture.ring import Chunk

_INT_TYPES = {(1, False): "u1", (2, False): "<u2", (4, False): "<u4", (8, False): "<u8",
              (1, True): "i1", (2, True): "<i2", (4, True): "<i4", (8, True): "<i8"}


@dataclass
class RecordKind:
    name: str          # table name, e.g. "sock_data"
    kind_id: int       # value of the leading `kind` field
    layout: StructLayout
    # Every enum of the tracer object's BTF, written with the layout so that an analysis
    # looks values up by enumerator name: a renumbered enum still decodes old archives.
    enums: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def columns(self) -> list[Field]:
        return [f for f in self.layout.fields if f.name != "kind" and not f.name.startswith("_pad")]

    def dtype(self) -> np.dtype:
        names, formats, offsets = [], [], []
        for f in self.columns:
            if f.kind == "tail":
                continue
            names.append(f.name)
            offsets.append(f.offset)
            if f.kind == "int" and f.count == 1:
                formats.append(_INT_TYPES[(f.size, f.signed)])
            elif f.kind == "char[]":
                formats.append(f"S{f.size}")
            else:
                formats.append(f"V{f.size}")
        return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                         "itemsize": _round8(self.layout.size)})

    def arrow_schema(self) -> pa.Schema:
        fields = []
        for f in self.columns:
            if f.kind == "tail":
                fields.append(pa.field(f.name, pa.binary()))
            elif f.kind == "char[]":
                fields.append(pa.field(f.name, pa.string()))
            elif f.kind == "bytes" or f.count > 1:
                fields.append(pa.field(f.name, pa.binary(f.size)))
            else:
                fields.append(pa.field(f.name, pa.from_numpy_dtype(np.dtype(_INT_TYPES[(f.size, f.signed)]))))
        return pa.schema(fields)

    def describe(self) -> dict:
        """The layout as written to schema/<kind>.json in the archive."""
        return {"kind": self.name, "kind_id": self.kind_id, "struct": self.layout.name,
                "size": self.layout.size,
                "fields": [{"name": f.name, "offset": f.offset, "size": f.size, "type": f.kind,
                            "signed": f.signed} for f in self.layout.fields],
                "enums": self.enums}


def _round8(n: int) -> int:
    return (n + 7) & ~7


def kinds_from_btf(btf: Btf, struct_names: list[str]) -> list[RecordKind]:
    """Bind each `ue_<kind>` struct to its UE_KIND_<KIND> value."""
    values = btf.enum("ue_kind")
    enums = btf.enums()
    out = []
    for sname in struct_names:
        name = sname.removeprefix("ue_")
        out.append(RecordKind(name, values[f"UE_KIND_{name.upper()}"], btf.struct(sname), enums))
    return out


class Decoder:
    """Splits a chunk by record kind and decodes each kind into an Arrow table."""

    def __init__(self, kinds: list[RecordKind]):
        self.kinds = {k.kind_id: k for k in kinds}
        self._dtypes = {k.kind_id: k.dtype() for k in kinds}
        self._schemas = {k.kind_id: k.arrow_schema() for k in kinds}
        self.unknown = 0
        self._needs_pad = any(k.layout.size % 8 for k in kinds)

    def decode(self, chunk: Chunk) -> dict[str, pa.Table]:
        if not len(chunk):
            return {}
        data = chunk.data
        if self._needs_pad:  # a struct size not a multiple of 8 would read past the last record
            data = data + b"\0" * 8
        raw = np.frombuffer(data, dtype=np.uint8)
        words = raw[: len(raw) // 8 * 8].view("<u8")
        word_idx = chunk.offsets // 8
        kind_ids = (words[word_idx] & 0xFFFFFFFF).astype(np.uint32)
        out = {}
        for kind_id in np.unique(kind_ids):
            rk = self.kinds.get(int(kind_id))
            sel = kind_ids == kind_id
            if rk is None:
                self.unknown += int(sel.sum())
                continue
            out[rk.name] = self._decode_kind(rk, raw, words, chunk.offsets[sel], chunk.lengths[sel])
        return out

    def _decode_kind(self, rk: RecordKind, raw: np.ndarray, words: np.ndarray, offsets: np.ndarray,
                     lengths: np.ndarray) -> pa.Table:
        dtype = self._dtypes[rk.kind_id]
        nwords = dtype.itemsize // 8
        rows = words[(offsets // 8)[:, None] + np.arange(nwords)].view(dtype).reshape(-1)
        n = len(rows)
        cols = []
        for f, af in zip(rk.columns, self._schemas[rk.kind_id]):
            if f.kind == "tail":
                cols.append(_tail(raw, offsets + rk.layout.size, np.maximum(lengths - rk.layout.size, 0)))
            elif f.kind == "char[]":
                cols.append(pa.array(np.char.decode(rows[f.name], "utf-8", errors="replace")))
            elif af.type == pa.binary(f.size):
                buf = np.ascontiguousarray(rows[f.name]).tobytes()
                cols.append(pa.FixedSizeBinaryArray.from_buffers(af.type, n, [None, pa.py_buffer(buf)]))
            else:
                cols.append(pa.array(np.ascontiguousarray(rows[f.name])))
        return pa.Table.from_arrays(cols, schema=self._schemas[rk.kind_id])


def _tail(raw: np.ndarray, starts: np.ndarray, lengths: np.ndarray, piece: int = 2048) -> pa.Array:
    """The variable parts [start, start+len) as one binary column, without a
    Python step per record: a gather over the tail bytes only, whose index is each
    byte's position within its tail plus that tail's start. The index is built
    for `piece` records at a time: one index for a whole batch (8 bytes per payload
    byte) costs more in fresh zeroed pages than the gather itself."""
    n = len(starts)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    data = np.empty(total, dtype=np.uint8)
    shift = starts - offsets[:-1]
    for i in range(0, n, piece):
        j = min(i + piece, n)
        lo, hi = int(offsets[i]), int(offsets[j])
        if hi > lo:
            idx = np.arange(lo, hi, dtype=np.int64)
            idx += np.repeat(shift[i:j], lengths[i:j])
            np.take(raw, idx, out=data[lo:hi])
    large = total >= 2**31
    typ = pa.large_binary() if large else pa.binary()
    arr = pa.Array.from_buffers(typ, n, [None, pa.py_buffer(offsets if large else offsets.astype(np.int32)),
                                         pa.py_buffer(data)])
    return arr.cast(pa.binary()) if large else arr
