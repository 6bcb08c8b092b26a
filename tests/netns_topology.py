"""Two network namespaces joined by a veth pair, for the net tracer tests.

Every address lives inside the namespaces (10.77.0.0/30, fd77::/64), so no test
packet can leave them; deleting the namespaces deletes the veth pair and
anything attached to it, and Topology.close() does that whatever happened.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ADDR_A, ADDR_B = "10.77.0.1", "10.77.0.2"
ADDR6_A, ADDR6_B = "fd77::1", "fd77::2"


def sh(*argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return res


class Topology:
    """Namespaces ns_a and ns_b with veth ends if_a (10.77.0.1) and if_b (10.77.0.2)."""

    def __init__(self, tag: str = ""):
        sfx = f"{tag}{os.getpid() % 100000}"
        self.ns_a, self.ns_b = f"uet{sfx}a", f"uet{sfx}b"
        self.if_a, self.if_b = f"uev{sfx}a", f"uev{sfx}b"
        self.close()  # a previous run killed before its teardown
        try:
            sh("ip", "netns", "add", self.ns_a)
            sh("ip", "netns", "add", self.ns_b)
            sh("ip", "link", "add", self.if_a, "netns", self.ns_a, "type", "veth", "peer", "name", self.if_b,
               "netns", self.ns_b)
            sides = ((self.ns_a, self.if_a, ADDR_A, ADDR6_A), (self.ns_b, self.if_b, ADDR_B, ADDR6_B))
            for ns, ifname, a4, a6 in sides:
                sh("ip", "-n", ns, "addr", "add", f"{a4}/30", "dev", ifname)
                sh("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", ifname, "nodad")
                sh("ip", "-n", ns, "link", "set", "lo", "up")
                sh("ip", "-n", ns, "link", "set", ifname, "up")
        except BaseException:
            self.close()
            raise

    def cmd(self, ns: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]

    def trace(self, ns: str, *args: str) -> list[str]:
        return self.cmd(ns, sys.executable, "-m", "uetrace", *args)

    def python(self, ns: str, code: str, timeout: float = 30) -> str:
        return sh(*self.cmd(ns, sys.executable, "-c", code), timeout=timeout).stdout

    def attachments(self, ns: str, ifname: str) -> dict:
        """What is attached to an interface: XDP prog id, TCX egress/ingress prog ids, our clsact filters."""
        code = (f"import json, socket; from uetrace.capture import libbpf; "
                f"from uetrace.capture.tracers import netlink_cleanup as n; "
                f"i = socket.if_nametoindex({ifname!r}); "
                f"print(json.dumps({{'xdp': libbpf.xdp_prog_id(i), 'tcx_egress': libbpf.tcx_prog_ids(i, True), "
                f"'tcx_ingress': libbpf.tcx_prog_ids(i, False), 'clsact': [f[3] for f in n.leftover_filters()]}}))")
        out = json.loads(self.python(ns, code))
        out["tc_filters"] = sh(*self.cmd(ns, "tc", "filter", "show", "dev", ifname, "egress"), check=False).stdout
        return out

    def wait_attached(self, ns: str, ifname: str, proc: subprocess.Popen, timeout: float = 30) -> None:
        """Until an XDP program is on the interface (TC attaches right after it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"capture exited early: {proc.communicate()}")
            if "xdp" in sh("ip", "-n", ns, "link", "show", "dev", ifname).stdout:
                time.sleep(0.5)
                return
            time.sleep(0.1)
        raise AssertionError(f"no XDP program on {ifname} after {timeout}s")

    def close(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)

    def __enter__(self) -> Topology:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
