"""`trace upload` against Debian's nginx as the remote endpoint: TLS with a CA made here, WebDAV PUT."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from helpers import need_program, trace_cmd

from uetrace.upload import UploadError, UploadOptions, upload

NGINX_CONF = """
daemon off;
master_process on;
worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {d}/server.pem;
        ssl_certificate_key {d}/server.key;
        root {d}/www;
        client_max_body_size 0;
        dav_methods PUT;
        create_full_put_path on;
    }}
}}
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_ca(d: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
             "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def _make_server_cert(d: Path, ca: str) -> None:
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=127.0.0.1",
             "-keyout", "server.key", "-out", "server.csr", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "1", "-extfile", "san.ext", "-out", "server.pem", cwd=d)


class Nginx:
    def __init__(self, d: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.d, self.port, self.proc = d, s.getsockname()[1], None
        (d / "www").mkdir(exist_ok=True)
        (d / "nginx.conf").write_text(NGINX_CONF.format(d=d, port=self.port))

    def start(self) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen([nginx, "-c", str(self.d / "nginx.conf"), "-e", str(self.d / "error.log")],
                                     start_new_session=True, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            assert self.proc.poll() is None, (self.d / "error.log").read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "nginx did not start listening"
                time.sleep(0.05)

    def kill(self) -> None:
        """Master and worker at once, mid-request: what a crash or a pulled cable looks like."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/bugs/{name}"


@pytest.fixture
def server(tmp_path):
    need_program("nginx")
    need_program("openssl")
    _make_ca(tmp_path, "ca")
    _make_server_cert(tmp_path, "ca")
    _make_ca(tmp_path, "other-ca")
    n = Nginx(tmp_path)
    n.start()
    yield n
    n.kill()


def _archive(tmp_path: Path, size: int) -> Path:
    p = tmp_path / "run.tar.zst"
    p.write_bytes(os.urandom(size))
    return p


def test_upload_arrives_byte_for_byte(server, tmp_path):
    src = _archive(tmp_path, 3 << 20)
    res = trace_cmd("upload", str(src), server.url("run.tar.zst") + "?X-Amz-Signature=s3cr3t", "--ca-cert",
                    str(tmp_path / "ca.pem"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "www/bugs/run.tar.zst").read_bytes() == src.read_bytes()
    assert hashlib.sha256(src.read_bytes()).hexdigest() in res.stderr
    assert "read back and matched" in res.stderr
    assert "s3cr3t" not in res.stderr  # a presigned URL's signature is never printed


def test_certificate_of_another_ca_is_refused(server, tmp_path):
    src = _archive(tmp_path, 4096)
    res = trace_cmd("upload", str(src), server.url("x"), "--ca-cert", str(tmp_path / "other-ca.pem"))
    assert res.returncode == 1
    assert len(res.stderr.strip().splitlines()) == 1 and "certificate not trusted" in res.stderr
    assert not (tmp_path / "www/bugs/x").exists()
    # Without --ca-cert the system's trust store does not know the test CA either.
    res = trace_cmd("upload", str(src), server.url("x"))
    assert res.returncode == 1 and "certificate not trusted" in res.stderr


def test_plain_http_refused_without_insecure(tmp_path):
    src = _archive(tmp_path, 16)
    res = trace_cmd("upload", str(src), "http://127.0.0.1:9/x")
    assert res.returncode == 2 and "--insecure" in res.stderr and len(res.stderr.splitlines()) == 1


def _kill_at(server: Nginx, fraction: float, then=None):
    fired = []

    def on_progress(sent: int, total: int) -> None:
        if not fired and sent >= total * fraction:
            fired.append(sent)
            server.kill()
            if then:
                then()
    return on_progress, fired


def test_interrupted_upload_is_retried_then_reported(server, tmp_path):
    src = _archive(tmp_path, 32 << 20)
    on_progress, fired = _kill_at(server, 0.25)
    t0 = time.monotonic()
    with pytest.raises(UploadError, match=r"failed after 3 attempt\(s\)"):
        upload(src, server.url("run.tar.zst"), UploadOptions(ca_cert=tmp_path / "ca.pem", attempts=3,
                                                             backoff_s=0.1, timeout_s=5), on_progress)
    assert fired and time.monotonic() - t0 < 30
    assert not (tmp_path / "www/bugs/run.tar.zst").exists()


def test_interrupted_upload_succeeds_when_the_server_returns(server, tmp_path):
    src = _archive(tmp_path, 32 << 20)
    restart = threading.Timer(0.3, server.start)
    on_progress, fired = _kill_at(server, 0.25, then=restart.start)
    res = upload(src, server.url("run.tar.zst"), UploadOptions(ca_cert=tmp_path / "ca.pem", attempts=4,
                                                               backoff_s=1.0, timeout_s=5), on_progress)
    restart.join()
    assert fired and res.attempts >= 2 and res.verified_by == "read-back"
    assert (tmp_path / "www/bugs/run.tar.zst").read_bytes() == src.read_bytes()


def test_capture_then_upload(kernel, server, tmp_path):
    out = tmp_path / "cap.tar.zst"
    res = trace_cmd("capture", "-q", "-d", "1s", "-t", "proc", "-o", str(out), "--upload", server.url("cap.tar.zst"),
                    "--upload-ca-cert", str(tmp_path / "ca.pem"))
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "www/bugs/cap.tar.zst").read_bytes() == out.read_bytes()
    assert "uploaded" in res.stderr and "checked" in res.stderr
    # An upload that fails leaves the capture where it was written, and says so.
    again = tmp_path / "again.tar.zst"
    res = trace_cmd("capture", "-q", "-d", "1s", "-t", "proc", "-o", str(again), "--upload",
                    server.url("again.tar.zst"), "--upload-ca-cert", str(tmp_path / "other-ca.pem"))
    assert res.returncode == 1 and "certificate not trusted" in res.stderr and f"kept at {again}" in res.stderr
    assert again.exists() and not (tmp_path / "www/bugs/again.tar.zst").exists()


def test_capture_refuses_a_bad_upload_url_before_recording(kernel, tmp_path):
    out = tmp_path / "x.tar.zst"
    res = trace_cmd("capture", "-q", "-d", "1s", "-t", "proc", "-o", str(out), "--upload", "ftp://h/x")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert not out.exists() and not Path(str(out) + ".partial").exists()
