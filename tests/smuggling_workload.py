"""Workload for tests/test_http_smuggling_capture.py: a raw socket client sends request-smuggling framing
(Content-Length with Transfer-Encoding, a duplicated Content-Length) between two plain requests, over
one keep-alive connection, to a Python HTTP server that frames as RFC 9112 says (chunked wins).

Usage: python3 smuggling_workload.py
The server runs in a child process (different pids, both ends captured). Prints one JSON line: pids,
port, and per request its method, path and the status the client read.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Each request is one write; the client reads the whole response before the next.
REQUESTS: list[tuple[str, str, bytes]] = [
    ("GET", "/before", b"GET /before HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"),
    # CL says 4, the chunked body is 15 bytes: a recipient that frames by CL reads "5\r\nh" and takes
    # "ello\r\n0..." as the next request. RFC 9112 6.3: Transfer-Encoding overrides Content-Length.
    ("POST", "/cl-te", b"POST /cl-te HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: 4\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
    ("POST", "/dup-cl", b"POST /dup-cl HTTP/1.1\r\nHost: smuggle.test\r\nContent-Length: 3\r\n"
                        b"Content-Length: 3\r\n\r\nabc"),
    ("GET", "/after", b"GET /after HTTP/1.1\r\nHost: smuggle.test\r\n\r\n"),
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (the base class's name)
        pass

    def _route(self) -> None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while (size := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        reply = b"got %d bytes" % len(body)
        self.send_response(200 if self.command == "GET" else 201)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = _route


def read_response(sock: socket.socket) -> int:
    """The status of one Content-Length-framed response, read whole."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096) or _closed()
    head, rest = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(rest) < length:
        rest += sock.recv(4096) or _closed()
    return int(head.split(b" ")[1])


def _closed() -> bytes:
    raise SystemExit("server closed the connection")


def main() -> None:
    if sys.argv[1:] == ["--serve"]:
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        print(srv.server_address[1], flush=True)
        srv.serve_forever()
        return
    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        done = []
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            for method, path, raw in REQUESTS:
                sock.sendall(raw)
                done.append({"method": method, "path": path, "status": read_response(sock)})
    finally:
        server.terminate()
        server.wait()
    print(json.dumps({"client_pid": os.getpid(), "server_pid": server.pid, "port": port, "requests": done}))


if __name__ == "__main__":
    main()
