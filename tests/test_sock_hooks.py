"""Where the socket tracers hook in: not on every system call, and with timestamps that still order a
loopback exchange (bpf/sock.bpf.c, bpf/tls.bpf.c)."""

from __future__ import annotations

import bisect
import threading
from pathlib import Path

import pytest
from helpers import run_fixture

from uetrace.analyze.archive_db import open_archive_db
from uetrace.capture import socket_hooks

# Raw tracepoints that run on every system call of every process, and the per-call syscall tracepoints
# (their perf path is per call, but attaching any of them puts every task on the syscall slow path).
_EVERY_SYSCALL = {"sys_enter", "sys_exit"}


def _bpf_links(pid: int) -> list[dict[str, str]]:
    """The BPF links a process holds, from its fds' fdinfo (other captures may run at the same time:
    only this one's links count)."""
    links = []
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            text = info.read_text()
        except OSError:  # the fd was closed meanwhile
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "link_id" in fields:
            links.append(fields)
    return links


def test_default_capture_has_no_program_on_every_syscall(kernel, tmp_path, capture_run):
    out = tmp_path / "hooks.tar.zst"
    run = capture_run(out, "-d", "8s")
    run.wait_attached()
    result: dict = {}
    workload = threading.Thread(target=lambda: result.update(run_fixture(
        "tcp_exchange.py", "--delay", "0", "--rounds", "300", "--size", "2000")))
    workload.start()
    links = _bpf_links(run.proc.pid)
    workload.join()
    rc, _, err = run.wait()
    assert rc == 0, err
    raw_tps = {lk["tp_name"] for lk in links if lk.get("link_type") == "raw_tracepoint"}
    # The positive control: the links are read from the right process.
    assert {"sock_send_length", "sock_recv_length", "inet_sock_set_state"} <= raw_tps, links
    assert not raw_tps & _EVERY_SYSCALL, raw_tps
    syscall_tps = [lk for lk in links if lk.get("event_type") == "tracepoint"
                   and lk.get("tp_name", lk.get("name", "")).startswith("sys_")]
    assert syscall_tps == [], syscall_tps
    with open_archive_db(out) as cap:
        n = cap.query("SELECT count(*) FROM sock_data WHERE pid = ?", [result["pid"]])[0][0]
        assert n >= 4 * 300  # each round: a request and a response, each written and read


@pytest.mark.parametrize("hooks", ["auto", "syscalls"])
def test_loopback_write_starts_before_the_read_of_its_bytes_returns(kernel, tmp_path, capture_run, hooks):
    """On loopback the send path hands the bytes to the receiver before the send returns, so the
    server's read can return first. The client's write must still start (ts_enter) no later than the
    read of its bytes returns (ts_exit): the correlation's windows rely on that order. Writes larger
    than the socket buffers make it certain that reads return while their write is in progress."""
    out = tmp_path / "order.tar.zst"
    run = capture_run(out, "-d", "6s", "--tracers", "sock", "--snaplen", "0", "--sock-hooks", hooks)
    run.wait_attached()
    fx = run_fixture("loopback_bulk.py")
    rc, _, err = run.wait()
    assert rc == 0, err
    with open_archive_db(out) as cap:
        writes = cap.query("SELECT ts_enter, ts_exit, bytes FROM sock_data WHERE pid = ? AND lport = ? "
                           "AND direction = 0 ORDER BY ts_enter", [fx["pid"], fx["client_port"]])
        reads = cap.query("SELECT ts_exit, bytes FROM sock_data WHERE pid = ? AND lport = ? "
                          "AND rport = ? AND direction = 1 ORDER BY ts_exit",
                          [fx["pid"], fx["server_port"], fx["client_port"]])
        assert cap.manifest["tracers"]["sock"]["lost"] == 0
    assert sum(w[2] for w in writes) == fx["sent"] == sum(r[1] for r in reads)
    # Byte offsets in the client -> server stream: the write holding each read's first byte.
    ends, end = [], 0
    for w in writes:
        end += w[2]
        ends.append(end)
    pos = early = 0
    for read_exit, nbytes in reads:
        write_enter, write_exit, _ = writes[bisect.bisect_right(ends, pos)]
        assert write_enter <= read_exit, (pos, write_enter, read_exit)
        early += read_exit < write_exit
        pos += nbytes
    # The case the order is about (a write's exit time would not do as its start).
    assert early > 0


