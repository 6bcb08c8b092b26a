"""--max-size: a capture under steady socket traffic stops by itself below the size, cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from helpers import FIXTURES, trace_cmd, traversable

from uetrace.analyze.archive_db import open_archive_db

LIMIT = 6 << 20


@pytest.mark.parametrize("as_user", [False, True], ids=["root", "sudo-user"])
def test_capture_stops_below_max_size(kernel, tmp_path, as_user):
    """As root, and run for a user (SUDO_UID): then the archive is written by a writer process whose
    size reaches the capture through its replies."""
    out = tmp_path / "run.tar.zst"
    env = None
    if as_user:
        traversable(tmp_path)
        os.chown(tmp_path, 65534, 65534)
        env = {**os.environ, "SUDO_UID": "65534", "SUDO_GID": "65534", "SUDO_USER": "nobody"}
    traffic = subprocess.Popen([sys.executable, str(FIXTURES / "tcp_exchange.py"), "--rounds", "10000000",
                                "--size", "300", "--name", "uemaxsize"], stdout=subprocess.DEVNULL)
    try:
        t0 = time.monotonic()
        res = trace_cmd("capture", "-q", "-d", "120s", "-t", "sock", "--comm", "uemaxsize", "--max-size", "6M",
                        "-o", str(out), timeout=180, env=env)
        took = time.monotonic() - t0
    finally:
        traffic.kill()
        traffic.wait()
    assert res.returncode == 0, res.stderr
    assert "stopped by max size" in res.stderr
    assert took < 100  # the size, not the duration, ended it
    size = out.stat().st_size
    assert out.stat().st_uid == (65534 if as_user else 0)
    assert LIMIT * 0.4 < size <= LIMIT, size  # the stop keeps a tenth (at least 1 MiB) for what follows
    info = json.loads(trace_cmd("info", str(out), "--json", check=True).stdout)
    assert info["complete"] and info["stop_reason"] == "max size" and info["options"]["max_size"] == LIMIT
    with open_archive_db(out) as db:
        assert db.warnings == []
        assert db.query("SELECT count(*) FROM sock_data")[0][0] > 1000
