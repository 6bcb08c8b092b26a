"""Flow analysis and pcapng export on a synthetic capture (no root needed):
packets built from code with a retransmitted SYN, a retransmitted segment, a
reset, a loopback packet seen at both hooks, and ring-buffer drops."""

from __future__ import annotations

import io
import ipaddress
import json
import shutil
import struct
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import IN_CI, trace_cmd

from uetrace.analyze import flows, pcapng
from uetrace.analyze.archive_db import open_archive_db
from uetrace.capture.archive_writer import ArchiveWriter
from uetrace.capture.manifest import base_manifest

CLIENT, SERVER = ("10.9.0.1", 40000), ("10.9.0.2", 80)
SYN, ACK, RST, PSH = 0x02, 0x10, 0x04, 0x08
MS = 1_000_000
T0 = 10**12


def frame(src, dst, proto: int, flags: int = 0, seq: int = 0, ack: int = 0, payload: bytes = b"") -> bytes:
    if proto == 6:
        l4 = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, ack, 5 << 4, flags, 65535, 0, 0) + payload
    else:
        l4 = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 0, 0, 64, proto, 0,
                     ipaddress.IPv4Address(src[0]).packed, ipaddress.IPv4Address(dst[0]).packed)
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + l4


def record(ts: int, ifindex: int, direction: int, src, dst, proto: int, flags: int = 0, seq: int = 0,
           ack: int = 0, payload: bytes = b"") -> dict:
    data = frame(src, dst, proto, flags, seq, ack, payload)
    return {"ts": ts, "ifindex": ifindex, "len": len(data), "captured": len(data), "direction": direction,
            "ip_version": 4, "protocol": proto, "tcp_flags": flags, "payload_len": len(payload),
            "sport": src[1], "dport": dst[1], "seq": seq, "ack": ack, "saddr": src[0], "daddr": dst[0],
            "payload": data}


