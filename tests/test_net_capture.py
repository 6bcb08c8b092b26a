"""The net tracer on real traffic: two namespaces joined by a veth pair, known
traffic (a TCP exchange, UDP bursts over IPv4 and IPv6, a refused connection),
tcpdump capturing the same interface, and tshark reading the pcapng export.

One capture is recorded per module (stopped with SIGINT) and every test checks
one aspect of it, to keep the kernel part short.
"""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
from helpers import FIXTURES, IN_CI, require_kernel, trace_cmd
from netns_topology import ADDR6_B, ADDR_B, Topology, sh
from pcap_flows import count_flows, flow_key

pytestmark = pytest.mark.kernel

TRAFFIC = str(FIXTURES / "net_traffic.py")
sys.path.insert(0, str(FIXTURES))
import net_traffic as nt  # noqa: E402  (the fixture's constants: ports and sizes)

ETH, IP4, IP6, UDP = 14, 20, 40, 8


def _wait_line(proc: subprocess.Popen, stream, needle: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            line = stream.readline()
            seen += line
            if needle in line:
                return
        if proc.poll() is not None:
            break
    raise AssertionError(f"no {needle!r} from {proc.args}: {seen}")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    require_kernel()
    if not _has("tcpdump"):
        (pytest.fail if IN_CI else pytest.skip)("needs tcpdump (scripts/setup.sh installs it)")
    tmp = tmp_path_factory.mktemp("net")
    archive, pcap = tmp / "run.tar.zst", tmp / "tcpdump.pcap"
    procs: list[subprocess.Popen] = []
    with Topology("c") as topo:
        try:
            server = subprocess.Popen(topo.cmd(topo.ns_b, sys.executable, TRAFFIC, "serve"), stdout=subprocess.PIPE,
                                      text=True)
            procs.append(server)
            _wait_line(server, server.stdout, "ready")
            # --immediate-mode: libpcap hands over each packet at once instead of when its TPACKET_V3
            # block fills or times out; a SIGINT before that loses the packets still in the block.
            dump = subprocess.Popen(topo.cmd(topo.ns_b, "tcpdump", "-i", topo.if_b, "-n", "-U", "--immediate-mode",
                                             "-w", str(pcap)), stderr=subprocess.PIPE, text=True)
            procs.append(dump)
            _wait_line(dump, dump.stderr, "listening on")
            cap = subprocess.Popen(topo.trace(topo.ns_b, "capture", "-q", "-t", "net", "--iface", topo.if_b,
                                              "--iface", "lo", "--net-snaplen", "256", "-o", str(archive)),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(cap)
            topo.wait_attached(topo.ns_b, topo.if_b, cap)
            during = topo.attachments(topo.ns_b, topo.if_b)
            client = json.loads(sh(*topo.cmd(topo.ns_a, sys.executable, TRAFFIC, "client", ADDR_B, ADDR6_B))
                                .stdout.strip().splitlines()[-1])
            # Three datagrams on the namespace's loopback: seen at TC egress and XDP ingress of lo.
            topo.python(topo.ns_b, "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                                   "for _ in range(3): s.sendto(b'l' * 10, ('127.0.0.1', 5009))")
            served = json.loads(server.communicate(timeout=30)[0].strip().splitlines()[-1])
            time.sleep(0.3)
            cap.send_signal(signal.SIGINT)
            _, cap_err = cap.communicate(timeout=60)
            assert cap.returncode == 0, cap_err
            after = {name: topo.attachments(topo.ns_b, name) for name in (topo.if_b, "lo")}
            _wait_until_written(pcap)
            dump.send_signal(signal.SIGINT)
            dump.communicate(timeout=30)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    flows = json.loads(trace_cmd("flows", str(archive), "--json", check=True).stdout)
    yield {"archive": archive, "pcap": pcap, "client": client, "served": served, "flows": flows,
           "during": during, "after": after, "if_b": topo.if_b, "tmp": tmp, "stderr": cap_err}


def _wait_until_written(path, quiet: float = 0.5, timeout: float = 10) -> None:
    """Until the file has stopped growing for `quiet` seconds: tcpdump has written every packet it got."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        size = path.stat().st_size if path.exists() else 0
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)


def _has(tool: str) -> bool:
    return subprocess.run(["which", tool], capture_output=True).returncode == 0


def _flow(res: dict, proto: str, init_port: int, iface: str | None = None) -> dict:
    iface = iface or res["if_b"]
    match = [f for f in res["flows"]["flows"] if f["proto"] == proto and f["init_port"] == init_port
             and f["iface"] == iface]
    assert len(match) == 1, (proto, init_port, [(f["proto"], f["init_port"], f["iface"]) for f in
                                                 res["flows"]["flows"]])
    return match[0]


def test_traffic_went_through_unchanged(kernel, recorded):
    assert recorded["client"]["tcp_received"] == nt.RESP and recorded["served"]["tcp_received"] == nt.REQ
    assert recorded["served"]["udp_received"] == nt.UDP_N + nt.UDP6_N + nt.UDP6X_N + 1
    assert recorded["client"]["refused"]
    assert recorded["during"]["xdp"] and recorded["during"]["tcx_egress"], recorded["during"]


def test_udp_bursts_exact(kernel, recorded):
    f = _flow(recorded, "udp", recorded["client"]["udp_port"])
    assert (f["init_packets"], f["resp_packets"]) == (nt.UDP_N, 0)
    assert f["init_bytes"] == nt.UDP_N * (ETH + IP4 + UDP + nt.UDP_SIZE)
    assert f["init_payload"] == nt.UDP_N * nt.UDP_SIZE
    assert (f["resp_addr"], f["resp_port"]) == (ADDR_B, nt.UDP_PORT)
    f6 = _flow(recorded, "udp", recorded["client"]["udp6_port"])
    assert f6["ip_version"] == 6 and f6["resp_addr"] == ADDR6_B
    assert (f6["init_packets"], f6["init_bytes"]) == (nt.UDP6_N, nt.UDP6_N * (ETH + IP6 + UDP + nt.UDP_SIZE))


def test_tcp_exchange_handshake_and_close(kernel, recorded):
    f = _flow(recorded, "tcp", recorded["client"]["tcp_port"])
    assert (f["init_payload"], f["resp_payload"]) == (nt.REQ, nt.RESP)
    assert f["handshake_rtt_ns"] is not None and 0 <= f["handshake_rtt_ns"] < 1e9
    assert f["syn_ts"] < f["synack_ts"]
    assert (f["resets"], f["close"], f["retransmissions"]) == (0, "fin", 0)
    assert f["fins"] == 2


def _query(res: dict, sql: str) -> list[dict]:
    return json.loads(trace_cmd("query", str(res["archive"]), sql, "--format", "json", check=True).stdout)


def test_ipv6_extension_headers_walked(kernel, recorded):
    """IPv6 UDP behind a destination-options header, and a fragmented datagram
    (fragment, destination options, UDP): ports and protocol come from the UDP
    header; the second fragment is UDP without ports."""
    port, opt = recorded["client"]["udp6x_port"], nt.DSTOPTS_LEN
    rows = _query(recorded, f"""SELECT protocol, sport, dport, l4_offset, payload_len FROM net_packet
        WHERE direction = 1 AND ip_version = 6 AND sport = {port} ORDER BY ts""")
    assert rows[:nt.UDP6X_N] == [{"protocol": 17, "sport": port, "dport": nt.UDP_PORT,
                                  "l4_offset": ETH + IP6 + opt, "payload_len": nt.UDP_SIZE}] * nt.UDP6X_N
    assert rows[nt.UDP6X_N:] == [{"protocol": 17, "sport": port, "dport": nt.UDP_PORT,
                                  "l4_offset": ETH + IP6 + 8 + opt, "payload_len": nt.BIG_SIZE}]
    later = _query(recorded, f"""SELECT protocol, sport, dport, l4_offset FROM net_packet
        WHERE direction = 1 AND ip_version = 6 AND protocol = 17 AND sport = 0 AND daddr = '{ADDR6_B}'""")
    assert later == [{"protocol": 17, "sport": 0, "dport": 0, "l4_offset": 0}]
    f = _flow(recorded, "udp", port)
    assert (f["init_packets"], f["init_payload"]) == (nt.UDP6X_N + 1, nt.UDP6X_N * nt.UDP_SIZE + nt.BIG_SIZE)
    table = _query(recorded, f"""SELECT sum(packets) AS n FROM net_flows WHERE protocol = 17 AND sport = {port}
        AND snapshot_ts = (SELECT max(snapshot_ts) FROM net_flows)""")  # the final snapshot
    assert table[0]["n"] == nt.UDP6X_N + 1


def test_refused_connection_reset(kernel, recorded):
    f = _flow(recorded, "tcp", recorded["client"]["rst_port"])
    assert (f["init_packets"], f["resp_packets"]) == (1, 1)
    assert (f["resets"], f["close"]) == (1, "rst")
    assert f["handshake_rtt_ns"] is None and f["resp_port"] == nt.CLOSED_PORT


def test_packet_counts_equal_tcpdump(kernel, recorded):
    dumped = count_flows(recorded["pcap"])
    c = recorded["client"]
    wanted = {(6, c["tcp_port"]), (17, c["udp_port"]), (17, c["udp6_port"]), (17, c["udp6x_port"]),
              (6, c["rst_port"])}
    ours = {flow_key(6 if f["proto"] == "tcp" else 17, f["init_addr"], f["init_port"], f["resp_addr"],
                     f["resp_port"]): f["init_packets"] + f["resp_packets"]
            for f in recorded["flows"]["flows"] if f["iface"] == recorded["if_b"]
            and (f["protocol"], f["init_port"]) in wanted}
    assert len(ours) == 5
    assert ours == {k: dumped[k] for k in ours}


def test_pcapng_export_reads_in_tshark(kernel, recorded):
    if not _has("tshark"):
        (pytest.fail if IN_CI else pytest.skip)("tshark not installed (scripts/setup.sh installs it)")
    out = recorded["tmp"] / "run.pcapng"
    trace_cmd("export", str(recorded["archive"]), "--format", "pcapng", "-o", str(out), check=True)
    # No reassembly: the first fragment of an IPv6 datagram then shows its UDP header, as in our flows.
    rows = sh("tshark", "-n", "-o", "ipv6.defragment:FALSE", "-r", str(out), "-T", "fields",
              "-e", "frame.interface_name", "-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport", "-e", "udp.srcport",
              "-e", "ip.dst", "-e", "ipv6.dst", "-e", "tcp.dstport", "-e", "udp.dstport").stdout.splitlines()
    n_records = json.loads(trace_cmd("query", str(recorded["archive"]), "SELECT count(*) AS n FROM net_packet",
                                     "--format", "json", check=True).stdout)[0]["n"]
    assert len(rows) == n_records
    tuples: Counter = Counter()
    for r in rows:
        iface, s4, s6, tsp, usp, d4, d6, tdp, udp_ = (r.split("\t") + [""] * 9)[:9]
        if iface == recorded["if_b"] and (s4 or s6) and (tsp or usp):
            # not ip.proto / ipv6.nxt: the latter is the first next header (60 before destination options)
            tuples[flow_key(6 if tsp else 17, s4 or s6, int(tsp or usp), d4 or d6, int(tdp or udp_))] += 1
    for f in recorded["flows"]["flows"]:
        # (an IPv6 fragment after the first has no ports: tshark shows no UDP header for it)
        if f["iface"] == recorded["if_b"] and f["proto"] in ("tcp", "udp") and (f["init_port"] or f["resp_port"]):
            key = flow_key(f["protocol"], f["init_addr"], f["init_port"], f["resp_addr"], f["resp_port"])
            assert tuples[key] == f["init_packets"] + f["resp_packets"], key
    # Interface statistics blocks carry the tracer's per-interface drop counts.
    # The MIME reader shows the whole file as one frame: one value per ISB, comma-separated.
    drops, received = sh("tshark", "-r", str(out), "-X", "read_format:MIME Files Format", "-T", "fields",
                         "-e", "pcapng.options.option.data.interface.dropped",
                         "-e", "pcapng.options.option.data.interface.received").stdout.strip().split("\t")
    dropped = json.loads(trace_cmd("query", str(recorded["archive"]),
                                   "SELECT coalesce(sum(dropped), 0) AS d FROM net_iface_stats",
                                   "--format", "json", check=True).stdout)[0]["d"]
    assert len(drops.split(",")) == 2  # one statistics block per interface (lo and the veth)
    assert sum(int(d) for d in drops.split(",")) == dropped
    assert sum(int(r) for r in received.split(",")) == n_records


def test_loopback_counted_once(kernel, recorded):
    lo = [f for f in recorded["flows"]["flows"] if f["iface"] == "lo" and f["proto"] == "udp"
          and f["resp_port"] == 5009]
    assert len(lo) == 1 and lo[0]["init_packets"] == 3 and lo[0]["resp_packets"] == 0


def test_nothing_attached_after_sigint(kernel, recorded):
    for name, att in recorded["after"].items():
        assert att["xdp"] == 0 and att["tcx_egress"] == [] and att["clsact"] == [], (name, att)


def test_analyze_has_flows_section(kernel, recorded):
    res = trace_cmd("analyze", str(recorded["archive"]), "--only", "flows", "--top", "200", check=True)
    assert "== flows ==" in res.stdout and str(nt.UDP_PORT) in res.stdout
    rows = json.loads(trace_cmd("query", str(recorded["archive"]), "SELECT count(*) AS n FROM flows WHERE resets > 0",
                                "--format", "json", check=True).stdout)
    assert rows[0]["n"] >= 1
