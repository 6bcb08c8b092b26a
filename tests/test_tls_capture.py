"""The TLS tracer: plaintext of real HTTPS exchanges over 127.0.0.1, captured by uprobes on libssl.

One capture (module fixture) records two exchanges with a Python ssl server: a Python client
(SSL_write_ex/SSL_read_ex) and curl (SSL_write/SSL_read). The plaintext in tls_data must be exactly
what each end wrote and read, on the fd and ports of the ciphertext the socket tracer saw.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from helpers import CaptureRun, require_kernel, run_fixture

from uetrace.analyze.archive_db import open_archive_db
from uetrace.analyze.http import analyze_http
from uetrace.bpf import object_path
from uetrace.capture.btf import Btf
from uetrace.capture.options import CaptureOptions
from uetrace.capture.records import kinds_from_btf
from uetrace.capture.tracers import tls as tls_tracer
from uetrace.capture.tracers.contract import NotAttached

SSL_READ, SSL_WRITE, SSL_READ_EX, SSL_WRITE_EX = 21, 22, 23, 24
SECRET = b"uetrace-secret"


def make_cert(folder: Path) -> None:
    """A throwaway self-signed certificate (EC P-256: generated in milliseconds)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "1",
                    "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module", params=["auto", "syscalls"], ids=["socket-tracepoints", "syscall-hooks"])
