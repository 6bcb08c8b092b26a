"""The correlation result as OTLP/JSON traces (an ExportTraceServiceRequest in the protobuf JSON
mapping, with OTLP's own rules): what the OpenTelemetry Collector's otlpjson receiver and Jaeger import.

OTLP/JSON differs from protobuf's canonical JSON in two ways that matter here: trace and span ids are
lowercase hex strings (not base64), and enums are integers. 64-bit integers (times, intValue) are
decimal strings. One resourceSpans per traced process (service.name is its comm), spans named and
attributed after the HTTP and RPC semantic conventions; uetrace's own evidence goes under `uetrace.*`.
Times are wall clock: the capture's CLOCK_MONOTONIC plus the offset recorded at its start.
"""

from __future__ import annotations

from typing import Any

from uetrace import __version__
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.correlate.result import CLIENT, CorrelationResult, Request, Span
from uetrace.analyze.correlate.windows import split_addr

SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 2, 3
STATUS_UNSET, STATUS_ERROR = 0, 2


def _attr(key: str, value: Any) -> dict | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        v: dict = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    elif isinstance(value, float):
        v = {"doubleValue": value}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


def _attrs(pairs: list[tuple[str, Any]]) -> list[dict]:
    return [a for a in (_attr(k, v) for k, v in pairs) if a is not None]


def _span_json(r: Request, s: Span, offset_ns: int) -> dict:
    e = r.exchange
    server = split_addr(e.server) or ("", None)
    client = split_addr(e.client) or ("", None)
    grpc = e.protocol == "grpc"
    version = {"http/1.1": "1.1", "http/1.0": "1.0", "h2": "2", "grpc": "2"}.get(e.protocol)
    pairs: list[tuple[str, Any]] = [
        ("network.protocol.name", "http"), ("network.protocol.version", version),
        ("server.address", server[0]), ("server.port", server[1]),
        ("client.address", client[0]), ("client.port", client[1]),
        ("thread.id", s.window.tid), ("process.pid", s.window.pid)]
    if grpc:
        pairs += [("rpc.system", "grpc"), ("rpc.service", e.grpc_service), ("rpc.method", e.grpc_method),
                  ("rpc.grpc.status_code", e.grpc_status)]
    pairs += [("http.request.method", e.method or None), ("url.path", e.path.split("?", 1)[0] or None),
              ("url.query", e.path.split("?", 1)[1] if "?" in e.path else None),
              ("http.response.status_code", e.status)]
    ev = s.evidence
    pairs += [("uetrace.request_id", r.request_id), ("uetrace.link", s.link or None),
              ("uetrace.window_exact", s.window.exact), ("uetrace.cpu_ms", ev.cpu_ms),
              ("uetrace.cpu_samples", ev.cpu_samples), ("uetrace.offcpu_ms", ev.offcpu_ms),
              ("uetrace.lock_wait_ms", ev.lock_wait_ms), ("uetrace.alloc_bytes", ev.alloc_bytes),
              ("uetrace.outstanding_bytes", ev.outstanding_bytes), ("uetrace.packets", ev.packets),
              ("uetrace.retransmits", ev.retransmits), ("uetrace.handshake_rtt_ms", ev.handshake_rtt_ms)]
    error = (e.grpc_status not in (None, 0)) or (e.status is not None and (
        e.status >= 500 or (s.side == CLIENT and e.status >= 400)))
    out = {"traceId": s.trace_id, "spanId": s.span_id, "name": r.endpoint,
           "kind": SPAN_KIND_CLIENT if s.side == CLIENT else SPAN_KIND_SERVER,
           "startTimeUnixNano": str(s.window.start_ts + offset_ns),
           "endTimeUnixNano": str(s.window.end_ts + offset_ns),
           "attributes": _attrs(pairs),
           "status": {"code": STATUS_ERROR if error else STATUS_UNSET}}
    if s.parent_span_id:
        out["parentSpanId"] = s.parent_span_id
    if ev.notes:
        out["events"] = [{"timeUnixNano": str(s.window.end_ts + offset_ns), "name": "uetrace.note",
                          "attributes": _attrs([("message", n)])} for n in ev.notes]
    return out


def to_otlp(db: ArchiveDb, result: CorrelationResult, offset_ns: int | None = None) -> dict:
    """ExportTraceServiceRequest as OTLP/JSON. offset_ns: what turns the capture's CLOCK_MONOTONIC into
    the wall time to report (default: its manifest's anchors; several hosts: also their clock offset)."""
    offset = db.info.realtime_offset_ns if offset_ns is None else offset_ns
    comms = db.process_names()
    host = (db.manifest.get("host") or {}).get("hostname")
    by_pid: dict[int, list[dict]] = {}
    for r in result.requests:
        for s in r.spans:
            by_pid.setdefault(s.window.pid, []).append(_span_json(r, s, offset))
    resource_spans = []
    for pid in sorted(by_pid):
        resource = {"attributes": _attrs([("service.name", comms.get(pid) or f"pid {pid}"), ("process.pid", pid),
                                          ("host.name", host)])}
        resource_spans.append({"resource": resource,
                               "scopeSpans": [{"scope": {"name": "uetrace", "version": __version__},
                                               "spans": by_pid[pid]}]})
    return {"resourceSpans": resource_spans}
