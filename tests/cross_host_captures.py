"""Two hosts on one machine for the cross-host tests: network namespaces joined by a veth pair
(10.213.0.1/24 and 10.213.0.2/24, inside the namespaces only), each with its own UTS namespace so each
capture names its own host, a capture in each (proc, sock, net on the namespace's veth end, stack; only
that host's process, by its name), an HTTP client in one calling the server in the other.
Everything created is removed whatever happens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import zstandard
from helpers import FIXTURES

ADDR_CLIENT, ADDR_SERVER = "10.213.0.1", "10.213.0.2"
PORT = 18213
CLIENT_COMM, SERVER_COMM = "uet13client", "uet13server"  # as fixtures/cross_host_http.py names them
WORKLOAD = FIXTURES / "cross_host_http.py"


def _sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def _on_host(ns: str, hostname: str, *argv: str) -> list[str]:
    """argv inside namespace ns with its own hostname (a UTS namespace: the machine's name is untouched)."""
    script = 'hostname "$0" && exec "$@"'
    return ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", script, hostname, *argv]


def _wait_attached(ns: str, ifname: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    """The net tracer attaches last, its XDP program before its TC hook: once XDP is on the interface
    (and a moment after), every tracer records. A loaded host can take many seconds to get there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        link = subprocess.run(["ip", "-n", ns, "link", "show", "dev", ifname], capture_output=True, text=True)
        if "xdp" in link.stdout:
            time.sleep(0.5)
            return
        time.sleep(0.1)
    raise AssertionError("the capture did not attach its tracers in time")


def two_host_captures(tmp: Path) -> tuple[Path, Path, dict]:
    """(client host's archive, server host's archive, the client's report: requests, fastest_rtt_ns)."""
    tag = os.getpid() % 100000
    ns_c, ns_s = f"ue13c{tag}", f"ue13s{tag}"
    if_c, if_s = f"ue13c{tag}", f"ue13s{tag}"
    for ns in (ns_c, ns_s):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    procs: list[subprocess.Popen] = []
    try:
        _sh("ip", "netns", "add", ns_c)
        _sh("ip", "netns", "add", ns_s)
        _sh("ip", "link", "add", if_c, "netns", ns_c, "type", "veth", "peer", "name", if_s, "netns", ns_s)
        for ns, ifname, addr in ((ns_c, if_c, ADDR_CLIENT), (ns_s, if_s, ADDR_SERVER)):
            _sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", ifname)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "link", "set", ifname, "up")
        server = subprocess.Popen(["ip", "netns", "exec", ns_s, sys.executable, str(WORKLOAD), "server", str(PORT)],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        assert server.stdout.readline().strip() == "ready", "the server did not start"
        archives = {"client": tmp / "client-host.tar.zst", "server": tmp / "server-host.tar.zst"}
        caps = {}
        sides = (("client", ns_c, if_c, "client-host", CLIENT_COMM), ("server", ns_s, if_s, "server-host", SERVER_COMM))
        for side, ns, ifname, host, comm in sides:
            cap = subprocess.Popen(_on_host(ns, host, sys.executable, "-m", "uetrace", "capture", "-q", "-o",
                                            str(archives[side]), "-d", "60s", "-t", "proc,sock,net,stack",
                                            "--iface", ifname, "--freq", "999", "--comm", comm),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            procs.append(cap)
            caps[side] = cap
        for side, ns, ifname, *_ in sides:
            _wait_attached(ns, ifname, caps[side])
        run = subprocess.run(["ip", "netns", "exec", ns_c, sys.executable, str(WORKLOAD), "client", ADDR_SERVER,
                              str(PORT)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        time.sleep(0.3)
        for cap in caps.values():
            cap.send_signal(signal.SIGTERM)
        for cap in caps.values():
            _, err = cap.communicate(timeout=120)
            assert cap.returncode == 0, err
        return archives["client"], archives["server"], json.loads(run.stdout.strip().splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for ns in (ns_c, ns_s):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


if __name__ == "__main__":  # make a pair to look at: python tests/cross_host_captures.py DIR
    print(two_host_captures(Path(sys.argv[1])))


def rewrite_manifests(src: Path, dst: Path, change) -> Path:
    """A copy of archive src whose every manifest (the first and the final one) went through
    change(dict) -> None. Segments are untouched, so their sha256s still hold: the manifest itself is
    not hashed, which is what lets a test shift a capture's clock anchors."""
    from hostile import tar_bytes

    reader = zstandard.ZstdDecompressor().stream_reader(src.read_bytes(), read_across_frames=True)
    members = []
    with tarfile.open(fileobj=reader, mode="r|") as tar:
        for m in tar:
            data = tar.extractfile(m).read()
            if m.name == "manifest.json":
                manifest = json.loads(data)
                change(manifest)
                data = json.dumps(manifest).encode()
            members.append((m.name, data))
    dst.write_bytes(zstandard.ZstdCompressor().compress(tar_bytes(members)))
    return dst


def shift_clock(src: Path, dst: Path, delta_ns: int) -> Path:
    """src as if its host's wall clock were delta_ns ahead: every anchor's realtime_ns moved."""
    def change(m: dict) -> None:
        for anchor in (m.get("clock") or {}).values():
            if isinstance(anchor, dict) and isinstance(anchor.get("realtime_ns"), int):
                anchor["realtime_ns"] += delta_ns
    return rewrite_manifests(src, dst, change)


def with_capture_id(src: Path, dst: Path, capture_id: str) -> Path:
    """src naming itself a part of capture `capture_id` (as every part of a rotated set does)."""
    return rewrite_manifests(src, dst, lambda m: m.__setitem__("capture_id", capture_id))
