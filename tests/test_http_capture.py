"""The http analyzer on real captures: fixture workloads run under `trace capture`, then read back
through `trace requests`, `trace query` and the analyzer itself. Each asserts exactly the requests the
fixture made (it prints them), matched by the fixture's pids, since the capture is system-wide."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from helpers import need_program, run_fixture, trace_cmd

from uetrace.analyze import http
from uetrace.analyze.archive_db import open_archive_db
from uetrace.analyze.http.exchange import Exchange


def capture_workload(tmp_path: Path, capture_run, fixture: str, tracers: str = "sock,proc") -> tuple[Path, dict]:
    """Capture while the fixture runs, then stop the capture at once (SIGTERM still writes a
    complete archive): -d is only a bound for a hung fixture."""
    out = tmp_path / "run.tar.zst"
    run = capture_run(out, "-d", "60s", "--tracers", tracers)
    run.wait_attached()
    try:
        fx = run_fixture(fixture, timeout=60)
    finally:
        run.signal(signal.SIGTERM)
    rc, _, err = run.wait()
    assert rc == 0, err
    return out, fx


def analyze(out: Path, params: http.HttpParams | None = None) -> http.HttpResult:
    with open_archive_db(out) as cap:
        assert http.applies(cap)
        return http.run(cap, params)


def in_order(exchanges: list[Exchange]) -> list[Exchange]:
    assert all(e.start_ts is not None for e in exchanges), [e.to_dict() for e in exchanges]
    return sorted(exchanges, key=lambda e: (e.start_ts or 0, e.stream_id or 0))


def test_python_keepalive_server(kernel, tmp_path, capture_run):
    out, fx = capture_workload(tmp_path, capture_run, "http_keepalive.py")
    made = fx["requests"]
    res = analyze(out, http.HttpParams(pid=fx["client_pid"]))
    ex = in_order(res.exchanges)
    assert [(e.method, e.path, e.status) for e in ex] == [(r["method"], r["path"], r["status"]) for r in made]
    assert len({e.conn_id for e in ex}) == 1  # one keep-alive connection
    for e, r in zip(ex, made, strict=True):
        assert e.protocol == "http/1.1" and not e.tls
        assert e.complete, e.to_dict()  # both ends captured: the gaps of one end are filled from the other
        assert (e.client_pid, e.server_pid) == (fx["client_pid"], fx["server_pid"])
        assert e.client_comm and e.client_comm == e.server_comm  # the same interpreter at both ends
        assert e.measured_at == "client"
        assert e.req_bytes > r["request_body"] and e.resp_bytes > r["response_body"]
        assert e.latency_ns is not None and e.latency_ns > 0
    assert [e.start_ts for e in ex] == sorted(e.start_ts for e in ex)
    slowest = max(ex, key=lambda e: e.latency_ns or 0)
    assert slowest.path == "/slow"
    assert 160e6 <= (slowest.latency_ns or 0) <= 240e6  # sleeps 200 ms, +-20%
    others = [e.latency_ns or 0 for e in ex if e is not slowest]
    assert max(others) < (slowest.latency_ns or 0) / 2
    assert res.slowest()[0].path == "/slow"

    # The CLI's filters select the same exchanges.
    pid = str(fx["client_pid"])
    listed = json.loads(trace_cmd("requests", str(out), "--pid", pid, "--json", check=True).stdout)
    assert [(r["method"], r["path"], r["status"]) for r in listed] == [(e.method, e.path, e.status) for e in ex]
    errors = json.loads(trace_cmd("requests", str(out), "--pid", pid, "--status", "4xx,5xx", "--json",
                                  check=True).stdout)
    assert [(r["path"], r["status"]) for r in errors] == [("/missing", 404), ("/error", 500)]
    items = json.loads(trace_cmd("requests", str(out), "--pid", pid, "--path", "/items/*", "--json",
                                 check=True).stdout)
    assert [r["method"] for r in items] == ["PUT", "DELETE"]
    slow = json.loads(trace_cmd("requests", str(out), "--pid", pid, "--min-latency", "100ms", "--json",
                                check=True).stdout)
    assert [r["path"] for r in slow] == ["/slow"]
    table = trace_cmd("requests", str(out), "--pid", pid, check=True).stdout
    assert "/chunked-big" in table and "DELETE" in table

    res = trace_cmd("query", str(out), "SELECT method, count(*) FROM http_exchanges WHERE client_pid = "
                    f"{pid} GROUP BY method ORDER BY method", "--format", "csv", check=True)
    assert res.stdout.split() == ["method,count_star()", "DELETE,1", "GET,7", "POST,2", "PUT,1"]
    report = trace_cmd("analyze", str(out), "--only", "http", check=True).stdout
    assert "== http ==" in report and "GET /slow" in report


def test_nginx_serving_files_to_curl(kernel, tmp_path, capture_run):
    need_program("nginx")
    need_program("curl")
    out, fx = capture_workload(tmp_path, capture_run, "nginx_files.py")
    made = fx["requests"]
    assert [r["status"] for r in made] == [200, 200, 404, 200, 405]
    ex = in_order(analyze(out, http.HttpParams(pid=fx["worker_pid"])).exchanges)
    assert [(e.method, e.path, e.status) for e in ex] == [(r["method"], r["path"], r["status"]) for r in made]
    assert [e.client_pid for e in ex] == [r["curl_pid"] for r in made]
    assert {e.server_pid for e in ex} == {fx["worker_pid"]}
    assert {e.server_comm for e in ex} == {"nginx"} and {e.client_comm for e in ex} == {"curl"}
    conns = [e.conn_id for e in ex]
    assert conns[0] == conns[1] == conns[2] and len(set(conns)) == 3  # curl kept the first one alive
    assert all(e.complete and e.latency_ns and e.latency_ns > 0 for e in ex), [e.to_dict() for e in ex]
    assert ex[1].resp_bytes > 102_400  # the big file, headers included
    assert ex[3].resp_bytes < 400  # HEAD: headers only


def test_grpc_unary_streaming_and_error(kernel, tmp_path, capture_run):
    out, fx = capture_workload(tmp_path, capture_run, "grpc_calls.py")
    calls = fx["calls"]
    ex = in_order(analyze(out, http.HttpParams(pid=fx["client_pid"])).exchanges)
    assert [(e.protocol, e.grpc_service, e.grpc_method, e.grpc_status) for e in ex] == \
        [("grpc", fx["service"], c["method"], c["code"]) for c in calls]
    assert [e.path for e in ex] == [f"/{fx['service']}/{c['method']}" for c in calls]
    assert ex[-1].grpc_message == "no item 404"
    assert {(e.client_pid, e.server_pid) for e in ex} == {(fx["client_pid"], fx["server_pid"])}
    assert len({e.conn_id for e in ex}) == 1 and [e.stream_id for e in ex] == [1, 3, 5, 7]
    assert all(e.status == 200 and e.complete and (e.latency_ns or 0) > 0 for e in ex), [e.to_dict() for e in ex]
    errors = json.loads(trace_cmd("requests", str(out), "--pid", str(fx["client_pid"]), "--status", "5",
                                  "--json", check=True).stdout)
    assert [(r["grpc_method"], r["grpc_status"]) for r in errors] == [("Get", 5)]


def test_websocket_echo_frames(kernel, tmp_path, capture_run):
    out, fx = capture_workload(tmp_path, capture_run, "websocket_echo.py")
    res = analyze(out, http.HttpParams(pid=fx["client_pid"]))
    assert [(e.method, e.path, e.status) for e in res.exchanges] == [("GET", fx["path"], 101)]
    (session,) = res.websockets
    want = {f"{d} {op}": n for d, ops in fx["frames"].items() for op, n in ops.items()}
    assert session.counts() == want
    per_direction = {d: sum(1 for f in session.frames if f.direction == d) for d in fx["frames"]}
    assert per_direction == {d: sum(ops.values()) for d, ops in fx["frames"].items()}
    assert all(f.complete for f in session.frames)
    assert [f.masked for f in session.frames] == [f.direction == "client->server" for f in session.frames]
    assert [f.ts for f in session.frames] == sorted(f.ts for f in session.frames)
    assert [f.close_code for f in session.frames if f.opcode == 8] == [1000, 1000]
    res = trace_cmd("query", str(out), "SELECT direction, count(*) FROM http_websocket_frames f JOIN "
                    f"http_exchanges e USING (conn_id) WHERE e.client_pid = {fx['client_pid']} "
                    "GROUP BY direction ORDER BY direction", "--format", "csv", check=True)
    assert res.stdout.split()[1:] == ["client->server,6", "server->client,6"]


def test_https_python_client_and_curl(kernel, tmp_path, capture_run):
    need_program("curl")
    need_program("openssl")
    out, fx = capture_workload(tmp_path, capture_run, "https_calls.py", tracers="sock,proc,tls")
    made = fx["requests"]
    res = analyze(out, http.HttpParams(pid=fx["server_pid"]))
    ex = in_order(res.exchanges)
    assert [(e.method, e.path, e.status) for e in ex] == [(r["method"], r["path"], r["status"]) for r in made]
    assert all(e.tls and e.protocol == "http/1.1" and e.complete for e in ex), [e.to_dict() for e in ex]
    assert [e.client_comm for e in ex] == [r["client"] if r["client"] == "curl" else ex[0].server_comm
                                           for r in made]
    assert ex[0].client_pid == fx["client_pid"] and all(e.server_pid == fx["server_pid"] for e in ex)
    assert all((e.latency_ns or 0) > 0 for e in ex)
    # The encrypted side: two TLS connections (Python's, curl's) with the SNI sent, both decrypted.
    assert [(t.info.sni, t.decrypted) for t in res.tls] == [(fx["sni"], True)] * 2
    assert {t.conn_id for t in res.tls} == {e.conn_id for e in ex}
