"""The exchanges of an analysis as one Arrow table, read as Exchange objects only where they are wanted.

A busy capture has millions of exchanges. As Python objects they cost ~700 bytes each (a slotted
dataclass of 31 fields, its ints and strings): 1.4 GB for two million, more than the whole analysis
may take. HTTP/1's parser gives a connection's exchanges as columns (ExchangeColumns), the other
parsers Exchange objects, a connection batch at a time; either becomes Arrow columns at once (strings
dictionary-encoded: a connection's addresses, a route's method and path repeat), ~100 bytes an
exchange. Statistics, filters, ordering and the SQL tables work on the columns; `ExchangeTable` is a
read-only sequence that makes an Exchange for an index on demand (the slowest ten, one request's
story), so code that reads exchanges one by one still can, without holding them.

`rows()` is each exchange's index in the whole (unfiltered) analysis: a filtered table keeps it (in a
`row` column the whole table does without), so a row can be matched with what was computed for the
whole (request ids, spans).
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import fields
from typing import overload

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.analyze.http.exchange import Exchange

FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Exchange))
_STR = pa.dictionary(pa.int32(), pa.string())
_TYPES: dict[str, pa.DataType] = {
    "protocol": _STR, "conn_id": pa.int64(), "client": _STR, "server": _STR, "method": _STR, "path": _STR,
    "host": _STR, "status": pa.int32(), "req_bytes": pa.int64(), "resp_bytes": pa.int64(), "start_ts": pa.uint64(),
    "end_ts": pa.uint64(), "latency_ns": pa.int64(), "client_pid": pa.uint32(), "client_tid": pa.uint32(),
    "server_pid": pa.uint32(), "server_tid": pa.uint32(), "measured_at": _STR, "complete": pa.bool_(), "note": _STR,
    "stream_id": pa.int64(), "grpc_service": _STR, "grpc_method": _STR, "grpc_status": pa.int32(),
    "grpc_message": _STR, "tls": pa.bool_(), "client_comm": _STR, "server_comm": _STR,
    "anomalies": pa.list_(pa.string()), "traceparent": _STR,
}
assert set(_TYPES) == set(FIELDS), "exchange_table._TYPES must name every Exchange field"
SCHEMA = pa.schema([(name, _TYPES[name]) for name in FIELDS])
ROW_COLUMN = "row"  # a selection's column: each exchange's row in the whole table
_DICT = frozenset(n for n, t in _TYPES.items() if t == _STR)
_CHUNK = 4096  # rows turned into objects at a time when iterating
_FIELDS_OF = operator.attrgetter(*FIELDS)  # an exchange's fields as a tuple, in one call


def batch_of(exchanges: Sequence[Exchange]) -> pa.RecordBatch:
    """Exchanges as one record batch of SCHEMA."""
    arrays = []
    columns = zip(*map(_FIELDS_OF, exchanges)) if exchanges else [()] * len(FIELDS)
    for name, values in zip(FIELDS, columns):
        if name in _DICT:
            arrays.append(pa.array(values, pa.string()).dictionary_encode())
        else:
            arrays.append(pa.array(values, _TYPES[name]))
    return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


class ExchangeColumns:
    """Exchanges as columns, before they are a record batch: what a parser that works a connection
    at a time gives without making an Exchange per message (HTTP/1's; objects and their transposition
    cost more than the parse). A field's value is a list (None for null), a numpy array (a masked one
    for nulls), or one value every row shares (a connection's addresses, its protocol, its end)."""

    def __init__(self, n: int, values: dict[str, object]) -> None:
        assert set(values) == set(FIELDS), "ExchangeColumns needs every Exchange field"
        self.n, self.values = n, values

    def __len__(self) -> int:
        return self.n

    def column(self, name: str) -> list:
        """A field's values as a Python list, one per row."""
        v = self.values[name]
        if isinstance(v, np.ma.MaskedArray):
            return [x if ok else None for x, ok in zip(v.data.tolist(), (~np.ma.getmaskarray(v)).tolist())]
        if isinstance(v, np.ndarray):
            return v.tolist()
        if isinstance(v, list):
            return v
        if name == "anomalies":  # a list each, not one list shared
            return [list(v) for _ in range(self.n)]  # type: ignore[call-overload]
        return [v] * self.n

    def batch(self) -> pa.RecordBatch:
        arrays = []
        for name in FIELDS:
            v, t = self.values[name], _TYPES[name]
            if isinstance(v, (list, np.ndarray)):
                a = pa.array(v, pa.string() if name in _DICT else t)
                arrays.append(a.dictionary_encode() if name in _DICT else a)
            else:
                arrays.append(_repeated(v, t, self.n))
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)

    def objects(self) -> list[Exchange]:
        return [Exchange(*row) for row in zip(*(self.column(name) for name in FIELDS))] if self.n else []


def _repeated(value: object, t: pa.DataType, n: int) -> pa.Array:
    """n times one value, built from offsets or codes: pa.repeat appends a list or string n times."""
    if value is None:
        return pa.nulls(n, t)
    if t == _STR:
        return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([value], pa.string()))
    if pa.types.is_list(t) and not value:
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], t.value_type))
    return pa.repeat(pa.scalar(value, t), n)


