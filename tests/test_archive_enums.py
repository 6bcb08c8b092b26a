"""Enums travel with the archive: analyzers look C enum values up by name in schema/<kind>.json, so
the same records written with renumbered enums give the same results, and an archive without
"enums" (written before they were stored) reads with the values of bpf/*.h at the time.

Each archive is built from code: the same records, once with today's numbers and no "enums" key,
once with every value of the enums involved changed and the new numbering written to the schema.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_rows import MS, SOCK_SCHEMA, Conn, keepalive, request, response

from uetrace.analyze import deadlock, flows, http, leaks
from uetrace.analyze.archive import ExtractedArchive
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.enums import FALLBACK, read_enums
from uetrace.errors import BadInputError

START = 1_000_000_000_000
S = 1_000_000_000

# A numbering no version used: every value moved, some orders reversed (FREE below ALLOC, UNLOCK
# below REQUEST, EGRESS above INGRESS), so an analyzer that still compares or sorts by literal values
# gets a different answer.
RENUMBERED = {
    "alloc": {"ue_alloc_op": {"ALLOC_OP_ALLOC": 7, "ALLOC_OP_FREE": 5}},
    "proc": {"ue_proc_op": {"PROC_EXEC": 11, "PROC_FORK": 12, "PROC_EXIT": 13, "PROC_THREAD": 14,
                            "PROC_THREAD_EXIT": 15}},
    "lock": {"ue_lock_op": {"LOCK_OP_REQUEST": 9, "LOCK_OP_ACQUIRE": 8, "LOCK_OP_TRYLOCK": 7, "LOCK_OP_UNLOCK": 6},
             "ue_lock_fn": {n: 100 + v for n, v in FALLBACK["lock"]["ue_lock_fn"].items()}},
    "sock_data": {"ue_sock_direction": {"DIR_EGRESS": 1, "DIR_INGRESS": 0}},
    "sock_conn": {"ue_sock_conn_op": {"CONN_ACCEPT": 2, "CONN_CONNECT": 1, "CONN_CLOSE": 0}},
    "net_packet": {"ue_net_direction": {"NET_EGRESS": 1, "NET_INGRESS": 0}},
}


def _recode(kind: str, column: str, enum_type: str, rows: list[dict], renumber: bool) -> list[dict]:
    """rows written with today's values, re-expressed in the renumbered enum when asked."""
    if not renumber:
        return rows
    old = {v: n for n, v in FALLBACK[kind][enum_type].items()}
    new = RENUMBERED[kind][enum_type]
    return [{**r, column: new[old[r[column]]]} for r in rows]


def _archive(root: Path, tables: dict[str, tuple[list[dict], pa.Schema | None]], renumber: bool) -> ArchiveDb:
    for kind, (rows, schema) in tables.items():
        area = "symbols" if kind == "processes" else "events"
        d = root / area / kind
        d.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "000001.parquet")
        schema_doc: dict = {"kind": kind, "fields": []}
        if renumber and kind in RENUMBERED:
            schema_doc["enums"] = {**FALLBACK[kind], **RENUMBERED[kind]}
        (root / "schema").mkdir(exist_ok=True)
        (root / "schema" / f"{kind}.json").write_text(json.dumps(schema_doc))
    manifest = {"tool": "uetrace", "format_version": 1, "complete": True,
                "clock": {"start": {"monotonic_ns": START, "realtime_ns": START},
                          "detached": {"monotonic_ns": START + 10 * S}}}
    return ArchiveDb(ExtractedArchive(root, manifest, []))


def _both(tmp_path: Path, build) -> tuple[ArchiveDb, ArchiveDb]:
    return (_archive(tmp_path / "old", build(False), False), _archive(tmp_path / "new", build(True), True))


# -- leaks: alloc op, proc exit ------------------------------------------------------------------

ALLOC = FALLBACK["alloc"]["ue_alloc_op"]["ALLOC_OP_ALLOC"]
FREE = FALLBACK["alloc"]["ue_alloc_op"]["ALLOC_OP_FREE"]


def _alloc_tables(renumber: bool) -> dict:
    def row(ts, op, addr, size=0, pid=100):
        return {"ts": START + ts, "pid": pid, "tid": pid, "op": op, "fn": 1, "addr": addr, "size": size,
                "ustack_id": -1}
    rows = [row(1 * S, ALLOC, 0x10, 64),            # freed
            row(2 * S, FREE, 0x10),
            row(1 * S, ALLOC, 0x20, 128),           # never freed: the leak
            row(3 * S, FREE, 0x30),                 # allocated before the capture
            row(4 * S, ALLOC, 0x40, 32),            # freed and reused at the same instant:
            row(5 * S, FREE, 0x40), row(5 * S, ALLOC, 0x40, 16),  # the free sorts first
            row(1 * S, ALLOC, 0x50, 256, pid=200)]  # its process exited at 2 s: young at its end
    proc = [{"ts": START + 2 * S, "pid": 200, "tid": 200, "op": FALLBACK["proc"]["ue_proc_op"]["PROC_EXIT"],
             "comm": "gone"}]
    return {"alloc": (_recode("alloc", "op", "ue_alloc_op", rows, renumber), None),
            "proc": (_recode("proc", "op", "ue_proc_op", proc, renumber), None)}


