"""Loopback packets are recorded once each, as `tcpdump -i lo` records them.

Every packet on lo leaves through egress and comes back through ingress; the net
tracer records lo at TC egress only, and says so in the manifest. The traffic
runs inside a namespace of the test's own, so the counts hold only its packets."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
from helpers import IN_CI, require_kernel, trace_cmd
from netns_topology import Topology, sh

TRAFFIC = """
import socket, threading
srv = socket.socket(); srv.bind(("127.0.0.1", 5071)); srv.listen()
def serve():
    c, _ = srv.accept()
    while (d := c.recv(4096)):
        c.sendall(d.upper())
    c.close()
t = threading.Thread(target=serve); t.start()
cli = socket.create_connection(("127.0.0.1", 5071))
for i in range(3):
    cli.sendall(b"ping %d" % i * 50)
    got = b""
    while len(got) < 300:
        got += cli.recv(4096)
cli.close(); t.join(); srv.close()
import time
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(5):   # spaced: in a loaded CI run tcpdump once saw 3 of 5 datagrams sent back to back
    u.sendto(b"x" * 40, ("127.0.0.1", 5072))
    time.sleep(0.02)
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    require_kernel()
    if subprocess.run(["which", "tcpdump"], capture_output=True).returncode != 0:
        if IN_CI:
            pytest.fail("tcpdump is missing (scripts/setup.sh installs it)")
        pytest.skip("tcpdump is missing")
    tmp = tmp_path_factory.mktemp("lo")
    archive, pcap = tmp / "lo.tar.zst", tmp / "lo.pcap"
    with Topology("lo") as topo:
        ns = topo.ns_b
        # -U: each packet written as it comes, so the test can wait until the file holds them all (an
        # interrupted tcpdump drops what it has not read yet: 1 of 5 datagrams once, in a loaded CI run).
        dump = subprocess.Popen(topo.cmd(ns, "tcpdump", "-i", "lo", "-n", "--immediate-mode", "-U", "-w", str(pcap)),
                                stderr=subprocess.PIPE, text=True)
        cap = subprocess.Popen(topo.trace(ns, "capture", "-q", "-t", "net", "--iface", "lo", "-o", str(archive)),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "listening on" in dump.stderr.readline()
            deadline = time.monotonic() + 30
            while not topo.attachments(ns, "lo")["tcx_egress"]:
                assert cap.poll() is None, cap.communicate()
                assert time.monotonic() < deadline, "no TC program on lo"
                time.sleep(0.1)
            topo.python(ns, TRAFFIC)
            deadline = time.monotonic() + 30
            while _udp_in(pcap) < 5 and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            cap.send_signal(signal.SIGINT)
            _, err = cap.communicate(timeout=60)
            assert cap.returncode == 0, err
            dump.send_signal(signal.SIGINT)
            dump.communicate(timeout=30)
        finally:
            for p in (cap, dump):
                if p.poll() is None:
                    p.kill()
                    p.wait()
    lines = sh("tcpdump", "-n", "-r", str(pcap)).stdout.splitlines()
    return {"archive": archive, "tcpdump": lines}


def _udp_in(pcap) -> int:
    """Datagrams tcpdump has written so far (a packet half-written at the end is not counted)."""
    out = subprocess.run(["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True).stdout
    return sum(" UDP" in line for line in out.splitlines())


def _query(archive, sql: str) -> list[dict]:
    return json.loads(trace_cmd("query", str(archive), sql, "--format", "json", check=True).stdout)


def test_each_loopback_packet_recorded_once(kernel, recorded):
    rows = _query(recorded["archive"], "SELECT count(*) AS n, count(*) FILTER (WHERE protocol = 17) AS udp, "
                                       "count(*) FILTER (WHERE protocol = 6) AS tcp FROM net_packet")[0]
    dumped = recorded["tcpdump"]
    udp = [line for line in dumped if " UDP" in line]
    tcp = [line for line in dumped if "Flags [" in line]
    assert len(udp) == 5 and len(tcp) >= 3 + 3 * 2, dumped  # handshake, then data both ways
    assert (rows["n"], rows["udp"], rows["tcp"]) == (len(dumped), len(udp), len(tcp)), (rows, dumped)


def test_manifest_says_which_hook_records_lo(kernel, recorded):
    info = json.loads(trace_cmd("info", "--json", str(recorded["archive"]), check=True).stdout)
    notes = info["tracers"]["net"]["notes"]
    assert any(n.startswith("lo:") and "egress" in n for n in notes), notes
    assert _query(recorded["archive"], "SELECT DISTINCT direction FROM net_packet") == [{"direction": 0}]