def tls_capture(request, tmp_path_factory) -> tuple[Path, dict, dict]:
    """(archive, Python-client exchange, curl exchange). Module scope: one capture for all the
    tests below, as captures are the slow part (the kernel fixture is function-scoped). Once with
    the socket learnt from the socket tracepoints, once from the system-call object that kernels
    without them load (capture/socket_hooks.py)."""
    require_kernel()
    for tool in ("openssl", "curl"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is needed by the TLS capture test (apt-get install {tool})")
    tmp = tmp_path_factory.mktemp("tls")
    make_cert(tmp)
    out = tmp / "run.tar.zst"
    # --no-redact: these tests compare the plaintext byte for byte (the query value included);
    # test_redaction_capture.py checks what redaction does to TLS plaintext.
    run = CaptureRun(out, "-d", "7s", "--tracers", "sock,tls,proc", "--no-redact", "--sock-hooks", request.param)
    try:
        run.wait_attached()
        result: dict = {}

        def workload() -> None:
            result["python"] = run_fixture("tls_exchange.py", "--cert-dir", str(tmp), "--path", "/py/secret?x=1")
            result["curl"] = run_fixture("tls_exchange.py", "--cert-dir", str(tmp), "--client", "curl",
                                         "--path", "/curl/secret")

        t = threading.Thread(target=workload)
        t.start()
        t.join()
        rc, _, err = run.wait()
        assert rc == 0, err
    finally:
        run.kill()
    return out, result["python"], result["curl"]


def plaintext(cap, pid: int, lport: int, direction: int) -> tuple[bytes, set, set, set]:
    """The bytes one end moved in one direction, in order, and the fds, sock_ids and SSL functions."""
    rows = cap.query("SELECT payload, captured, bytes, fd, sock_id, syscall FROM tls_data "
                     "WHERE pid = ? AND lport = ? AND direction = ? ORDER BY ts_enter", [pid, lport, direction])
    assert all(r[1] == r[2] for r in rows), "payload truncated: raise --snaplen in the test"
    return (b"".join(bytes(r[0]) for r in rows), {r[3] for r in rows}, {r[4] for r in rows},
            {r[5] for r in rows})


def ciphertext_socket(cap, pid: int, lport: int, rport: int) -> tuple[set, set, bytes]:
    """fds, sock_ids and all payload bytes of the socket tracer's rows for one end."""
    rows = cap.query("SELECT fd, sock_id, payload FROM sock_data WHERE pid = ? AND lport = ? AND rport = ?",
                     [pid, lport, rport])
    assert rows, f"no sock_data for pid {pid} {lport}->{rport}"
    return {r[0] for r in rows}, {r[1] for r in rows}, b"".join(bytes(r[2]) for r in rows)


def test_python_client_and_server_plaintext(tls_capture):
    out, fx, _ = tls_capture
    request, response = bytes.fromhex(fx["client_request"]), bytes.fromhex(fx["client_response"])
    assert SECRET in response and request.startswith(b"GET /py/secret?x=1 HTTP/1.1\r\n")
    pid, sport, cport = fx["pid"], fx["server_port"], fx["client_port"]
    with open_archive_db(out) as cap:
        assert cap.manifest["tracers"]["tls"]["attached"], cap.manifest["tracers"]["tls"]
        assert cap.manifest["tracers"]["tls"]["lost"] == 0
        ends = {  # lport -> (fd, bytes written, bytes read)
            cport: (fx["client_fd"], request, response),
            sport: (fx["server_fd"], response, request),
        }
        for lport, (fd, sent, received) in ends.items():
            rport = sport if lport == cport else cport
            w, w_fds, w_ids, w_fns = plaintext(cap, pid, lport, 0)
            r, r_fds, r_ids, r_fns = plaintext(cap, pid, lport, 1)
            assert (w, r) == (sent, received)
            assert w_fds == r_fds == {fd}
            assert (w_fns, r_fns) == ({SSL_WRITE_EX}, {SSL_READ_EX})  # what CPython's ssl module calls
            # The same socket as the ciphertext: same fd and, by the shared key, the same sock_id.
            c_fds, c_ids, cipher = ciphertext_socket(cap, pid, lport, rport)
            assert c_fds == {fd} and c_ids == w_ids == r_ids
            assert SECRET not in cipher and b"GET /py" not in cipher
        rports = cap.query("SELECT DISTINCT rport, raddr, laddr FROM tls_data WHERE pid = ? AND lport = ?",
                           [pid, cport])
        assert rports == [(sport, "127.0.0.1", "127.0.0.1")]


def test_curl_plaintext(tls_capture):
    out, _, fx = tls_capture
    request, response = bytes.fromhex(fx["server_request"]), bytes.fromhex(fx["server_response"])
    assert request.startswith(b"GET /curl/secret HTTP/1.1\r\n") and b"User-Agent: curl/" in request
    curl, sport, cport = fx["client_pid"], fx["server_port"], fx["client_port"]
    with open_archive_db(out) as cap:
        w, w_fds, w_ids, w_fns = plaintext(cap, curl, cport, 0)
        r, r_fds, r_ids, r_fns = plaintext(cap, curl, cport, 1)
        assert (w, r) == (request, response)
        assert (w_fns, r_fns) == ({SSL_WRITE}, {SSL_READ})  # curl uses the int variants
        c_fds, c_ids, cipher = ciphertext_socket(cap, curl, cport, sport)
        assert w_fds == r_fds == c_fds and len(c_fds) == 1
        assert w_ids == r_ids == c_ids
        assert SECRET not in cipher and b"GET /curl" not in cipher
        # The server end of the same connection, in the fixture's process.
        sr, s_fds, _, _ = plaintext(cap, fx["pid"], sport, 1)
        assert sr == request and s_fds == {fx["server_fd"]}


def test_http_analyzer_decodes_the_plaintext(tls_capture):
    out, py, curl = tls_capture
    with open_archive_db(out) as cap:
        res = analyze_http(cap.con)
    paths = {e.path: e for e in res.exchanges}
    for path, fx in (("/py/secret?x=1", py), ("/curl/secret", curl)):
        e = paths[path]
        assert (e.method, e.status, e.tls) == ("GET", 200, True)
        assert fx["client_pid"] in (e.client_pid, e.server_pid)
    assert all(t.decrypted for t in res.tls if t.server.endswith(f":{py['server_port']}")
               or t.server.endswith(f":{curl['server_port']}"))


def test_tls_and_sock_records_have_identical_fields():
    """tls.h copies struct ue_sock_data so that tls_data and sock_data have the same columns."""
    tls = Btf.from_object(object_path("tls"))
    sock = Btf.from_object(object_path("sock"))
    assert tls.struct("ue_tls_data").fields == sock.struct("ue_sock_data").fields
    assert tls.struct("ue_tls_data").size == sock.struct("ue_sock_data").size
    (kind,) = kinds_from_btf(tls, ["ue_tls_data"])
    assert (kind.name, kind.kind_id) == ("tls_data", 3)


def test_no_libssl_is_not_attached(monkeypatch, tmp_path):
    monkeypatch.setattr(tls_tracer, "find_libssl", lambda exclude=0: [])
    with pytest.raises(NotAttached, match="no libssl found"):
        tls_tracer.TlsTracer(CaptureOptions(output=tmp_path / "x")).check()


def test_find_libssl_skips_nss_and_duplicates(monkeypatch, tmp_path):
    """Only OpenSSL's libssl.so.3/.so.1.1, one path per file (/lib is often /usr/lib)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libssl.so.3").write_bytes(b"")
    (lib / "libssl3.so").write_bytes(b"")  # NSS, not OpenSSL
    (lib / "libssl.so").symlink_to("libssl.so.3")
    (tmp_path / "lib64").symlink_to(lib)
    monkeypatch.setattr(tls_tracer, "_LIB_DIRS", (str(lib), str(tmp_path / "lib64")))
    monkeypatch.setattr(tls_tracer, "_mapped_libssl", lambda exclude: [])
    assert tls_tracer.find_libssl() == [str(lib / "libssl.so.3")]
