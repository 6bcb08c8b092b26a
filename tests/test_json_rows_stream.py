"""`trace requests --json` prints its rows a block at a time, formatted a column at a time
(analyze/json_text.py, uetrace/cli/output.py:echo_json_tables): the bytes must be exactly those of one
json.dumps of the whole list, which the command printed before."""

from __future__ import annotations

# -- rows formatted a column at a time (analyze/json_text.py, echo_json_tables) ------------------------

_CHARS = "ab/ \"\\\n\t\x00\x1f\x7fé\u2028😀"


def _random_text(rng, chars: str = _CHARS) -> str:
    return "".join(rng.choice(chars) for _ in range(rng.randint(0, 6)))


def _random_column(rng, n: int):
    """A column of one of the types echo_json_tables formats itself (or hands to the json module),
    with nulls, runs of few values and values whose text is tricky."""
    import datetime

    import numpy as np
    import pyarrow as pa

    def nulls(values, share):
        return [None if rng.random() < share else v for v in values]

    share = rng.choice([0.0, 0.0, 0.3, 1.0])
    kind = rng.randrange(15)
    if kind == 0:  # ints of a wide range, with the extremes
        v = [rng.choice([0, -1, 2**63 - 1, -2**63, rng.randint(-2**63, 2**63 - 1)]) for _ in range(n)]
        return pa.array(nulls(v, share), pa.int64())
    if kind == 1:  # unsigned, near 2**64, of a small range or not
        base = rng.choice([0, 2**64 - 1000, 2**63])
        v = [base + rng.randrange(1000) if rng.random() < 0.9 else rng.randrange(2**64) for _ in range(n)]
        return pa.array(nulls(v, share), pa.uint64())
    if kind == 2:  # few values across the middle of a narrow type (offsets overflow int8)
        return pa.array(nulls([rng.choice([-128, -100, 0, 100, 127]) for _ in range(n)], share), pa.int8())
    if kind == 3:  # a small range with many distinct values (request ids)
        start = rng.randint(-5, 10**6)
        return pa.array(nulls(list(range(start, start + n)), share), rng.choice([pa.int64(), pa.uint32()]))
    if kind == 4:
        return pa.array(nulls([rng.random() < 0.5 for _ in range(n)], share), pa.bool_())
    if kind in (5, 6):
        special = [0.0, -0.0, 0.1, 1e16, 1e-7, 5e-324, -2.5, 1 / 3, 1e300, float("nan"), float("inf"),
                   -float("inf"), 123456789.0, 2.0**53]
        v = [rng.choice(special) if rng.random() < 0.7 else rng.uniform(-1e6, 1e6) for _ in range(n)]
        return pa.array(nulls(v, share), pa.float64() if kind == 5 else pa.float32())
    if kind == 7:  # dictionary strings, the dictionary larger than the column or not
        words = [_random_text(rng) for _ in range(rng.choice([1, 3, 2 * n + 5]))]
        arr = pa.array(nulls([rng.choice(words) for _ in range(n)], share), pa.string()).dictionary_encode()
        if rng.random() < 0.5:  # a take of a bigger table keeps all of its dictionary
            arr = pa.DictionaryArray.from_arrays(arr.indices, pa.concat_arrays([arr.dictionary, pa.array(words)]))
        return arr
    if kind == 8:  # plain strings: mostly nothing to escape (hex ids), or all sorts
        if rng.random() < 0.5:
            v = [f"{rng.getrandbits(64):016x}" for _ in range(n)]
            if n and rng.random() < 0.5:
                v[rng.randrange(n)] = _random_text(rng)
        else:
            v = [_random_text(rng) for _ in range(n)]
        return pa.array(nulls(v, share), rng.choice([pa.string(), pa.large_string()]))
    if kind == 9:  # lists of strings, most empty
        v = [[] if rng.random() < 0.8 else [_random_text(rng) if rng.random() < 0.9 else None
                                             for _ in range(rng.randint(1, 3))] for _ in range(n)]
        return pa.array(nulls(v, share), pa.list_(pa.string()))
    if kind == 10:
        return pa.nulls(n)
    if kind == 11:  # dictionary of ints
        return pa.array(nulls([rng.choice([7, -3, 2**40]) for _ in range(n)], share), pa.int64()).dictionary_encode()
    if kind == 12:  # not formatted by the module: the json module's (default=str for the datetime)
        return pa.array(nulls([datetime.datetime(2024, 1, 2, 3, 4, rng.randrange(60)) for _ in range(n)], share))
    if kind == 13:
        return pa.array(nulls([{"x": rng.randint(0, 3), "y": [_random_text(rng)]} for _ in range(n)], share))
    return pa.array(np.full(n, rng.choice([3, 4])), pa.uint32())  # the same value throughout


def _random_table(rng, n: int):
    import pyarrow as pa
    width = rng.choice([0, 1, 3, 12, 40])
    names = list(dict.fromkeys(_random_text(rng, "kq\"é\\\n") + str(i) for i in range(width)))
    return pa.table({name: _random_column(rng, n) for name in names})


def _dumped(rows: list[dict]) -> str:
    import json
    return json.dumps(rows, indent=1, default=str) + "\n"


def _same(got, want) -> None:
    """got == want, or where they first differ (pytest's own diff of megabytes of text takes minutes)."""
    if got == want:
        return
    if len(got) != len(want):
        raise AssertionError(f"{len(got)} items, not {len(want)}")
    at = next(i for i, (a, b) in enumerate(zip(got, want)) if a != b)
    raise AssertionError(f"at {at}: {got[at - 80:at + 80]!r} != {want[at - 80:at + 80]!r}" if isinstance(got, str)
                         else f"at {at}: {got[at]!r} != {want[at]!r}")


