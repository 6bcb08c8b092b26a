"""Typed reads of an archive's manifest: the clock anchors, the recording window, tracers and options.

The manifest is untrusted JSON of any age (a killed capture leaves the first one, without end or
detach anchors): every accessor gives None or an empty value for what is missing or malformed, so an
analyzer never digs through nested `.get(..., {})` chains itself.
"""

from __future__ import annotations

from typing import Any


class ManifestInfo:
    def __init__(self, manifest: dict):
        self.raw = manifest

    def _clock(self, anchor: str) -> dict:
        clock = self.raw.get("clock")
        value = clock.get(anchor) if isinstance(clock, dict) else None
        return value if isinstance(value, dict) else {}

    def monotonic_ns(self, anchor: str) -> int | None:
        """CLOCK_MONOTONIC ns at a clock anchor ("start", "attached", "detached", "end")."""
        return _ns(self._clock(anchor).get("monotonic_ns"))

    @property
    def start_ns(self) -> int | None:
        return self.monotonic_ns("start")

    @property
    def stop_ns(self) -> int | None:
        """When recording stopped (programs detached), else when the archive was closed."""
        return self.monotonic_ns("detached") or self.monotonic_ns("end")

    @property
    def realtime_offset_ns(self) -> int:
        """CLOCK_REALTIME - CLOCK_MONOTONIC at the start (0 when unknown): adds to a record's ts for wall time."""
        start = self._clock("start")
        return (_ns(start.get("realtime_ns")) or 0) - (_ns(start.get("monotonic_ns")) or 0)

    @property
    def recording_window(self) -> tuple[str, str] | None:
        """The clock anchors between which every tracer was recording: attached -> detached when the
        capture recorded them, else start -> end (the whole run, attach and symbol snapshots included);
        as archive_format.recording_window, for manifests of any shape."""
        for a, b in (("attached", "detached"), ("start", "detached"), ("start", "end")):
            if self.monotonic_ns(a) is not None and self.monotonic_ns(b) is not None:
                return a, b
        return None

    @property
    def recording_seconds(self) -> float | None:
        window = self.recording_window
        if window is None:
            return None
        return (self.monotonic_ns(window[1]) - self.monotonic_ns(window[0])) / 1e9  # type: ignore[operator]

    @property
    def complete(self) -> bool:
        return bool(self.raw.get("complete"))

    @property
    def tracers(self) -> dict[str, dict]:
        t = self.raw.get("tracers")
        return {k: v for k, v in t.items() if isinstance(v, dict)} if isinstance(t, dict) else {}

    def tracer(self, name: str) -> dict:
        return self.tracers.get(name, {})

    def tracer_stats(self, name: str) -> dict:
        stats = self.tracer(name).get("stats")
        return stats if isinstance(stats, dict) else {}

    def option(self, name: str, default: Any = None) -> Any:
        opts = self.raw.get("options")
        return opts.get(name, default) if isinstance(opts, dict) else default

    @property
    def host(self) -> dict:
        h = self.raw.get("host")
        return h if isinstance(h, dict) else {}

    def text(self, key: str) -> str | None:
        """A top-level scalar as text (tool_version, format_version...), None when absent or not a scalar."""
        return _scalar(self.raw.get(key))

    def host_text(self, key: str) -> str | None:
        return _scalar(self.host.get(key))

    @property
    def command_line(self) -> list[str]:
        cl = self.raw.get("command_line")
        return [str(a) for a in cl if _scalar(a) is not None] if isinstance(cl, list) else []

    @property
    def segments(self) -> list[dict]:
        """The segments the manifest lists, each {member, kind, rows, bytes}, malformed entries left out."""
        segs = self.raw.get("segments")
        out = []
        for s in segs if isinstance(segs, list) else []:
            if (isinstance(s, dict) and isinstance(s.get("kind"), str)
                    and all(as_count(s.get(k)) is not None for k in ("rows", "bytes"))):
                out.append({"member": str(s.get("member", "")), "kind": s["kind"], "rows": s["rows"],
                            "bytes": s["bytes"]})
        return out

    @property
    def redaction_text(self) -> str:
        """One line on what redaction the archive had: on (with the values masked), off, or unknown
        (archives from before redaction)."""
        red = self.raw.get("redaction")
        if not isinstance(red, dict) or not isinstance(red.get("enabled"), bool):
            return "redaction: not recorded (an archive from before redaction: payloads are as captured)"
        if not red["enabled"]:
            return "redaction: off (captured with --no-redact: payloads and command lines hold any secrets)"
        masked = red.get("masked")
        counts = {str(k): as_count(v) for k, v in masked.items()} if isinstance(masked, dict) else {}
        parts = ", ".join(f"{v:,} in {k}" for k, v in sorted(counts.items()) if v)
        how = " by trace redact" if red.get("applied_by") == "trace redact" else ""
        return f"redaction: on{how}, {parts or 'nothing'} masked"

    @property
    def net_snaplen(self) -> int:
        return as_count(self.option("net_snaplen")) or 0

    @property
    def alloc_sample(self) -> int:
        """1 in N heap blocks the alloc tracer kept (1: all)."""
        return as_count(self.tracer_stats("alloc").get("alloc_sample")) or as_count(self.option("alloc_sample")) or 1


def _ns(v: object) -> int | None:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not v or v != v or abs(v) > 1 << 64:
        return None
    return int(v)


def as_count(v: object) -> int | None:
    """A non-negative integer, else None (JSON gives floats, strings, booleans too)."""
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def _scalar(v: object) -> str | None:
    return str(v) if isinstance(v, (str, int, float)) and not isinstance(v, bool) else None