def packets() -> list[dict]:
    c, s = CLIENT, SERVER
    out = [record(T0, 2, 0, c, s, 6, SYN, 100),
           record(T0 + 1 * MS, 2, 0, c, s, 6, SYN, 100),                      # SYN again: retransmitted
           record(T0 + 5 * MS, 2, 1, s, c, 6, SYN | ACK, 500, 101),
           record(T0 + 6 * MS, 2, 0, c, s, 6, ACK, 101, 501),
           record(T0 + 7 * MS, 2, 0, c, s, 6, ACK | PSH, 101, 501, b"a" * 100),
           record(T0 + 8 * MS, 2, 0, c, s, 6, ACK | PSH, 201, 501, b"b" * 100),
           record(T0 + 9 * MS, 2, 0, c, s, 6, ACK | PSH, 101, 501, b"a" * 100),  # same range: retransmitted
           record(T0 + 10 * MS, 2, 1, s, c, 6, ACK | PSH, 501, 301, b"r" * 50),
           record(T0 + 11 * MS, 2, 0, c, s, 6, RST | ACK, 301, 551)]
    lo = (("127.0.0.1", 5555), ("127.0.0.1", 9))
    out += [record(T0 + 12 * MS, 1, 0, *lo, 17, payload=b"x" * 10),  # loopback: TC egress...
            record(T0 + 12 * MS + 500, 1, 1, *lo, 17, payload=b"x" * 10)]  # ...then XDP ingress of lo
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("netoff")
    path = tmp / "synthetic.tar.zst"
    w = ArchiveWriter(path)
    manifest = base_manifest({"net_snaplen": 256}, ["trace", "capture"])
    manifest["clock"]["start"] = {"monotonic_ns": T0, "boottime_ns": T0, "realtime_ns": 1_700_000_000 * 10**9}
    manifest["complete"] = True

    def add(member: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        w.add_bytes(member, buf.getvalue())

    add("events/net_packet/000001.parquet", pa.Table.from_pylist(packets()))
    add("symbols/interfaces/000001.parquet", pa.Table.from_pylist([
        {"ifindex": 1, "name": "lo", "mac": "00:00:00:00:00:00", "mtu": 65536, "link_type": 772, "kind": "",
         "up": True, "loopback": True, "addresses": ["127.0.0.1/8"], "xdp_attach": "generic", "tc_attach": "tcx"},
        {"ifindex": 2, "name": "eth9", "mac": "02:02:02:02:02:02", "mtu": 1500, "link_type": 1, "kind": "veth",
         "up": True, "loopback": False, "addresses": ["10.9.0.1/24"], "xdp_attach": "generic",
         "tc_attach": "tcx"}]))
    add("symbols/net_iface_stats/000001.parquet", pa.Table.from_pylist([
        {"ifindex": 2, "direction": 0, "packets": 11, "dropped": 4},
        {"ifindex": 2, "direction": 1, "packets": 5, "dropped": 3},
        {"ifindex": 1, "direction": 0, "packets": 1, "dropped": 0},
        {"ifindex": 1, "direction": 1, "packets": 1, "dropped": 0}]))
    w.add_bytes("manifest.json", json.dumps(manifest).encode())
    w.close()
    return path


@pytest.mark.parametrize("segments_per_query", [flows.SEGMENTS_PER_QUERY, 1])  # 1: a query per flow
def test_tcp_flow_analysis(archive, monkeypatch, segments_per_query):
    monkeypatch.setattr(flows, "SEGMENTS_PER_QUERY", segments_per_query)
    with open_archive_db(archive) as cap:
        res = flows.run(cap)
    tcp = [f for f in res.flows if f["proto"] == "tcp"]
    assert len(tcp) == 1
    f = tcp[0]
    assert (f["init_addr"], f["init_port"], f["resp_addr"], f["resp_port"]) == (*CLIENT, *SERVER)
    assert (f["init_packets"], f["resp_packets"]) == (7, 2)
    assert (f["init_payload"], f["resp_payload"]) == (300, 50)
    assert f["handshake_rtt_ns"] == 5 * MS  # first SYN to SYN-ACK
    assert f["retransmissions"] == 2        # the repeated SYN and the repeated 100-byte segment
    assert (f["resets"], f["close"]) == (1, "rst")
    assert f["first_seen"].startswith("2023-11-14T22:13:20")


def test_loopback_packet_counted_once(archive):
    with open_archive_db(archive) as cap:
        res = flows.run(cap)
    udp = [f for f in res.flows if f["proto"] == "udp"]
    assert len(udp) == 1 and udp[0]["iface"] == "lo" and udp[0]["init_packets"] == 1
    assert {i["iface"]: i["dropped"] for i in res.interfaces} == {"lo": 0, "eth9": 7}
    assert res.top_talkers[0]["addr"] == CLIENT[0]
    assert sum(b["bytes_out"] for b in res.bandwidth if b["iface"] == "eth9") == sum(
        p["len"] for p in packets() if p["ifindex"] == 2 and p["direction"] == 0)


def test_flows_cli_json_and_view(archive):
    out = json.loads(trace_cmd("flows", str(archive), "--json", check=True).stdout)
    assert out["total_flows"] == 2
    res = trace_cmd("query", str(archive), "SELECT retransmissions FROM flows WHERE protocol = 6", "--format",
                    "json", check=True)
    assert json.loads(res.stdout) == [{"retransmissions": 2}]


def _blocks(data: bytes) -> list[tuple[int, bytes]]:
    pos, out = 0, []
    while pos < len(data):
        btype, total = struct.unpack_from("<II", data, pos)
        assert total % 4 == 0 and struct.unpack_from("<I", data, pos + total - 4)[0] == total
        out.append((btype, data[pos + 8: pos + total - 4]))
        pos += total
    return out


def _isb_drops(body: bytes) -> tuple[int, int]:
    """(interface id, isb_ifdrop) of an Interface Statistics Block body."""
    if_id, pos = struct.unpack_from("<I", body, 0)[0], 12
    while pos < len(body):
        code, length = struct.unpack_from("<HH", body, pos)
        if code == pcapng.ISB_IFDROP:
            return if_id, struct.unpack_from("<Q", body, pos + 4)[0]
        pos += 4 + length + (4 - length % 4) % 4
    raise AssertionError("no isb_ifdrop option")


def test_pcapng_layout(archive, tmp_path):
    out = tmp_path / "x.pcapng"
    trace_cmd("export", str(archive), "--format", "pcapng", "-o", str(out), check=True)
    assert out.stat().st_mode & 0o777 == 0o600   # packets hold payload bytes (issue 11, finding 9)
    res = trace_cmd("export", str(archive), "-o", str(out))
    assert res.returncode == 2 and "exists; use --force" in res.stderr
    trace_cmd("export", str(archive), "-o", str(out), "--force", "--mode", "0644", check=True)
    assert out.stat().st_mode & 0o777 == 0o644
    blocks = _blocks(out.read_bytes())
    types = [b[0] for b in blocks]
    assert types[0] == pcapng.SHB and types[1:3] == [pcapng.IDB, pcapng.IDB]
    epbs = [body for t, body in blocks if t == pcapng.EPB]
    assert len(epbs) == len(packets())
    if_id, _hi, _lo, caplen, origlen = struct.unpack_from("<IIIII", epbs[0], 0)
    assert (if_id, caplen, origlen) == (1, len(packets()[0]["payload"]), packets()[0]["len"])
    assert epbs[0][20:20 + caplen] == packets()[0]["payload"]
    assert dict(_isb_drops(body) for t, body in blocks if t == pcapng.ISB) == {0: 0, 1: 7}


def test_pcapng_reads_in_tshark(archive, tmp_path):
    if not shutil.which("tshark"):
        (pytest.fail if IN_CI else pytest.skip)("tshark not installed (scripts/setup.sh installs it)")
    out = tmp_path / "x.pcapng"
    trace_cmd("export", str(archive), "-o", str(out), check=True)
    rows = subprocess.run(["tshark", "-n", "-r", str(out), "-T", "fields", "-e", "frame.interface_name",
                           "-e", "tcp.flags.reset", "-e", "tcp.analysis.retransmission"],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(rows) == len(packets())
    assert sum(r.startswith("eth9") for r in rows) == 9
    drops = subprocess.run(["tshark", "-r", str(out), "-X", "read_format:MIME Files Format", "-T", "fields", "-e",
                            "pcapng.options.option.data.interface.dropped"], capture_output=True, text=True,
                           check=True).stdout.strip()
    assert drops == "0,7"


def test_export_without_packets_fails(tmp_path):
    path = tmp_path / "empty.tar.zst"
    w = ArchiveWriter(path)
    m = base_manifest({}, [])
    m["complete"] = True
    w.add_bytes("manifest.json", json.dumps(m).encode())
    w.close()
    res = trace_cmd("export", str(path), "-o", str(tmp_path / "x.pcapng"))
    assert res.returncode == 2 and "no packets" in res.stderr
    assert not (tmp_path / "x.pcapng").exists()


def test_record_layout_from_btf():
    from uetrace.bpf import object_path
    from uetrace.capture.btf import Btf
    from uetrace.capture.records import kinds_from_btf

    (kind,) = kinds_from_btf(Btf.from_object(object_path("net")), ["ue_net_packet"])
    assert (kind.name, kind.kind_id, kind.layout.size) == ("net_packet", 20, 104)  # _Static_assert in net.bpf.c
    cols = {f.name: f for f in kind.columns}
    assert cols["payload"].kind == "tail" and cols["saddr"].size == 16 and cols["seq"].offset == 48
