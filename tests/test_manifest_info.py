"""Typed reads of a manifest: what a complete, a killed and a malformed capture give."""

from __future__ import annotations

from uetrace.analyze.manifest_info import ManifestInfo

COMPLETE = {
    "complete": True,
    "clock": {"start": {"monotonic_ns": 1_000, "realtime_ns": 5_000}, "attached": {"monotonic_ns": 2_000},
              "detached": {"monotonic_ns": 3_000_002_000}, "end": {"monotonic_ns": 4_000_000_000}},
    "tracers": {"alloc": {"attached": True, "stats": {"alloc_sample": 4}}, "bad": "not a dict"},
    "options": {"net_snaplen": 128, "alloc_sample": 2},
    "host": {"kernel": "6.18"},
}


def test_complete_capture():
    info = ManifestInfo(COMPLETE)
    assert (info.start_ns, info.stop_ns, info.realtime_offset_ns) == (1_000, 3_000_002_000, 4_000)
    assert info.recording_window == ("attached", "detached") and info.recording_seconds == 3.0
    assert info.complete and list(info.tracers) == ["alloc"]
    assert info.alloc_sample == 4  # the tracer's own figure wins over the option
    assert (info.net_snaplen, info.host["kernel"], info.option("missing", 7)) == (128, "6.18", 7)


def test_killed_capture_has_no_stop():
    info = ManifestInfo({"complete": False, "clock": {"start": {"monotonic_ns": 1_000}}})
    assert (info.start_ns, info.stop_ns, info.recording_window, info.recording_seconds) == (1_000, None, None, None)
    assert (info.complete, info.tracers, info.alloc_sample, info.net_snaplen) == (False, {}, 1, 0)


def test_malformed_manifest_reads_as_missing():
    info = ManifestInfo({"clock": "yesterday", "tracers": [], "options": None, "host": 3})
    assert (info.start_ns, info.stop_ns, info.realtime_offset_ns, info.recording_seconds) == (None, None, 0, None)
    assert (info.tracers, info.tracer_stats("stack"), info.host, info.option("x")) == ({}, {}, {}, None)
    info = ManifestInfo({"clock": {"start": {"monotonic_ns": "soon", "realtime_ns": 9}, "end": []}})
    assert (info.start_ns, info.stop_ns, info.realtime_offset_ns, info.recording_seconds) == (None, None, 9, None)
