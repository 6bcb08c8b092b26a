"""Several captures at once on real captures of two hosts (two network namespaces, a veth pair, a UTS
namespace each; tests/cross_host_captures.py): exchanges paired across the archives, the clock offset
between them (0 on one machine; a shift written into one manifest recovered), one trace per request
across hosts, SQL over the union, and parts of one capture read as one."""

from __future__ import annotations

import json

import pytest
from cross_host_captures import shift_clock, two_host_captures, with_capture_id
from helpers import require_kernel, trace_cmd

from uetrace.analyze.clock_sync import Sample, best, solve

SHIFT_NS = 2_500_000_000


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    require_kernel()
    return two_host_captures(tmp_path_factory.mktemp("cross_host"))


def _requests(*archives) -> tuple[list[dict], str]:
    res = trace_cmd("requests", *map(str, archives), "--json", check=True)
    return json.loads(res.stdout), res.stderr


def _by_capture(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["host"], []).append(r)
    return out


def _check_pairs(rows: list[dict], made: int) -> None:
    by_host = _by_capture(rows)
    assert sorted(by_host) == ["client-host", "server-host"]
    assert len(by_host["client-host"]) == len(by_host["server-host"]) == made
    index = {(r["capture_id"], r["request_id"]): r for r in rows}
    for r in by_host["server-host"]:
        peer = index[(r["peer_capture_id"], r["peer_request_id"])]
        assert peer["host"] == "client-host"
        assert (peer["peer_capture_id"], peer["peer_request_id"]) == (r["capture_id"], r["request_id"])
        assert (peer["method"], peer["path"], peer["status"]) == (r["method"], r["path"], r["status"])
        assert r["trace_id"] == peer["trace_id"]
        assert r["parent_span_id"] == peer["span_id"]  # the server span is the client span's child
        assert peer["parent_span_id"] is None


def test_requests_pair_every_exchange_across_archives(hosts):
    client, server, fx = hosts
    rows, err = _requests(client, server)
    _check_pairs(rows, fx["requests"])
    # One machine, one clock: the offset is within the fastest round trip of 0, and said on stderr.
    srv = _by_capture(rows)["server-host"][0]
    assert abs(srv["clock_offset_ns"]) <= fx["fastest_rtt_ns"]
    assert 0 <= srv["clock_uncertainty_ns"] <= fx["fastest_rtt_ns"]
    assert "clock of server-host/" in err and f"({fx['requests']} paired exchanges)" in err
    # Aligned times: every server window lies inside its client's, up to the uncertainty.
    index = {(r["capture_id"], r["request_id"]): r for r in rows}
    for r in _by_capture(rows)["server-host"]:
        peer = index[(r["peer_capture_id"], r["peer_request_id"])]
        assert peer["wall_start_ns"] - srv["clock_uncertainty_ns"] <= r["wall_start_ns"]


def test_spans_form_one_trace_per_request_across_hosts(hosts):
    client, server, fx = hosts
    rows, _ = _requests(server, client)  # the order of the archives does not matter to the pairing
    traces: dict[str, set[str]] = {}
    for r in rows:
        traces.setdefault(r["trace_id"], set()).add(r["host"])
    assert len(traces) == fx["requests"]
    assert all(h == {"client-host", "server-host"} for h in traces.values())


def test_a_shifted_clock_is_recovered(hosts, tmp_path):
    client, server, fx = hosts
    shifted = shift_clock(server, tmp_path / "server-shifted.tar.zst", SHIFT_NS)
    rows, err = _requests(client, shifted)
    _check_pairs(rows, fx["requests"])
    srv = _by_capture(rows)["server-host"][0]
    assert abs(srv["clock_offset_ns"] - SHIFT_NS) <= 1_000_000
    assert "clock of server-host/" in err and " ms ± " in err
    # Aligned: the shift is taken out again, the server's times sit next to the client's.
    plain, _ = _requests(client, server)
    assert abs(_by_capture(plain)["server-host"][0]["wall_start_ns"] - srv["wall_start_ns"]) <= 1_000_000