def test_leaks_read_renumbered_ops(tmp_path):
    reports = []
    for db in _both(tmp_path, _alloc_tables):
        with db:
            reports.append(leaks.run(db, leaks.LeaksParams(min_age_s=1.5)).to_json())
    old, new = reports
    assert old == new
    assert (old["allocations"], old["frees"], old["unknown_frees"], old["missed_frees"]) == (5, 3, 1, 0)
    # 0x20 (9 s old at the end) and 0x40's second block (5 s); pid 200's block was 1 s old at its exit
    assert (old["leaked_blocks"], old["leaked_bytes"]) == (2, 144)
    assert [(g["pid"], g["comm"]) for g in old["groups"]] == [(100, "")]


# -- deadlock: lock op and fn ----------------------------------------------------------------------

OPS = FALLBACK["lock"]["ue_lock_op"]
FNS = FALLBACK["lock"]["ue_lock_fn"]


def _lock_tables(renumber: bool) -> dict:
    rows = []

    def take(tid, ts, m, fn="LOCK_FN_LOCK"):
        for op in ("LOCK_OP_REQUEST", "LOCK_OP_ACQUIRE"):
            rows.append({"ts": START + ts, "pid": 100, "tid": tid, "op": OPS[op], "fn": FNS[fn], "mutex": m,
                         "ret": 0, "ustack_id": -1, "caller": 0})

    def drop(tid, ts, m, fn="LOCK_FN_UNLOCK"):
        rows.append({"ts": START + ts, "pid": 100, "tid": tid, "op": OPS["LOCK_OP_UNLOCK"], "fn": FNS[fn],
                     "mutex": m, "ret": 0, "ustack_id": -1, "caller": 0})

    # thread 1: A then B; thread 2: B then A (a potential deadlock); thread 3 reads R twice under a
    # condition wait that releases and retakes M: read locks and cond waits must keep their meaning.
    take(1, 1 * S, 0xA), take(1, 2 * S, 0xB), drop(1, 3 * S, 0xB), drop(1, 3 * S, 0xA)
    take(2, 4 * S, 0xB), take(2, 5 * S, 0xA), drop(2, 6 * S, 0xA), drop(2, 6 * S, 0xB)
    take(3, 1 * S, 0xC), drop(3, 2 * S, 0xC, "LOCK_FN_COND_WAIT")
    take(3, 7 * S, 0xD, "LOCK_FN_RDLOCK"), take(3, 7 * S + 1, 0xD, "LOCK_FN_RDLOCK")
    rows = _recode("lock", "op", "ue_lock_op", rows, renumber)
    return {"lock": (_recode("lock", "fn", "ue_lock_fn", rows, renumber), None)}


def test_deadlock_reads_renumbered_ops_and_functions(tmp_path):
    reports = []
    for db in _both(tmp_path, _lock_tables):
        with db:
            reports.append(deadlock.run(db).to_json())
    old, new = reports
    assert old == new
    assert [c["addresses"] for c in old["potential"]] == [["0xa", "0xb"]]
    assert [(w["tid"], w["mutex"]) for w in old["cond_waits"]] == [(3, "0xc")]
    assert not old["deadlocks"] and not old["blocked"]


# -- sock direction and conn op: connections view, http ------------------------------------------


def _sock_tables(renumber: bool) -> dict:
    rows: list[dict] = []
    keepalive(Conn(rows), [(request("GET", f"/r/{i}"), response(200, b"x" * i), (i + 1) * MS) for i in range(3)])
    # one end only: which stream is the request stream follows from the direction alone
    keepalive(Conn(rows, client=("10.0.0.3", 41000), client_sock=303, client_pid=3000, capture_server=False),
              [(request("GET", "/one-end"), response(404), 10 * MS)])
    conn = [{"ts": 1, "sock_id": 202, "op": FALLBACK["sock_conn"]["ue_sock_conn_op"]["CONN_ACCEPT"], "pid": 2000},
            {"ts": 1, "sock_id": 101, "op": FALLBACK["sock_conn"]["ue_sock_conn_op"]["CONN_CONNECT"], "pid": 1000}]
    return {"sock_data": (_recode("sock_data", "direction", "ue_sock_direction", rows, renumber), SOCK_SCHEMA),
            "sock_conn": (_recode("sock_conn", "op", "ue_sock_conn_op", conn, renumber), None)}


