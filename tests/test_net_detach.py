"""No XDP or TC program outlives a capture: bpf_links die with a SIGKILLed
process, and the clsact fallback (a netlink attachment that does not) is
removed by `trace doctor --cleanup` and by the next capture's start."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from netns_topology import ADDR_B, Topology, sh

pytestmark = pytest.mark.kernel


@pytest.fixture
def topo(kernel):
    with Topology("d") as t:
        yield t


def _start(topo: Topology, tmp_path, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(topo.trace(topo.ns_b, "capture", "-q", "-t", "net", "--iface", topo.if_b, "--iface",
                                       "lo", "-o", str(tmp_path / "run.tar.zst"), *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    topo.wait_attached(topo.ns_b, topo.if_b, proc)
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def _clean(topo: Topology) -> None:
    for name in (topo.if_b, "lo"):
        att = topo.attachments(topo.ns_b, name)
        assert att["xdp"] == 0 and att["tcx_egress"] == [] and att["clsact"] == [], (name, att)
        assert "bpf" not in att["tc_filters"], att["tc_filters"]


def test_sigkill_leaves_nothing_with_links(topo, tmp_path):
    proc = _start(topo, tmp_path)
    during = topo.attachments(topo.ns_b, topo.if_b)
    assert during["xdp"] and during["tcx_egress"], during
    _kill(proc)
    _clean(topo)


def test_clsact_leftover_removed_by_doctor_cleanup(topo, tmp_path):
    proc = _start(topo, tmp_path, "--tc-attach", "clsact")
    _kill(proc)
    left = topo.attachments(topo.ns_b, topo.if_b)
    assert left["xdp"] == 0 and left["clsact"], left  # XDP was a link; the clsact filter stays
    res = sh(*topo.trace(topo.ns_b, "doctor", "--cleanup"))
    assert "removed" in res.stdout and topo.if_b in res.stdout, res.stdout
    _clean(topo)


def test_clsact_leftover_removed_at_next_start(topo, tmp_path):
    _kill(_start(topo, tmp_path, "--tc-attach", "clsact"))
    assert topo.attachments(topo.ns_b, topo.if_b)["clsact"]
    out = tmp_path / "next.tar.zst"
    sh(*topo.trace(topo.ns_b, "capture", "-q", "-t", "net", "--iface", topo.if_b, "-d", "300ms", "-o", str(out)),
       timeout=60)
    _clean(topo)
    info = json.loads(sh(sys.executable, "-m", "uetrace", "info", "--json", str(out)).stdout)
    notes = [f["error"] for f in info["tracers"]["net"]["attach_failures"] if f["point"] == "cleanup"]
    assert notes and "crashed" in notes[0], info["tracers"]["net"]


def test_clsact_normal_exit_detaches(topo, tmp_path):
    proc = _start(topo, tmp_path, "--tc-attach", "clsact")
    assert topo.attachments(topo.ns_b, topo.if_b)["clsact"]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    _clean(topo)
    assert "clsact" not in sh("tc", "-n", topo.ns_b, "qdisc", "show", "dev", topo.if_b).stdout


def test_sigkill_keeps_flow_table_snapshots(topo, tmp_path):
    """The flow table is snapshotted every --segment-seconds, so a SIGKILLed
    capture still has net_flows rows (from the segments closed before the kill)."""
    proc = _start(topo, tmp_path, "--segment-seconds", "300ms")
    port = 5077
    topo.python(topo.ns_a, "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                           f"for _ in range(7): s.sendto(b'k' * 50, ({ADDR_B!r}, {port})); time.sleep(0.01)\n"
                           "time.sleep(1.5)")
    _kill(proc)
    _clean(topo)
    # Killed: the archive was never renamed from its name while capturing.
    rows = json.loads(sh(sys.executable, "-m", "uetrace", "query", str(tmp_path / "run.tar.zst.partial"),
                         f"SELECT snapshot_ts, packets FROM net_flows WHERE protocol = 17 AND dport = {port} "
                         "AND direction = 1 ORDER BY snapshot_ts", "--format", "json").stdout)
    assert rows and rows[-1]["packets"] == 7, rows
