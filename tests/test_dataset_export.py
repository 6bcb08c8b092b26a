"""`trace export --format parquet`: two archives (a capture taken here and one of the previous format)
as one Hive-partitioned dataset, read by Apache Spark and by DuckDB, which must give exactly the
answers `trace query` gives over each archive."""

from __future__ import annotations

import json
import os
import signal
from decimal import Decimal

import duckdb
import pytest
from helpers import IN_CI, REPO, CaptureRun, require_kernel, run_fixture, trace_cmd

OLD = REPO / "tests/data/format1/http_keepalive.tar.zst"
# Each check: (name, SQL over one archive's tables, the same over a dataset table with capture_id)
CHECKS = {
    "records per table": [
        (t, f"SELECT count(*) AS n FROM {t}", f"SELECT capture_id, count(*) AS n FROM {t} GROUP BY capture_id")
        for t in ("sock_data", "net_packet", "proc", "processes", "http_exchanges", "flows")],
    "bytes per connection": [
        ("connections", "SELECT sock_id, pid, bytes_sent, bytes_received FROM connections",
         "SELECT capture_id, sock_id, pid, bytes_sent, bytes_received FROM connections")],
    "exchanges per endpoint": [
        ("http_exchanges", "SELECT method, path, count(*) AS n FROM http_exchanges GROUP BY method, path",
         "SELECT capture_id, method, path, count(*) AS n FROM http_exchanges GROUP BY capture_id, method, path")],
}


def _norm(rows) -> list[tuple]:
    """Rows as plain comparable tuples: Spark's DECIMAL(20,0) comes back as Decimal, DuckDB's HUGEINT as int."""
    return sorted(tuple(int(v) if isinstance(v, Decimal) else v for v in r) for r in rows)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    require_kernel()
    d = tmp_path_factory.mktemp("dataset")
    fresh = d / "fresh.tar.zst"
    run = CaptureRun(fresh, "-d", "60s", "-t", "proc,sock,net,stack", "--iface", "lo")
    try:
        run.wait_attached()
        run_fixture("http_keepalive.py", timeout=60)
    finally:
        run.signal(signal.SIGTERM)
    rc, _, err = run.wait()
    assert rc == 0, err
    out = d / "ds"
    res = trace_cmd("export", str(fresh), str(OLD), "--format", "parquet", "-o", str(out))
    assert res.returncode == 0, res.stderr
    schema = json.loads((out / "_schema.json").read_text())
    ids = {c["archive"]: c["capture_id"] for c in schema["captures"]}
    return {"dir": out, "archives": {ids["fresh.tar.zst"]: fresh, ids[OLD.name]: OLD}, "schema": schema}


def _expected(dataset, check_sql: str) -> list[tuple]:
    rows = []
    for cid, archive in dataset["archives"].items():
        res = trace_cmd("query", str(archive), check_sql, "--format", "json", check=True)
        rows += [(cid, *r.values()) for r in json.loads(res.stdout)]
    return _norm(rows)


def test_layout_and_modes(dataset):
    out = dataset["dir"]
    assert len(dataset["archives"]) == 2
    for cid in dataset["archives"]:
        part = out / "sock_data" / f"capture_id={cid}" / "part-0.parquet"
        assert part.is_file() and (part.stat().st_mode & 0o777) == 0o600
    assert {"sock_data", "net_packet", "http_exchanges", "flows", "connections", "stack_profile"} <= set(
        dataset["schema"]["tables"])
    hosts = duckdb.sql(f"SELECT DISTINCT host FROM read_parquet('{out}/sock_data/*/*.parquet')").fetchall()
    assert hosts and all(h[0] for h in hosts)


def test_duckdb_over_the_dataset_answers_as_trace_query(dataset):
    out = dataset["dir"]
    con = duckdb.connect()
    for checks in CHECKS.values():
        for table, one, many in checks:
            con.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT * FROM "
                        f"read_parquet('{out}/{table}/*/*.parquet', hive_partitioning = true)")
            assert _norm(con.execute(many).fetchall()) == _expected(dataset, one), (table, many)


def test_stack_profile_has_resolved_frames(dataset):
    out = dataset["dir"]
    rows = duckdb.sql(f"SELECT comm, frames, weight FROM read_parquet('{out}/stack_profile/*/*.parquet') "
                      "WHERE kind = 'cpu'").fetchall()
    assert rows and all(frames and frames[0] == comm and w > 0 for comm, frames, w in rows)
    assert any(not f.startswith(("0x", "[")) for _, frames, _ in rows for f in frames[1:])


def test_spark_answers_as_trace_query(dataset):
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        if IN_CI:
            pytest.fail("pyspark is not installed (the test extra installs it)")
        pytest.skip("needs pyspark")
    os.environ.setdefault("PYSPARK_PYTHON", "python3")
    spark = (SparkSession.builder.master("local[2]").appName("uetrace-dataset-test")
             .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "2")
             .config("spark.driver.memory", "512m").getOrCreate())
    try:
        out = dataset["dir"]
        for checks in CHECKS.values():
            for table, one, many in checks:
                spark.read.parquet(str(out / table)).createOrReplaceTempView(table)
                got = [tuple(r) for r in spark.sql(many).collect()]
                assert _norm(got) == _expected(dataset, one), (table, many)
    finally:
        spark.stop()


def test_second_export_adds_and_replaces(dataset, tmp_path):
    out = tmp_path / "ds"
    assert trace_cmd("export", str(OLD), "--format", "parquet", "-o", str(out)).returncode == 0
    again = trace_cmd("export", str(OLD), "--format", "parquet", "-o", str(out))
    assert again.returncode == 0, again.stderr
    n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{out}/sock_data/*/*.parquet')").fetchall()[0][0]
    old_id = next(c for c, a in dataset["archives"].items() if a == OLD)
    part = dataset["dir"] / "sock_data" / f"capture_id={old_id}"
    assert n == duckdb.sql(f"SELECT count(*) FROM read_parquet('{part}/*.parquet')").fetchall()[0][0]
    # A folder that is not a dataset is refused, one line, nothing written into it.
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    res = trace_cmd("export", str(OLD), "--format", "parquet", "-o", str(other))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "not a uetrace dataset" in res.stderr
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