@pytest.mark.parametrize("hooks", ["auto", "syscalls"])
def test_connection_records_one_per_event_with_the_full_tuple(kernel, tmp_path, capture_run, hooks):
    """accept, connect and close from socket tracepoints: connect and accept are written once the
    local port is known, each socket closes once (the loopback peer's FIN in softirq is not a close
    of the peer), and the listener's close keeps its port. The system-call object (older kernels)
    gives the same records."""
    out = tmp_path / "conn.tar.zst"
    run = capture_run(out, "-d", "6s", "--tracers", "sock", "--sock-hooks", hooks)
    run.wait_attached()
    fx = run_fixture("tcp_exchange.py", "--delay", "0", "--rounds", "3")
    rc, _, err = run.wait()
    assert rc == 0, err
    with open_archive_db(out) as cap:
        rows = cap.query("SELECT op, lport, rport, fd, ret, sock_id FROM sock_conn WHERE pid = ? ORDER BY ts",
                         [fx["pid"]])
        data_socks = {r[0]: r[1] for r in cap.query(
            "SELECT DISTINCT sock_id, lport FROM sock_data WHERE pid = ?", [fx["pid"]])}
    accept, connect, close = 1, 2, 3
    client, server = fx["client_port"], fx["server_port"]
    ops = [(op, lport, rport) for op, lport, rport, *_ in rows]
    assert ops.count((connect, client, server)) == 1
    assert ops.count((accept, server, client)) == 1
    assert ops.count((close, client, server)) == 1
    assert ops.count((close, server, client)) == 1
    assert ops.count((close, server, 0)) == 1  # the listener
    assert len(ops) == 5, rows
    by_op = {(op, lport): (fd, ret, sock_id) for op, lport, _, fd, ret, sock_id in rows}
    assert by_op[(connect, client)][1] == 0  # a blocking connect returns 0
    fd, ret, sock_id = by_op[(accept, server)]
    assert ret == fd  # accept returns the fd
    # The same sock_id as the data records of that socket.
    assert data_socks[sock_id] == server and data_socks[by_op[(connect, client)][2]] == client


def test_nonblocking_connect_record_says_einprogress(kernel, tmp_path, capture_run):
    out = tmp_path / "nb.tar.zst"
    run = capture_run(out, "-d", "5s", "--tracers", "sock")
    run.wait_attached()
    fx = run_fixture("tcp_exchange.py", "--delay", "0", "--rounds", "1", "--nonblocking-connect")
    rc, _, err = run.wait()
    assert rc == 0, err
    with open_archive_db(out) as cap:
        rows = cap.query("SELECT ret FROM sock_conn WHERE pid = ? AND op = 2 AND lport = ?",
                         [fx["pid"], fx["client_port"]])
    assert rows == [(-115,)]  # -EINPROGRESS, what the non-blocking connect() returned


def test_a_kernel_without_the_tracepoints_is_told_apart(tmp_path):
    """The choice reads the kernel's BTF strings: every tracepoint the objects use, and only those
    the file lacks, are missing (a kernel without them gets the system-call objects)."""
    wanted = socket_hooks.tracepoints_wanted()
    assert {"sock_send_length", "sock_recv_length", "tcp_sendmsg_locked", "inet_sock_set_state"} <= wanted
    btf = tmp_path / "vmlinux"
    btf.write_bytes(b"\0".join([b"x", b"btf_trace_sock_send_length", b"btf_trace_inet_sock_set_state",
                                b"btf_trace_tcp_sendmsg_locked_more", b""]))
    assert set(socket_hooks.missing_tracepoints(str(btf))) == wanted - {"sock_send_length", "inet_sock_set_state"}
    assert socket_hooks.missing_tracepoints() == ()   # this machine's kernel has them all
    assert socket_hooks.object_name("sock", "auto") == "sock"
    assert socket_hooks.object_name("tls", "syscalls") == "tls_syscalls"
