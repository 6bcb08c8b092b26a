"""A real TCP exchange on loopback, captured by the real tracers, read back from the archive."""

from __future__ import annotations

import io
import json
import tarfile
import threading

import pytest
import zstandard
from helpers import run_fixture, trace_cmd

from uetrace.analyze.archive_db import open_archive_db


def capture_exchange(tmp_path, capture_run, *fixture_args: str, extra: tuple[str, ...] = ()):
    out = tmp_path / "run.tar.zst"
    run = capture_run(out, "-d", "6s", "--tracers", "sock,proc", *extra)
    run.wait_attached()
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(run_fixture("tcp_exchange.py", "--delay", "0",
                                                                  *fixture_args)))
    t.start()
    t.join()
    rc, _, err = run.wait()
    assert rc == 0, err
    return out, result


@pytest.mark.parametrize("family", ["v4", "v6"])
def test_exchange_bytes_ports_and_payload(kernel, tmp_path, capture_run, family):
    args = ("--rounds", "6", "--size", "700") + (("--v6",) if family == "v6" else ())
    out, fx = capture_exchange(tmp_path, capture_run, *args)
    assert (out.stat().st_mode & 0o777) == 0o600
    with open_archive_db(out) as cap:
        assert cap.warnings == []
        conns = cap.query("SELECT lport, rport, bytes_sent, bytes_received, laddr FROM connections "
                          "WHERE pid = ? ORDER BY lport", [fx["pid"]])
        by_port = {c[0]: c for c in conns}
        client = by_port[fx["client_port"]]
        server = next(c for c in conns if c[0] == fx["server_port"] and c[1] == fx["client_port"])
        assert client[1] == fx["server_port"]
        assert (client[2], client[3]) == (fx["client_sent"], fx["client_recv"])
        assert (server[2], server[3]) == (fx["server_sent"], fx["server_recv"])
        assert client[4] == ("::1" if family == "v6" else "127.0.0.1")
        # The first request's payload prefix is exactly the bytes sent (snaplen 512 < 700).
        first = cap.query("SELECT payload, captured, bytes FROM sock_data WHERE pid = ? AND lport = ? "
                          "AND direction = 0 ORDER BY ts_enter LIMIT 1", [fx["pid"], fx["client_port"]])[0]
        assert first[1] == 512 and first[2] == 700
        assert bytes(first[0]) == bytes.fromhex(fx["first_request_hex"])[:512]
        ops = {r[0] for r in cap.query("SELECT op FROM sock_conn WHERE pid = ?", [fx["pid"]])}
        assert {1, 2, 3} <= ops  # accept, connect, close
        m = cap.manifest
        assert m["complete"] and m["tracers"]["sock"]["lost"] == 0
        assert m["tracers"]["sock"]["attach_failures"] == []
    # The enums travel with the archive, from the object's BTF (bpf/sock.h).
    enums = _archive_json(out, "schema/sock_data.json")["enums"]
    assert enums["ue_sock_direction"] == {"DIR_EGRESS": 0, "DIR_INGRESS": 1}
    assert enums["ue_sock_conn_op"] == {"CONN_ACCEPT": 1, "CONN_CONNECT": 2, "CONN_CLOSE": 3}
    assert "ue_sock_direction" in _archive_json(out, "schema/sock_conn.json")["enums"]


def _archive_json(archive, member: str) -> dict:
    with open(archive, "rb") as fh:
        data = zstandard.ZstdDecompressor().stream_reader(fh).read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return json.load(tar.extractfile(member))


def test_pid_filter_in_kernel(kernel, tmp_path, capture_run):
    """--pid of a process that does no socket I/O: the fixture's traffic must not be recorded."""
    out, fx = capture_exchange(tmp_path, capture_run, extra=("--pid", "1"))
    with open_archive_db(out) as cap:
        assert cap.manifest["options"]["pids"] == [1]
        recorded = cap.query("SELECT DISTINCT pid FROM sock_data") if cap.has("sock_data") else []
        assert fx["pid"] not in {r[0] for r in recorded}


def test_analyze_and_query_read_the_capture(kernel, tmp_path, capture_run):
    out, fx = capture_exchange(tmp_path, capture_run)
    res = trace_cmd("analyze", str(out), check=True)
    assert "top connections by bytes" in res.stdout
    assert f"127.0.0.1:{fx['client_port']}" in res.stdout
    res = trace_cmd("query", str(out), f"SELECT sum(bytes) FROM sock_data WHERE pid = {fx['pid']}",
                    "--format", "csv", check=True)
    total = fx["client_sent"] + fx["client_recv"] + fx["server_sent"] + fx["server_recv"]
    assert res.stdout.strip().splitlines()[-1] == str(total)
    res = trace_cmd("info", str(out), check=True)
    assert "sock" in res.stdout and "proc" in res.stdout


def test_sendfile_bytes_are_counted(kernel, tmp_path, capture_run):
    """A server sending a file with sendfile(2) (as nginx does): the bytes count, no payload."""
    out = tmp_path / "sf.tar.zst"
    run = capture_run(out, "-d", "5s", "--tracers", "sock")
    run.wait_attached()
    fx = run_fixture("tcp_exchange.py", "--delay", "0", "--rounds", "1", "--sendfile", "5000")
    rc, _, err = run.wait()
    assert rc == 0, err
    with open_archive_db(out) as cap:
        rows = cap.query("SELECT bytes, captured FROM sock_data WHERE pid = ? AND syscall = 13", [fx["pid"]])
        assert sum(r[0] for r in rows) == 5000 and all(r[1] == 0 for r in rows)
        assert cap.manifest["tracers"]["sock"]["lost"] == 0


def test_comm_filter_in_kernel(kernel, tmp_path, capture_run):
    """--comm (repeatable) keeps the named processes' traffic and drops another's, in the kernel."""
    out = tmp_path / "comm.tar.zst"
    run = capture_run(out, "-d", "6s", "--tracers", "sock", "--comm", "uewanted", "--comm", "uealso")
    run.wait_attached()
    results: dict = {}
    threads = [threading.Thread(target=lambda n=n: results.update({n: run_fixture(
        "tcp_exchange.py", "--delay", "0", "--name", n)})) for n in ("uewanted", "uealso", "ueother")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rc, _, err = run.wait()
    assert rc == 0, err
    with open_archive_db(out) as cap:
        pids = {r[0] for r in cap.query("SELECT DISTINCT pid FROM sock_data")}
        assert results["uewanted"]["pid"] in pids and results["uealso"]["pid"] in pids
        assert results["ueother"]["pid"] not in pids
