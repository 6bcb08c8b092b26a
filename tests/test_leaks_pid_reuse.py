"""Leak ages when a pid is reused within a capture (a busy system-wide capture of short-lived
processes): a block ends at the first exit of its pid at or after the allocation, so an earlier
process's exit neither ends a later process's blocks nor makes their age negative (it crashed the
leak analyzer with an unsigned overflow)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from uetrace.analyze import leaks
from uetrace.analyze.archive import ExtractedArchive
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.enums import FALLBACK

START = 1_000_000_000_000
S = 1_000_000_000
ALLOC = FALLBACK["alloc"]["ue_alloc_op"]["ALLOC_OP_ALLOC"]
EXIT = FALLBACK["proc"]["ue_proc_op"]["PROC_EXIT"]


def _db(root: Path, tables: dict[str, list[dict]]) -> ArchiveDb:
    for kind, rows in tables.items():
        d = root / "events" / kind
        d.mkdir(parents=True)
        types = {"ts": pa.uint64(), "addr": pa.uint64(), "size": pa.uint64(), "comm": pa.string()}
        schema = pa.schema([(k, types.get(k, pa.int64())) for k in rows[0]])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), d / "000001.parquet")
    manifest = {"tool": "uetrace", "format_version": 1, "complete": True,
                "clock": {"start": {"monotonic_ns": START, "realtime_ns": START},
                          "detached": {"monotonic_ns": START + 10 * S}}}
    return ArchiveDb(ExtractedArchive(root, manifest, []))


def test_reused_pid_blocks_age_from_their_own_process(tmp_path):
    def alloc(ts, addr, size):
        return {"ts": START + ts, "pid": 300, "tid": 300, "op": ALLOC, "fn": 1, "addr": addr, "size": size,
                "ustack_id": -1}
    tables = {
        "alloc": [alloc(1 * S, 0x10, 64),    # first process: lives 1 s more, then exits at 2 s
                  alloc(3 * S, 0x20, 128),   # the pid's second process: never exits, 7 s old at the end
                  alloc(9 * S, 0x30, 8)],    # 1 s old at the end: too young
        "proc": [{"ts": START + 2 * S, "pid": 300, "tid": 300, "op": EXIT, "comm": "worker"}],
    }
    with _db(tmp_path, tables) as db:
        report = leaks.run(db, leaks.LeaksParams(min_age_s=1.5)).to_json()
        ages = dict(db.query("SELECT addr, (end_ts - ts) / 1e9 FROM alloc_blocks ORDER BY addr"))
    assert (report["leaked_blocks"], report["leaked_bytes"]) == (1, 128)
    assert report["groups"][0]["oldest_age_s"] == 7.0
    assert ages == {0x10: 1.0, 0x20: 7.0, 0x30: 1.0}
    json.dumps(report)
