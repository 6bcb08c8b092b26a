"""What the correlation engine returns: per exchange and side a span (ids, parent, the thread and the
window it was served in, the evidence found there), grouped per request.

Exports (Perfetto, OTLP) and reports are drawn from this result alone, so it carries everything they
need: ids as lowercase hex (W3C trace context), windows as CLOCK_MONOTONIC ns, evidence per span.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.analyze.correlate.objects import (  # noqa: F401  (the result's parts, imported from here)
    CLIENT,
    SERVER,
    THIN_SAMPLES,
    CorrelateParams,
    Evidence,
    Request,
    Span,
    Window,
)
from uetrace.analyze.correlate.span_table import EVIDENCE_FIELDS, LINKS, SIDES, SpanTable
from uetrace.analyze.distinct import sorted_unique
from uetrace.analyze.http.exchange import Exchange
from uetrace.analyze.http.exchange_table import FIELDS, ExchangeTable, python_values

if TYPE_CHECKING:
    from uetrace.analyze.correlate.spans import IdMaker


@dataclass
class _Index:
    """Per request its client and server span rows (-1: not captured); per exchange row its request."""

    client: np.ndarray
    server: np.ndarray
    rank: np.ndarray

    @classmethod
    def of(cls, result: CorrelationResult) -> _Index:
        n = len(result.order)
        out = cls(np.full(n, -1, np.int32), np.full(n, -1, np.int32), np.full(len(result.exchanges), -1, np.int32))
        t = result.table
        for side, where in ((0, out.client), (1, out.server)):
            rows = np.flatnonzero(t.side == side)
            where[t.request[rows]] = rows
        out.rank[result.order] = np.arange(n)
        return out


# The evidence fields of Request.row(), in its order.
_ROW_EVIDENCE = ("cpu_ms", "offcpu_ms", "lock_wait_ms", "alloc_bytes", "outstanding_bytes", "packets", "retransmits")


@dataclass
class CorrelationResult:
    """The correlation of every exchange (see analyzer.py), held as columns: the exchanges' table, the
    request order, the span table. `requests` makes Request objects (with their exchange and spans)
    on demand, so a report of the slowest ten does not hold two million of them."""

    params: CorrelateParams
    exchanges: ExchangeTable = field(default_factory=ExchangeTable)  # the http analysis, unfiltered
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # request id -> exchange row
    endpoint_names: list[str] = field(default_factory=list)
    endpoint_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # per request
    table: SpanTable = field(default_factory=SpanTable.empty)
    ids: IdMaker | None = None
    period_ns: int | None = None  # CPU sampling period (None: no stack samples recorded)
    recorded: tuple[str, ...] = ()  # evidence sources the archive holds: cpu, offcpu, lock, alloc, net
    notes: list[str] = field(default_factory=list)
    _index: _Index | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self._index is None:  # kept by dataclasses.replace (run() gives the cached result new params)
            self._index = _Index.of(self)

    @property
    def _client(self) -> np.ndarray:
        return self._index.client

    @property
    def _server(self) -> np.ndarray:
        return self._index.server

    @property
    def _rank(self) -> np.ndarray:
        return self._index.rank

    # -- objects on demand -----------------------------------------------------------------------
    @property
    def requests(self) -> RequestList:
        return RequestList(self)

    def request(self, request_id: int, exchange: Exchange | None = None) -> Request:
        if exchange is None:
            exchange = self.exchanges[int(self.order[request_id])]
        r = Request(request_id, exchange, self.endpoint_names[int(self.endpoint_code[request_id])])
        c, s = int(self._client[request_id]), int(self._server[request_id])
        if c >= 0:
            r.client = self.table.span_of(c, self.ids)
        if s >= 0:
            r.server = self.table.span_of(s, self.ids)
        return r

    def request_ids(self, rows: np.ndarray) -> np.ndarray:
        """The request id of each exchange row of the http analysis (ExchangeTable.rows())."""
        return self._rank[rows].astype(np.int64)

    def request_of_row(self, row: int) -> int | None:
        """The request id of the exchange at `row` of the http analysis (ExchangeTable.rows())."""
        rid = int(self._rank[row]) if 0 <= row < len(self._rank) else -1
        return rid if rid >= 0 else None

    @property
    def spans(self) -> list[Span]:
        """Every span as an object: for small results (tests, several captures' links); whole-result
        figures are span_count, linked_count and trace_count."""
        return [s for r in self.requests for s in r.spans]

    # -- whole-result figures, on the columns ----------------------------------------------------
    def span_count(self) -> int:
        return len(self.table)

    def linked_count(self) -> int:
        return int((self.table.parent != 0).sum())

    def trace_count(self) -> int:
        t = self.table
        if t.trace_ids:  # set across captures: as strings
            return len({t.trace_id(row, self.ids) for row in range(len(t))})
        roots = sorted_unique(t.trace_root)
        header = t.trace_from_header[roots]
        from_headers = {t.headers[int(t.request[r])].trace_id for r in roots[header].tolist()}
        return len(from_headers) + int((~header).sum())

    def main_rows(self) -> np.ndarray:
        """Per request, the row of the span that speaks for it (the server's when captured), -1: none."""
        return np.where(self._server >= 0, self._server, self._client)

    def slowest(self) -> list[Request]:
        x = self.exchanges
        lat = x.ints("latency_ns")[self.order]
        timed = np.flatnonzero(x.valid("latency_ns")[self.order] & (self.main_rows() >= 0))
        pick = timed[np.lexsort((timed, -lat[timed]))][:self.params.slowest]
        return [self.request(int(i)) for i in pick]

    def find(self, ident: str) -> Request | None:
        """A request by id (its number), or by one of its span ids."""
        ident = ident.strip().lower()
        if ident.isdigit() and int(ident) < len(self.order):
            return self.request(int(ident))
        if not re.fullmatch(r"[0-9a-f]{1,16}", ident):
            return None
        rows = np.flatnonzero(self.table.span == np.uint64(int(ident, 16)))
        return self.request(int(self.table.request[rows[0]])) if rows.size else None

    def span_request(self, span_id: str) -> tuple[Span, Request] | None:
        """The span with this id (the last one, should ids repeat) and its request."""
        rows = np.flatnonzero(self.table.span == np.uint64(int(span_id, 16)))
        if not rows.size:
            return None
        r = self.request(int(self.table.request[rows[-1]]))
        return next(s for s in r.spans if s.span_id == span_id), r

    def children(self, span: Span) -> list[Span]:
        t = self.table
        rows = np.flatnonzero(t.parent == np.uint64(int(span.span_id, 16)))
        rows = rows[~((t.request[rows] == span.request_id) & (t.side[rows] == SIDES.index(span.side)))]
        rows = rows[np.argsort(t.start[rows], kind="stable")]
        return [t.span_of(int(row), self.ids) for row in rows]

    def set_parent(self, request_id: int, side: str, parent_span_id: str, link: str) -> None:
        row = int((self._client if side == CLIENT else self._server)[request_id])
        self.table.parent[row] = np.uint64(int(parent_span_id, 16))
        self.table.link[row] = LINKS.index(link)

    def json_rows(self, request_ids: Sequence[int], chunk: int = 16384) -> Iterator[dict]:
        """`{**exchange.to_dict(), **request.row()}` of each request, in the order given, straight from
        the columns (making the objects first cost ~8 times as much), `chunk` rows at a time: the rows
        of json_tables(), as dicts."""
        for table in self.json_tables(request_ids, chunk):
            columns = [python_values(c) for c in table.columns]
            names = table.column_names
            for values in zip(*columns):
                yield dict(zip(names, values))

    def json_tables(self, request_ids: Sequence[int], chunk: int = 16384) -> Iterator[pa.Table]:
        """The rows of json_rows() as tables of `chunk` rows: a column per key, in the rows' key order
        (the exchange's fields, then request_id, trace_id, span_id, parent_span_id and the evidence of
        Request.row()), the same values (None as null). `trace requests --json` formats them a column
        at a time (analyze/json_text.py): no Python object per row."""
        ids = np.asarray(request_ids, dtype=np.int64)
        main = self.main_rows()
        t = self.table
        keys = (*FIELDS, "request_id", "trace_id", "span_id", "parent_span_id", *_ROW_EVIDENCE)
        for c0 in range(0, len(ids), chunk):
            part = ids[c0:c0 + chunk]
            sub = self.exchanges.table.take(pa.array(self.order[part]))
            rows = main[part]
            has = rows >= 0
            at = np.where(has, rows, 0)
            parent = t.parent[at]
            columns = [*(sub.column(name) for name in FIELDS), pa.chunked_array([pa.array(part, pa.int64())]),
                       self._trace_id_column(at, has), _hex_column(has, t.span[at]),
                       _hex_column(has & (parent != 0), parent),
                       *(self._evidence_array(name, at, has) for name in _ROW_EVIDENCE)]
            yield pa.table([c if isinstance(c, pa.ChunkedArray) else pa.chunked_array([c]) for c in columns],
                           names=list(keys))

    def _trace_id_column(self, rows: np.ndarray, has: np.ndarray) -> pa.Array:
        """SpanTable.trace_id of the spans at rows (null where has is False): generated ids computed
        for all at once, the few set from elsewhere or from a traceparent by trace_id itself."""
        t = self.table
        special = has & t.trace_from_header[rows]
        if t.trace_ids:
            special |= has & np.isin(rows, np.fromiter(t.trace_ids, np.int64, len(t.trace_ids)))
        if self.ids is None:  # no generated ids: trace_id says what it says for every row
            special = has
        out = _hex_column(has, *self.ids.trace_words(t.span[t.trace_root[rows]])) if self.ids is not None \
            else pa.nulls(len(rows), pa.string())
        if special.any():
            texts = [t.trace_id(r, self.ids) for r in rows[special].tolist()]
            out = pc.replace_with_mask(out, pa.array(special), pa.array(texts, pa.string()))
        return out

    def _evidence_array(self, name: str, rows: np.ndarray, has: np.ndarray) -> pa.Array:
        """An Evidence field of the spans at rows (null where has is False), as Evidence objects give it."""
        t = self.table
        source = "cpu_samples" if name == "cpu_ms" else name
        if source not in t.evidence or (name == "cpu_ms" and not t.period_ns):
            return pa.nulls(len(rows))
        values, mask = t.evidence[source]
        ok = has if mask is None else has & mask[rows]
        got = values[rows]
        if name == "cpu_ms":
            got = _cpu_ms(got, t.period_ns)
        return pa.array(got, mask=~ok)

    def selected(self) -> Sequence[Request]:
        if self.params.request_id is None:
            return self.requests
        return [r for r in [self.find(str(self.params.request_id))] if r is not None]

    def to_json(self) -> dict:
        return {
            "recorded": list(self.recorded),
            "period_ns": self.period_ns,
            "requests": [{**r.row(), "endpoint": r.endpoint, "latency_ns": r.exchange.latency_ns,
                          "spans": [s.to_dict() for s in r.spans]} for r in self.selected()],
            "slowest": [r.request_id for r in self.slowest()],
            "notes": list(self.notes),
        }

    def to_text(self) -> str:
        from uetrace.analyze.correlate.report import render_text
        return render_text(self)


class RequestList(Sequence[Request]):
    """The requests of a result by id, made when read (a chunk of exchanges at a time when iterated)."""

    def __init__(self, result: CorrelationResult) -> None:
        self.result = result

    def __len__(self) -> int:
        return len(self.result.order)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return list(self.take(range(*i.indices(len(self)))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.result.request(i)

    def __iter__(self) -> Iterator[Request]:
        return self.take(range(len(self)))

    def take(self, ids: Iterable[int], chunk: int = 4096) -> Iterator[Request]:
        """The requests of these ids, in this order."""
        ids = np.fromiter(ids, np.int64)
        res = self.result
        for c0 in range(0, len(ids), chunk):
            part = ids[c0:c0 + chunk]
            for rid, e in zip(part.tolist(), res.exchanges.take(res.order[part])):
                yield res.request(rid, e)


def _cpu_ms(samples: np.ndarray, period_ns: int) -> np.ndarray | list:
    """`n * period_ns / 1e6` of each sample count n, as Python computes it: the int product made a
    float (correctly rounded, as numpy's int64 to float64 is) and divided by 1e6."""
    if type(period_ns) is int and len(samples) and \
            int(np.abs(samples.astype(np.int64)).max()) * period_ns < 2**63:
        return (samples.astype(np.int64) * np.int64(period_ns)).astype(np.float64) / 1e6
    return [n * period_ns / 1e6 for n in samples.tolist()]


# Each byte's two hex digits, as the uint16 whose bytes in memory are those digits.
_HEX_PAIRS = np.frombuffer("".join(f"{b:02x}" for b in range(256)).encode(), np.uint16)


def _hex_column(valid: np.ndarray, *words: np.ndarray) -> pa.Array:
    """Per row its 64-bit words as lowercase hex, 16 digits each, one after the other (hex16 of each,
    joined); null where valid is False."""
    n = len(valid)
    width = 16 * len(words)
    raw = np.stack(words, axis=1).astype(">u8").view(np.uint8)  # most significant byte first
    digits = _HEX_PAIRS[raw]  # (n, 8 x words) uint16: the text of a row, in order
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    nulls = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(digits), nulls)


def from_requests(requests: Sequence[Request], params: CorrelateParams | None = None) -> CorrelationResult:
    """A result holding these Request objects (hand-built: tests, tools); request ids are positions."""
    from uetrace.analyze.correlate.spans import parse_traceparent
    rows = [(k, s) for k, r in enumerate(requests) for s in r.spans]
    t = SpanTable(np.array([k for k, _ in rows], np.int64), np.array([SIDES.index(s.side) for _, s in rows], np.int8),
                  *(np.array([getattr(s.window, f) for _, s in rows], np.int64) for f in ("pid", "tid", "start_ts",
                                                                                          "end_ts")),
                  np.array([s.window.exact for _, s in rows], bool))
    t.span = np.array([int(s.span_id, 16) for _, s in rows], np.uint64)
    t.parent = np.array([int(s.parent_span_id, 16) if s.parent_span_id else 0 for _, s in rows], np.uint64)
    t.link = np.array([LINKS.index(s.link) for _, s in rows], np.int8)
    t.trace_root, t.trace_from_header = np.arange(len(rows)), np.zeros(len(rows), bool)
    t.trace_ids = {row: s.trace_id for row, (_, s) in enumerate(rows)}
    for k, s in rows:
        tp = parse_traceparent(b"traceparent: " + s.traceparent.encode()) if s.traceparent else None
        if tp is not None:
            t.headers[k] = tp
    for name, dtype in EVIDENCE_FIELDS.items():
        values = [getattr(s.evidence, name) for _, s in rows]
        if any(v is not None for v in values):
            mask = np.array([v is not None for v in values])
            t.evidence[name] = (np.array([v or 0 for v in values], dtype), None if mask.all() else mask)
    names = list(dict.fromkeys(r.endpoint for r in requests))
    return CorrelationResult(params or CorrelateParams(), ExchangeTable.of(r.exchange for r in requests),
                             np.arange(len(requests)), names, np.array([names.index(r.endpoint) for r in requests],
                                                                       np.int64), t)
