"""Request-smuggling framing captured for real (issue 15): a raw socket client sends Content-Length with
Transfer-Encoding and a duplicated Content-Length to a Python server on 127.0.0.1 under `trace capture`;
`trace requests --anomalies` names both, and the exchanges before and after them are intact."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from helpers import trace_cmd

WORKLOAD = Path(__file__).resolve().parent / "smuggling_workload.py"


def test_cl_te_and_duplicate_content_length_captured(kernel, tmp_path, capture_run):
    out = tmp_path / "run.tar.zst"
    run = capture_run(out, "-d", "60s", "--tracers", "sock,proc")
    run.wait_attached()
    try:
        res = subprocess.run([sys.executable, str(WORKLOAD)], capture_output=True, text=True, timeout=60)
    finally:
        run.signal(signal.SIGTERM)
    rc, _, err = run.wait()
    assert rc == 0, err
    assert res.returncode == 0, res.stderr
    fx = json.loads(res.stdout.strip().splitlines()[-1])
    pid = str(fx["client_pid"])

    listed = json.loads(trace_cmd("requests", str(out), "--pid", pid, "--json", check=True).stdout)
    assert [(r["method"], r["path"], r["status"]) for r in listed] == \
        [(r["method"], r["path"], r["status"]) for r in fx["requests"]]
    assert all(r["complete"] and r["client_pid"] == fx["client_pid"] and r["server_pid"] == fx["server_pid"]
               for r in listed), listed
    assert len({r["conn_id"] for r in listed}) == 1
    assert [r["anomalies"] for r in listed] == [[], ["cl_and_te", "desync"], ["duplicate_content_length"], []]

    flagged = json.loads(trace_cmd("requests", str(out), "--pid", pid, "--anomalies", "--json", check=True).stdout)
    assert [(r["path"], r["anomalies"]) for r in flagged] == [
        ("/cl-te", ["cl_and_te", "desync"]), ("/dup-cl", ["duplicate_content_length"])]
    table = trace_cmd("requests", str(out), "--pid", pid, "--anomalies", "--format", "csv", check=True).stdout
    lines = table.strip().splitlines()
    assert lines[0].endswith(",anomalies") and len(lines) == 3
    assert "cl_and_te" in lines[1] and "duplicate_content_length" in lines[2]

    # trace analyze counts them per connection and names this one as a smuggling signature.
    report = json.loads(trace_cmd("analyze", str(out), "--only", "http", "--json", check=True).stdout)["http"]
    (conn,) = [c for c in report["anomalies"] if c["conn_id"] == listed[0]["conn_id"]]
    assert (conn["client"], conn["server"]) == (listed[0]["client"], f"127.0.0.1:{fx['port']}")
    assert conn["exchanges"] == 2 and conn["smuggling"] is True
    assert conn["counts"] == {"cl_and_te": 1, "desync": 1, "duplicate_content_length": 1}
    text = trace_cmd("analyze", str(out), "--only", "http", check=True).stdout
    assert "Framing anomalies" in text and "Smuggling signature" in text