def test_analyze_reports_captures_and_clocks(hosts, tmp_path):
    client, server, fx = hosts
    shifted = shift_clock(server, tmp_path / "server-shifted.tar.zst", SHIFT_NS)
    report = json.loads(trace_cmd("analyze", str(client), str(shifted), "--json", check=True).stdout)
    sec = report["captures"]
    assert [c["host"] for c in sec["captures"]] == ["client-host", "server-host"]
    assert sec["cross_host_pairs"] == fx["requests"]
    clock = sec["clocks"][1]
    assert clock["aligned"] and clock["pairs"] == fx["requests"]
    assert abs(clock["offset_ns"] - SHIFT_NS) <= 1_000_000
    ids = [c["capture_id"] for c in sec["captures"]]
    assert sorted(report["per_capture"]) == sorted(ids)
    assert all("summary" in report["per_capture"][i] for i in ids)
    text = trace_cmd("analyze", str(client), str(shifted), check=True).stdout
    assert "== captures ==" in text and "== summary [client-host/" in text and "== summary [server-host/" in text


def test_query_unions_the_archives(hosts):
    client, server, _ = hosts
    own = {}
    for a in (client, server):
        res = trace_cmd("query", str(a), "SELECT count(*) FROM sock_data", "--format", "json", check=True)
        own[a] = json.loads(res.stdout)[0]["count_star()"]
    res = trace_cmd("query", str(client), str(server), "SELECT capture_id, host, count(*) AS n FROM sock_data "
                    "GROUP BY ALL ORDER BY host", "--format", "json", check=True)
    got = json.loads(res.stdout)
    assert [(r["host"], r["n"]) for r in got] == [("client-host", own[client]), ("server-host", own[server])]
    assert len({r["capture_id"] for r in got}) == 2
    # A quoted pattern is expanded by the command.
    res = trace_cmd("query", str(client.parent / "*-host.tar.zst"), "SELECT count(DISTINCT capture_id) AS n "
                    "FROM sock_data", "--format", "json", check=True)
    assert json.loads(res.stdout) == [{"n": 2}]


def test_parts_of_one_capture_read_as_one(hosts, tmp_path):
    """Archives naming one capture_id are one capture: tables unioned, nothing paired, no offset; the
    same part given twice is read once."""
    client, server, _ = hosts
    a = with_capture_id(client, tmp_path / "part-1.tar.zst", "t13set")
    b = with_capture_id(server, tmp_path / "part-2.tar.zst", "t13set")
    total = sum(json.loads(trace_cmd("query", str(x), "SELECT count(*) AS n FROM sock_data", "--format", "json",
                                     check=True).stdout)[0]["n"] for x in (client, server))
    res = trace_cmd("query", str(a), str(b), str(a), "SELECT capture_id, count(*) AS n FROM sock_data GROUP BY ALL",
                    "--format", "json", check=True)
    assert json.loads(res.stdout) == [{"capture_id": "t13set", "n": total}]
    assert "read once" in res.stderr
    rows, _ = _requests(a, b)
    assert {r["capture_id"] for r in rows} == {"t13set"}
    # One capture: both ends are in it, so the ordinary (single-capture) linking applies.
    assert all(r["peer_request_id"] is None for r in rows)


