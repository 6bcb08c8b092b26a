"""--max-size: a capture under steady socket traffic stops by itself below the size, cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from helpers import FIXTURES, trace_cmd

from uetrace.analyze.archive_db import open_archive_db

LIMIT = 6 << 20


def test_capture_stops_below_max_size(kernel, tmp_path):
    out = tmp_path / "run.tar.zst"
    traffic = subprocess.Popen([sys.executable, str(FIXTURES / "tcp_exchange.py"), "--rounds", "10000000",
                                "--size", "300", "--name", "uemaxsize"], stdout=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        res = trace_cmd("capture", "-q", "-d", "120s", "-t", "sock", "--comm", "uemaxsize", "--max-size", "6M",
                        "-o", str(out), timeout=180)
        took = time.monotonic() - t0
    finally:
        traffic.kill()
        traffic.wait()
    assert res.returncode == 0, res.stderr
    assert "stopped by max size" in res.stderr
    assert took < 100  # the size, not the duration, ended it
    size = out.stat().st_size
    assert LIMIT * 0.4 < size <= LIMIT, size  # the stop keeps a tenth (at least 1 MiB) for what follows
    info = json.loads(trace_cmd("info", str(out), "--json", check=True).stdout)
    assert info["complete"] and info["stop_reason"] == "max size" and info["options"]["max_size"] == LIMIT
    with open_archive_db(out) as db:
        assert db.warnings == []
        assert db.query("SELECT count(*) FROM sock_data")[0][0] > 1000