class ExchangeTable(Sequence[Exchange]):
    """A read-only sequence of Exchange over an Arrow table of SCHEMA (see the module's docstring)."""

    def __init__(self, table: pa.Table | None = None) -> None:
        self.table = table if table is not None else SCHEMA.empty_table()

    @classmethod
    def of(cls, exchanges: Iterable[Exchange]) -> ExchangeTable:
        exchanges = list(exchanges)
        return cls(pa.Table.from_batches([batch_of(exchanges)], schema=SCHEMA))

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, i: int) -> Exchange: ...

    @overload
    def __getitem__(self, i: slice) -> list[Exchange]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return list(self._objects(self.table.slice(*_bounds(i, len(self)))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return next(self._objects(self.table.slice(i, 1)))

    def __iter__(self) -> Iterator[Exchange]:
        for start in range(0, len(self), _CHUNK):
            yield from self._objects(self.table.slice(start, _CHUNK))

    def __bool__(self) -> bool:
        return len(self) > 0

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (ExchangeTable, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    @staticmethod
    def _objects(part: pa.Table) -> Iterator[Exchange]:
        for values in zip(*(python_values(part.column(name)) for name in FIELDS)):
            yield Exchange(*values)

    # -- columns ---------------------------------------------------------------------------------
    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def ints(self, name: str, fill: int = 0) -> np.ndarray:
        """An integer column as int64, nulls as `fill`."""
        return pc.fill_null(self.table.column(name), fill).to_numpy().astype(np.int64, copy=False)

    def valid(self, name: str) -> np.ndarray:
        return pc.is_valid(self.table.column(name)).to_numpy(zero_copy_only=False)

    def strings(self, name: str) -> tuple[list[str], np.ndarray]:
        """A string column as (distinct values, code of each row): per-value work done once per value."""
        col = self.table.column(name).combine_chunks() if self.table.num_rows else pa.array([], _STR)
        if not pa.types.is_dictionary(col.type):
            col = col.dictionary_encode()
        return col.dictionary.to_pylist(), pc.fill_null(col.indices, -1).to_numpy().astype(np.int64)

    def rows(self) -> np.ndarray:
        """Each exchange's index in the whole analysis."""
        if ROW_COLUMN in self.table.column_names:
            return self.table.column(ROW_COLUMN).to_numpy()
        return np.arange(len(self), dtype=np.int64)

    # -- selections ------------------------------------------------------------------------------
    def filter(self, mask: np.ndarray) -> ExchangeTable:
        return self.take(np.flatnonzero(mask))

    def take(self, indices: np.ndarray | list[int]) -> ExchangeTable:
        at = np.asarray(indices, dtype=np.int64)
        rows = self.rows()[at]
        table = self.table.take(pa.array(at))
        if ROW_COLUMN in table.column_names:
            return ExchangeTable(table.set_column(table.column_names.index(ROW_COLUMN), ROW_COLUMN, pa.array(rows)))
        return ExchangeTable(table.append_column(ROW_COLUMN, pa.array(rows)))

    def with_column(self, name: str, values: pa.Array) -> ExchangeTable:
        i = self.table.schema.get_field_index(name)
        return ExchangeTable(self.table.set_column(i, self.table.schema.field(name), values))


def python_values(column: pa.ChunkedArray) -> list:
    """column.to_pylist(), several times faster: a dictionary's strings are made once, not per row."""
    out: list = []
    for chunk in column.chunks:
        if pa.types.is_dictionary(chunk.type):
            strings = chunk.dictionary.to_pylist() + [None]
            codes = pc.fill_null(chunk.indices, -1).to_numpy(zero_copy_only=False)
            out.extend([strings[c] for c in codes.tolist()])
        elif pa.types.is_list(chunk.type) and not pc.sum(pc.list_value_length(chunk)).as_py():
            out.extend([] if v else None for v in chunk.is_valid().to_numpy(zero_copy_only=False).tolist())
        elif chunk.null_count == 0 and (pa.types.is_integer(chunk.type) or pa.types.is_boolean(chunk.type)):
            out.extend(chunk.to_numpy(zero_copy_only=False).tolist())
        else:
            out.extend(chunk.to_pylist())
    return out


class ExchangeTableBuilder:
    """Exchanges appended as they come, objects or columns, then one table. Objects wait in a list
    until flush() (or a batch of columns after them) makes them columns: a few connections' worth."""

    def __init__(self) -> None:
        self.batches: list[pa.RecordBatch] = []
        self.pending: list[Exchange] = []

    def add(self, exchanges: Sequence[Exchange] | ExchangeColumns) -> None:
        if isinstance(exchanges, ExchangeColumns):
            if exchanges.n:
                self.flush()
                self.batches.append(exchanges.batch())
        else:
            self.pending.extend(exchanges)

    def flush(self) -> None:
        """The objects added so far as columns."""
        if self.pending:
            self.batches.append(batch_of(self.pending))
            self.pending = []

    def extend(self, other: ExchangeTableBuilder) -> None:
        self.flush()
        other.flush()
        self.batches.extend(other.batches)

    def finish(self) -> ExchangeTable:
        """One table of one chunk: a take across the hundreds of batches a long capture makes (a
        batch per piece of a long connection) cost 40 times as much, per chunk and column."""
        self.flush()
        table = pa.Table.from_batches(self.batches, schema=SCHEMA)
        self.batches = []
        return ExchangeTable(table.unify_dictionaries().combine_chunks() if table.column(0).num_chunks > 1 else table)


def _bounds(s: slice, n: int) -> tuple[int, int]:
    start, stop, step = s.indices(n)
    if step != 1:
        raise ValueError("ExchangeTable slices take no step")
    return start, max(stop - start, 0)