def test_bad_pattern_is_one_line(tmp_path):
    res = trace_cmd("requests", str(tmp_path / "nothing-*.tar.zst"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "no file matches" in res.stderr


def test_minimum_delay_sample_wins():
    # Server clock 1000 ns ahead; a slow sample (queued) and a fast one.
    slow = Sample.of(0, 1000 + 900, 1000 + 950, 2000)
    fast = Sample.of(10_000, 11_000 + 40, 11_000 + 60, 10_100)
    assert fast.delay_ns == 80 and fast.offset_ns == 1000
    est = best([slow, fast])
    assert (est.offset_ns, est.uncertainty_ns, est.pairs) == (1000, 40, 2)
    # Impossible (negative) delays only when nothing else is there.
    odd = Sample.of(0, 500, 600, 50)
    assert best([odd, slow]).offset_ns == round(slow.offset_ns)
    assert best([]) is None


def test_offsets_chain_through_captures():
    # 0 calls 1 (1 is +5 us), 2 calls 1 (1 is +2 us against 2): 2 is +3 us against 0; 3 is unreachable.
    samples = {(0, 1): [Sample.of(0, 5_015, 5_025, 40)], (2, 1): [Sample.of(0, 2_015, 2_025, 40)]}
    clocks = solve(4, samples)
    assert [c.offset_ns for c in clocks[:3]] == [0, 5_000, 3_000]
    assert clocks[2].uncertainty_ns == clocks[1].uncertainty_ns * 2 and clocks[2].via == 1
    assert not clocks[3].aligned and clocks[3].offset_ns == 0


def test_flows_and_flamegraph_combine_the_captures(hosts):
    client, server, _ = hosts
    each = [json.loads(trace_cmd("flows", str(a), "--json", check=True).stdout) for a in (client, server)]
    both = json.loads(trace_cmd("flows", str(client), str(server), "--json", check=True).stdout)
    assert both["total_flows"] == sum(r["total_flows"] for r in each)
    assert {f["host"] for f in both["flows"]} == {"client-host", "server-host"}
    assert all(len(f["capture_id"]) == 16 for f in both["flows"])

    def folded(*archives) -> dict[str, int]:
        out = trace_cmd("flamegraph", *map(str, archives), "--format", "folded", "-o", "-", check=True).stdout
        return {line.rsplit(" ", 1)[0]: int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line}

    alone = {h: folded(a) for h, a in (("client-host", client), ("server-host", server))}
    merged = folded(client, server)
    # Every stack of each capture, under its host's frame, with its own count.
    for host, stacks in alone.items():
        assert stacks
        for stack, n in stacks.items():
            assert merged[f"[host {host}];{stack}"] == n
    assert sum(merged.values()) == sum(sum(s.values()) for s in alone.values())


def test_export_writes_the_parts_of_one_capture_into_its_partition(hosts, tmp_path):
    import duckdb

    client, server, _ = hosts
    a = with_capture_id(client, tmp_path / "part-1.tar.zst", "t13set")
    b = with_capture_id(server, tmp_path / "part-2.tar.zst", "t13set")
    out = tmp_path / "ds"
    trace_cmd("export", str(a), str(b), "--format", "parquet", "-o", str(out), check=True)
    files = sorted(p.name for p in (out / "sock_data" / "capture_id=t13set").iterdir())
    assert files == ["part-0.parquet", "part-1.parquet"]
    want = json.loads(trace_cmd("query", str(a), str(b), "SELECT count(*) AS n FROM sock_data", "--format", "json",
                                check=True).stdout)[0]["n"]
    glob = str(out / "sock_data" / "*" / "*.parquet")
    got = duckdb.sql(f"SELECT capture_id, count(*) FROM read_parquet('{glob}', hive_partitioning=true) "
                     "GROUP BY ALL").fetchall()
    assert got == [("t13set", want)]
    schema = json.loads((out / "_schema.json").read_text())
    assert [(c["capture_id"], c.get("parts")) for c in schema["captures"]] == [("t13set", 2)]
    again = trace_cmd("export", str(a), str(a), "--format", "parquet", "-o", str(tmp_path / "ds2"))
    assert again.returncode == 2 and "the same capture as" in again.stderr


def test_requests_filters_and_table_with_several_archives(hosts):
    client, server, fx = hosts
    rows, _ = _requests(client, server, "--path", "/c0/*")
    assert len(rows) == 20 and all(r["peer_request_id"] is not None for r in rows)
    table = trace_cmd("requests", str(client), str(server), "--format", "csv", check=True).stdout
    lines = table.splitlines()
    assert lines[0].startswith("host,id,time s,") and lines[0].endswith(",peer")
    assert len(lines) == 1 + 2 * fx["requests"]
    assert sum(1 for x in lines[1:] if x.endswith(("server-host #0", "client-host #0"))) == 2


def _exchange_request(i: int, path: str, side: str, t: int):
    from uetrace.analyze.correlate.result import Request, Span, Window
    from uetrace.analyze.http.exchange import Exchange

    e = Exchange("http/1.1", 1, "10.0.0.1:4000", "10.0.0.2:80", method="GET", path=path, status=200,
                 req_bytes=10, resp_bytes=20, start_ts=t, end_ts=t + 100)
    r = Request(i, e, "GET " + path)
    span = Span(f"{(i + 1) * (2 if side == 'client' else 3):016x}", f"{i:032x}", i, side, Window(1, 1, t, t + 100))
    setattr(r, side, span)
    return r


def test_pairing_lines_up_connections_seen_partly():
    """The server's capture started three exchanges late and ran two longer: the overlap pairs, in place."""
    from uetrace.analyze.correlate.result import from_requests
    from uetrace.analyze.cross_host import pair

    clients = [_exchange_request(i, f"/r{i}", "client", 1_000 * i) for i in range(10)]
    servers = [_exchange_request(j, f"/r{j + 3}", "server", 5_000_000 + 1_000 * (j + 3) + 20) for j in range(9)]
    pairs = pair([from_requests(clients), from_requests(servers)])
    assert [(p.client.request.exchange.path, p.server.request.exchange.path) for p in pairs] == \
        [(f"/r{i}", f"/r{i}") for i in range(3, 10)]
    assert {(p.client.capture, p.server.capture) for p in pairs} == {(0, 1)}


def test_explicit_capture_id_wins():
    from uetrace.analyze.capture_identity import capture_identity

    m = {"host": {"hostname": "h", "boot_id": "b"}, "clock": {"start": {"monotonic_ns": 1, "realtime_ns": 2}}}
    derived = capture_identity(m).capture_id
    assert capture_identity({**m, "capture_id": "rot-2026.1"}).capture_id == "rot-2026.1"
    # Archive text that is no token is not an id: the derived one stands.
    assert capture_identity({**m, "capture_id": "a/../b\x1b"}).capture_id == derived
    assert capture_identity({**m, "capture_id": 7}).capture_id == derived


def test_otlp_export_traces_cross_hosts(hosts, tmp_path):
    client, server, fx = hosts
    shifted = shift_clock(server, tmp_path / "server-shifted.tar.zst", SHIFT_NS)
    out = tmp_path / "traces.json"
    trace_cmd("export", str(client), str(shifted), "--format", "otlp", "-o", str(out), check=True)
    doc = json.loads(out.read_text())
    spans: dict[str, list[tuple[str, dict]]] = {}
    for rs in doc["resourceSpans"]:
        host = next(a["value"]["stringValue"] for a in rs["resource"]["attributes"] if a["key"] == "host.name")
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                spans.setdefault(s["traceId"], []).append((host, s))
    assert len(spans) == fx["requests"]
    for trace in spans.values():
        by_host = dict(trace)
        assert sorted(by_host) == ["client-host", "server-host"]
        c, s = by_host["client-host"], by_host["server-host"]
        assert s["parentSpanId"] == c["spanId"]
        # The shift is taken out: the server's span sits inside the client's, within a millisecond.
        assert int(c["startTimeUnixNano"]) - 1_000_000 <= int(s["startTimeUnixNano"])
        assert int(s["endTimeUnixNano"]) <= int(c["endTimeUnixNano"]) + 1_000_000


def test_host_names_are_data(hosts, tmp_path):
    """A host name is archive text: quotes and escapes reach the host column as they are, never SQL."""
    from cross_host_captures import rewrite_manifests

    client, server, _ = hosts
    name = "it's'); DROP TABLE x; --\x1b[31m"
    odd = rewrite_manifests(client, tmp_path / "odd.tar.zst", lambda m: m["host"].__setitem__("hostname", name))
    res = trace_cmd("query", str(odd), str(server), "SELECT DISTINCT host FROM proc ORDER BY host", "--format", "json",
                    check=True)
    assert [r["host"] for r in json.loads(res.stdout)] == sorted([name, "server-host"])


def test_captures_without_pairs_are_said_unaligned(hosts, tmp_path):
    """Two captures of client ends only (the same one, its clock moved so it is another capture): nothing
    pairs, so no offset is guessed and the note says so."""
    client, _, fx = hosts
    other = shift_clock(client, tmp_path / "client-later.tar.zst", SHIFT_NS)
    rows, err = _requests(client, other)
    assert len(rows) == 2 * fx["requests"]
    assert all(r["peer_request_id"] is None for r in rows)
    assert {r["clock_uncertainty_ns"] for r in rows if r["clock_offset_ns"] == 0} >= {None}
    assert "not aligned" in err
