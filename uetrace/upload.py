"""Sending an archive to a remote endpoint: one HTTPS PUT, certificate verified, retried, checked.

A presigned S3 or GCS URL is such a PUT, so object storage needs no cloud SDK. The body is sent with a
Content-Length (object stores refuse chunked uploads) from the file, never read whole into memory.
What arrived is checked by reading it back (length and sha256); a server that refuses to be read back
(a presigned PUT URL allows nothing else) is checked by its ETag when that is the body's MD5, as S3's is
for a single PUT. Only a checked upload is "verified"; an unchecked one says so.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uetrace.errors import BadInputError, UetraceError

CHUNK = 1 << 20
# Statuses worth another attempt: the server or a proxy was busy or timed out, not our request.
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class UploadError(UetraceError):
    """The upload did not complete (after its retries), or what arrived differs from the file."""


@dataclass(frozen=True)
class UploadOptions:
    ca_cert: Path | None = None  # a private CA's certificate (PEM); default: the system's trust store
    insecure: bool = False  # allow plain http:// (TLS is never downgraded: https always verifies)
    attempts: int = 4
    backoff_s: float = 1.0  # doubled after each failed attempt
    timeout_s: float = 30.0  # per socket operation, not for the whole transfer


@dataclass(frozen=True)
class UploadResult:
    url: str  # without its query: a presigned URL's signature is a secret
    bytes: int
    sha256: str
    attempts: int
    verified_by: str  # "read-back", "etag", or "" when the server offered no way to check


def public_url(url: str) -> str:
    """The URL as it may be printed: no userinfo, no query (presigned signatures and tokens)."""
    u = urllib.parse.urlsplit(url)
    host = u.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    port = u.netloc.rpartition("@")[2].rpartition("]")[2].partition(":")[2]
    if port:
        netloc += f":{port}"
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))


def upload(path: Path, url: str, opts: UploadOptions = UploadOptions(),
           on_progress: Callable[[int, int], None] | None = None) -> UploadResult:
    """PUT `path` to `url`; retry on network errors and busy statuses; then check what arrived.
    `on_progress(sent, total)` is called as the body goes out (it restarts at 0 on a retry)."""
    target = _parse(url, opts)
    try:
        total = path.stat().st_size
        sha256, md5 = _digests(path)
    except OSError as e:
        raise BadInputError(f"{path}: {e.strerror or e}") from None
    context = _tls_context(opts) if target.scheme == "https" else None
    failure = ""
    for attempt in range(1, opts.attempts + 1):
        if attempt > 1:
            time.sleep(opts.backoff_s * 2 ** (attempt - 2))
        try:
            status, reason, etag = _put(target, path, total, context, opts.timeout_s, on_progress)
        except ssl.SSLCertVerificationError as e:
            # Another attempt meets the same certificate: no retry.
            raise UploadError(f"{public_url(url)}: server certificate not trusted ({e.verify_message}); "
                              "give its CA with --ca-cert") from None
        except (OSError, http.client.HTTPException) as e:
            failure = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            continue
        if 200 <= status < 300:
            verified_by = _verify(target, context, opts.timeout_s, total, sha256, md5, etag, url)
            return UploadResult(public_url(url), total, sha256, attempt, verified_by)
        failure = f"HTTP {status} {reason}"
        if status not in RETRY_STATUSES:
            break
    raise UploadError(f"{public_url(url)}: upload failed after {attempt} attempt(s): {failure}")


def check_url(url: str, opts: UploadOptions = UploadOptions()) -> None:
    """Refuse a URL `upload` would refuse (not https, bad port, no host), and an unreadable
    --ca-cert, without sending anything."""
    if _parse(url, opts).scheme == "https":
        _tls_context(opts)


def _parse(url: str, opts: UploadOptions) -> urllib.parse.SplitResult:
    try:
        u = urllib.parse.urlsplit(url)
        u.port  # noqa: B018 (the property validates the port)
    except ValueError:
        raise BadInputError("URL: not valid (bad port or host)") from None
    if u.scheme not in ("https", "http") or not u.hostname:
        raise BadInputError(f"{public_url(url) or url!r}: not an https:// URL")
    if u.scheme == "http" and not opts.insecure:
        raise BadInputError(f"{public_url(url)}: plain http would send the capture unencrypted; "
                            "use https:// (`trace upload --insecure` allows it)")
    return u


def _tls_context(opts: UploadOptions) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=str(opts.ca_cert) if opts.ca_cert else None)
    except (OSError, ssl.SSLError) as e:
        raise BadInputError(f"--ca-cert {opts.ca_cert}: not a readable PEM certificate ({e})") from None


def _connection(u: urllib.parse.SplitResult, context: ssl.SSLContext | None,
                timeout_s: float) -> http.client.HTTPConnection:
    if context is None:
        return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout_s)
    return http.client.HTTPSConnection(u.hostname, u.port, timeout=timeout_s, context=context)


def _request_target(u: urllib.parse.SplitResult) -> str:
    return (u.path or "/") + (f"?{u.query}" if u.query else "")


def _digests(path: Path) -> tuple[str, str]:
    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
    return sha.hexdigest(), md5.hexdigest()


def _put(u: urllib.parse.SplitResult, path: Path, total: int, context: ssl.SSLContext | None, timeout_s: float,
         on_progress: Callable[[int, int], None] | None) -> tuple[int, str, str]:
    conn = _connection(u, context, timeout_s)
    try:
        conn.putrequest("PUT", _request_target(u), skip_accept_encoding=True)
        conn.putheader("Content-Length", str(total))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        sent = 0
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                conn.send(chunk)
                sent += len(chunk)
                if on_progress:
                    on_progress(sent, total)
        resp = conn.getresponse()
        resp.read()
        return resp.status, resp.reason, (resp.getheader("ETag") or "").strip('"')
    finally:
        conn.close()


def _verify(u: urllib.parse.SplitResult, context: ssl.SSLContext | None, timeout_s: float, total: int,
            sha256: str, md5: str, etag: str, url: str) -> str:
    conn = _connection(u, context, timeout_s)
    try:
        conn.request("GET", _request_target(u))
        resp = conn.getresponse()
        if resp.status == 200:
            got, n = hashlib.sha256(), 0
            while chunk := resp.read(CHUNK):
                got.update(chunk)
                n += len(chunk)
            if n != total or got.hexdigest() != sha256:
                raise UploadError(f"{public_url(url)}: what arrived differs from the file "
                                  f"({n} of {total} bytes read back, sha256 {got.hexdigest()[:16]}...)")
            return "read-back"
        resp.read()
    except (OSError, http.client.HTTPException):
        pass  # reading back is a courtesy of the server; the ETag may still tell
    finally:
        conn.close()
    if etag and etag.lower() == md5:
        return "etag"
    if etag and len(etag) == 32 and all(c in "0123456789abcdef" for c in etag.lower()):
        raise UploadError(f"{public_url(url)}: the server's ETag {etag} is not the file's MD5 {md5}")
    return ""
