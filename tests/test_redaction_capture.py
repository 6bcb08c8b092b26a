"""Redaction on real captures: secrets sent by curl and a Python client to nginx, a Python server,
a TLS server and a gRPC server (fixtures/secret_requests.py: HTTP/2, Huffman-coded HPACK), and on a
command line, are in no decompressed member of
the archive; `trace requests` still reports every request, its query values masked; the pcapng export
opens in tshark with every packet. A --no-redact capture holds them all, and `trace redact` of it
passes the same checks."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
from pathlib import Path

import pytest
from archive_text import find_secrets
from helpers import CaptureRun, need_program, run_fixture, trace_cmd

TRACERS = ("-t", "sock,tls,proc,net", "--iface", "lo", "--net-snaplen", "1024")


def _capture(out: Path, *args: str) -> dict:
    run = CaptureRun(out, "-d", "90s", *TRACERS, *args)
    try:
        run.wait_attached()
        fx = run_fixture("secret_requests.py", timeout=90)
    finally:
        run.signal(signal.SIGTERM)
    rc, _, err = run.wait()
    assert rc == 0, err
    fx["stderr"] = err
    return fx


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    from helpers import require_kernel

    require_kernel()
    need_program("nginx")
    need_program("curl")
    need_program("openssl")
    tmp = tmp_path_factory.mktemp("redaction")
    redacted, raw, copy = tmp / "redacted.tar.zst", tmp / "raw.tar.zst", tmp / "copy.tar.zst"
    fx = _capture(redacted)
    fx_raw = _capture(raw, "--no-redact")
    res = trace_cmd("redact", str(raw), "-o", str(copy))
    assert res.returncode == 0, res.stderr
    return {"tmp": tmp, "redacted": (redacted, fx), "raw": (raw, fx_raw), "copy": (copy, fx_raw),
            "redact_stderr": res.stderr}


def _secrets(fx: dict) -> list[str]:
    return list(fx["secrets"].values())


def _requests(archive: Path) -> list[tuple[str, str, int]]:
    rows = json.loads(trace_cmd("requests", str(archive), "--json", check=True).stdout)
    return sorted((r["method"], r["path"], r["status"]) for r in rows if (r["path"] or "").startswith("/index.html?"))


def _masked(path: str) -> str:
    return re.sub(r"=([^&]*)", lambda m: "=" + "*" * len(m.group(1)), path)


def test_no_secret_in_any_member(captures):
    archive, fx = captures["redacted"]
    assert find_secrets(archive, _secrets(fx)) == []
    m = json.loads(trace_cmd("info", str(archive), "--json", check=True).stdout)
    assert m["redaction"]["enabled"] and m["options"]["redact"]
    masked = m["redaction"]["masked"]
    assert masked["sock_data"] > 0 and masked["tls_data"] > 0 and masked["processes"] > 0, masked
    assert masked["net_packet"] > 0, masked


def test_requests_are_the_same_with_masked_queries(captures):
    archive, fx = captures["redacted"]
    got = _requests(archive)
    want = sorted(("GET", _masked(r["path"]), r["status"]) for r in fx["requests"])
    assert got == want
    rows = json.loads(trace_cmd("requests", str(archive), "--json", check=True).stdout)
    grpc = [r for r in rows if r["path"] == "/demo.Items/Get" and r["client_pid"] == fx["pid"]]
    assert [r["grpc_status"] for r in grpc] == [0, 0]   # HPACK still decodes after masking
    raw, _ = captures["raw"]
    assert [(m, _masked(p), s) for m, p, s in _requests(raw)] == _requests(captures["copy"][0])


def test_no_redact_keeps_everything_and_says_so(captures):
    raw, fx = captures["raw"]
    assert "--no-redact" in fx["stderr"]
    found = {s for _, s in find_secrets(raw, _secrets(fx))}
    assert found == set(_secrets(fx))   # the check can fail: each secret was where redaction looks
    m = json.loads(trace_cmd("info", str(raw), "--json", check=True).stdout)
    assert m["redaction"] == {"enabled": False} and m["options"]["redact"] is False


def test_trace_redact_copy_passes_the_same_check(captures):
    copy, fx = captures["copy"]
    assert find_secrets(copy, _secrets(fx)) == []
    assert stat.S_IMODE(os.stat(copy).st_mode) == 0o600
    assert "segments redacted" in captures["redact_stderr"]
    res = trace_cmd("info", "--strict", str(copy))   # every new segment matches the manifest's sha256
    assert res.returncode == 0 and "warning" not in res.stderr, res.stderr
    m = json.loads(trace_cmd("info", str(copy), "--json", check=True).stdout)
    assert m["redaction"]["applied_by"] == "trace redact" and m["redaction"]["at_capture"] == {"enabled": False}
    again = trace_cmd("redact", str(captures["raw"][0]), "-o", str(copy))
    assert again.returncode != 0 and "exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("which", ["redacted", "copy"])
def test_pcapng_export_opens_in_tshark_with_every_packet(captures, which):
    need_program("tshark")
    archive, fx = captures[which]
    out = captures["tmp"] / f"{which}.pcapng"
    trace_cmd("export", str(archive), "--format", "pcapng", "-o", str(out), check=True)
    assert not [s for s in _secrets(fx) if s.encode() in out.read_bytes()]
    rows = subprocess.run(["tshark", "-n", "-r", str(out), "-T", "fields", "-e", "frame.number"],
                          capture_output=True, text=True, check=True).stdout.split()
    n = json.loads(trace_cmd("query", str(archive), "SELECT count(*) AS n FROM net_packet", "--format", "json",
                             check=True).stdout)[0]["n"]
    assert len(rows) == n > 0