def test_column_wise_rows_are_what_json_dumps_prints():
    """Random tables (ints, unsigned near 2**64, bools, floats with -0.0, 1e16 and 0.1, dictionary
    strings and plain ones with quotes, backslashes, control, non-ASCII and astral characters, lists
    of strings, nulls everywhere): the text of each row is json.dumps's for it as a dict."""
    import json
    import random

    from uetrace.analyze.json_text import json_item_blocks, json_item_texts
    rng = random.Random(11)
    for _ in range(300):
        n = rng.choice([0, 1, 2, 5, 40, 300])
        table = _random_table(rng, n)
        if rng.random() < 0.3 and n > 2:  # a slice: arrays with an offset
            table = table.slice(1, n - 2)
        rows = table.to_pylist()
        want = ["X" + json.dumps(r, indent=1, default=str).replace("\n", "\n ") for r in rows]
        _same(json_item_texts(table, before="X").to_pylist(), want)
        blocks = list(json_item_blocks(table, "X", rows=rng.choice([1, 7, 64])))
        _same([t for b in blocks for t in b.to_pylist()], want)


def test_tables_print_what_one_dump_of_their_rows_printed(capsys):
    import random

    import pyarrow as pa

    from uetrace.cli.output import echo_json_tables
    rng = random.Random(5)
    for _ in range(40):
        n = rng.choice([0, 3, 1000])
        table = _random_table(rng, n)
        parts = [table.slice(0, n // 3), table.slice(n // 3, 0), table.slice(n // 3)]
        if rng.random() < 0.5:  # chunks of several record batches
            parts = [pa.concat_tables([parts[0], parts[2]])]
        echo_json_tables(iter(parts))
        _same(capsys.readouterr().out, _dumped([row for part in parts for row in part.to_pylist()]))
    echo_json_tables(iter([]))
    assert capsys.readouterr().out == "[]\n"


def _object_rows(result, ids) -> list[dict]:
    """The rows of `trace requests --json` made from Request objects, as the command first made them."""
    return [{**r.exchange.to_dict(), **r.row()} for r in result.requests.take(ids)]


def _check_result(result, capsys) -> None:
    import numpy as np

    from uetrace.cli.output import echo_json_tables
    ids = np.random.default_rng(3).permutation(len(result.requests))
    want = _object_rows(result, ids)
    _same(list(result.json_rows(ids, chunk=3)), want)
    _same([row for table in result.json_tables(ids, chunk=3) for row in table.to_pylist()], want)
    echo_json_tables(result.json_tables(ids, chunk=4))
    _same(capsys.readouterr().out, _dumped(want))


def test_requests_json_of_a_real_capture(capsys):
    """A correlation of a recorded archive: json_tables holds what the Request objects say (generated
    trace and span ids, packets), and the text is what json.dumps prints for their dicts."""
    from pathlib import Path

    from uetrace.analyze import correlate
    from uetrace.analyze.archive_db import open_archive_db
    with open_archive_db(Path(__file__).parent / "data" / "format1" / "http_keepalive.tar.zst") as db:
        result = correlate.correlate(db)
    assert len(result.requests) >= 5
    _check_result(result, capsys)


def test_requests_json_of_hand_made_spans(capsys):
    """Spans with every kind of evidence, trace ids from a traceparent, set from elsewhere or
    generated, requests with one side or none."""
    import numpy as np

    from uetrace.analyze.correlate.objects import Evidence, Request, Span, Window
    from uetrace.analyze.correlate.result import from_requests
    from uetrace.analyze.correlate.spans import IdMaker, TraceParent
    from uetrace.analyze.http.exchange import Exchange
    reqs = []
    for k in range(9):
        ex = Exchange("http/1.1", k, f"10.0.0.1:{4000 + k % 2}", "10.0.0.2:80", "GET", f"/p{k}\"\\é",
                      status=200 + k if k % 5 else None, start_ts=2**63 + k, latency_ns=k * 1000,
                      tls=bool(k % 2), anomalies=["a\x01"] * (k % 2))
        r = Request(k, ex, "GET /p")
        ev = Evidence(cpu_samples=[k, 1234567 * k, 2**31 - 1][k % 3], offcpu_ms=[0.1, -0.0, 1e16, None][k % 4],
                      lock_wait_ms=k / 3, alloc_bytes=None if k % 3 else 2**40, outstanding_bytes=k, packets=k,
                      retransmits=0)
        sid = f"{k + 1:016x}"
        if k % 4 != 3:
            r.server = Span(sid, f"{k:032x}", k, "server", Window(1, 2, 10 * k, 10 * k + 5),
                            parent_span_id=f"{0xabc + k:016x}" if k % 2 else None, evidence=ev)
        if k % 3 == 0:
            r.client = Span(f"{0xf00 + k:016x}", f"{k:032x}", k, "client", Window(3, 4, 10 * k, 10 * k + 6))
        reqs.append(r)
    result = from_requests(reqs)
    result.table.period_ns = 10_000_019  # cpu_ms = samples x period / 1e6 (past 2**53: rounded to a float)
    _check_result(result, capsys)
    # Trace ids generated from the root spans (and from a traceparent for one request).
    result.table.trace_ids.clear()
    result.ids = IdMaker("archive")
    result.table.headers[2] = TraceParent("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7", "01")
    rows = np.flatnonzero(result.table.request == 2)
    result.table.trace_from_header[rows] = True
    result.table.trace_root[rows] = rows[0]
    _check_result(result, capsys)