def test_socket_direction_by_name(tmp_path):
    results = []
    for db in _both(tmp_path, _sock_tables):
        with db:
            sent = db.query("SELECT pid, bytes_sent, bytes_received FROM connections ORDER BY pid")
            res = http.run(db)
            results.append((sent, sorted((e.path, e.method, e.status, e.resp_bytes, e.measured_at, e.client_pid)
                                         for e in res.exchanges)))
    old, new = results
    assert old == new
    req = [len(request("GET", f"/r/{i}")) for i in range(3)]
    resp = [len(response(200, b"x" * i)) for i in range(3)]
    assert old[0] == [(1000, sum(req), sum(resp)), (2000, sum(resp), sum(req)),
                      (3000, len(request("GET", "/one-end")), len(response(404)))]
    assert [e[:3] for e in old[1]] == [("/one-end", "GET", 404)] + [(f"/r/{i}", "GET", 200) for i in range(3)]
    assert old[1][0][4:] == ("client", 3000)


# -- net direction: loopback egress copies, bandwidth ----------------------------------------------


def _net_tables(renumber: bool) -> dict:
    d = FALLBACK["net_packet"]["ue_net_direction"]
    rows = []
    for i, (ifindex, direction) in enumerate([(1, "NET_EGRESS"), (1, "NET_INGRESS"), (2, "NET_INGRESS"),
                                              (2, "NET_EGRESS")]):
        rows.append({"ts": START + i * MS, "ifindex": ifindex, "direction": d[direction], "len": 100 + i,
                     "ip_version": 4, "protocol": 17, "saddr": "10.0.0.1", "daddr": "10.0.0.2", "sport": 5000,
                     "dport": 53, "tcp_flags": 0, "seq": 0, "payload_len": 10})
    return {"net_packet": (_recode("net_packet", "direction", "ue_net_direction", rows, renumber), None)}


def test_net_direction_by_name(tmp_path):
    results = []
    for db in _both(tmp_path, _net_tables):
        with db:
            r = flows.run(db).to_json()
            results.append(([(f["iface"], f["init_packets"]) for f in r["flows"]],
                            [(b["iface"], b["bytes_in"], b["bytes_out"]) for b in r["bandwidth"]]))
    old, new = results
    assert old == new
    # flows: on lo (ifindex 1) only the egress copy counts; bandwidth: every packet, in and out
    assert sorted(old[0]) == [("1", 1), ("2", 2)]
    assert sorted(old[1]) == [("1", 101, 100), ("2", 102, 103)]


# -- the lookup itself -----------------------------------------------------------------------------


def test_lookup_rules(tmp_path):
    (tmp_path / "schema").mkdir()
    (tmp_path / "schema" / "lock.json").write_text(json.dumps({"enums": {"ue_lock_op": {"LOCK_OP_REQUEST": 40}}}))
    (tmp_path / "schema" / "alloc.json").write_text(json.dumps({"kind": "alloc"}))  # before enums were stored
    (tmp_path / "schema" / "proc.json").write_text("not json")
    enums = read_enums(tmp_path)
    assert enums.value("lock", "ue_lock_op", "LOCK_OP_REQUEST") == 40
    assert enums.value("lock", "ue_lock_fn", "LOCK_FN_RDLOCK") == 8  # type absent from the schema: the table
    assert enums.value("alloc", "ue_alloc_op", "ALLOC_OP_FREE") == 2
    assert enums.value("proc", "ue_proc_op", "PROC_EXIT") == 3
    assert enums.sql_list("lock", "ue_lock_op", ["LOCK_OP_REQUEST"]) == "40"
    with pytest.raises(BadInputError, match="no ue_lock_op value LOCK_OP_UNLOCK"):
        enums.value("lock", "ue_lock_op", "LOCK_OP_UNLOCK")  # the archive's enum has no such value
    assert read_enums(tmp_path / "nowhere").value("lock", "ue_lock_op", "LOCK_OP_UNLOCK") == 4


def test_fallback_matches_the_headers():
    """FALLBACK is the headers as they were when archives carried no enums: while the headers keep
    those numbers, the two must agree (a renumbering changes the header, never the table). Values
    added to a header since (e.g. UE_STACK_PY) are not in the table: old archives never carried them."""
    import re

    bpf = Path(__file__).resolve().parent.parent / "bpf"
    found: dict[str, dict[str, int]] = {}
    for h in bpf.glob("*.h"):
        if h.name == "vmlinux.h":
            continue
        for name, body in re.findall(r"enum (ue_\w+)\s*\{(.*?)\}", h.read_text(), re.S):
            body = re.sub(r"/\*.*?\*/", "", body, flags=re.S)
            found[name] = {k: int(v) for k, v in re.findall(r"(\w+)\s*=\s*(\d+)", body)}
    for kind, enums in FALLBACK.items():
        for enum_type, values in enums.items():
            header = found.get(enum_type, {})
            assert {k: header.get(k) for k in values} == values, (kind, enum_type)
