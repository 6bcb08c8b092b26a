"""Typed capture options: the manifest keeps the flat keys analyze reads, and each
option's default and limits come from one place (capture/options.py), which the CLI uses."""

from __future__ import annotations

from pathlib import Path

from helpers import trace_cmd

from uetrace.capture import options as o

# The keys archives have always had under "options" (analyze reads net_snaplen, alloc_sample...).
MANIFEST_KEYS = {"duration", "tracers", "pids", "comms", "snaplen", "ring_size", "segment_bytes", "segment_seconds",
                 "alloc_sample", "all_processes", "net_ifaces", "net_xdp_mode", "net_snaplen", "net_tc_attach",
                 "freq", "offcpu", "max_size", "redact", "sock_hooks"}


def test_manifest_options_keep_their_keys_and_values():
    opts = o.CaptureOptions(output=Path("x"), net=o.NetOptions(ifaces=["lo"], snaplen=64),
                            stack=o.StackOptions(freq=49, offcpu=True), uprobe=o.UprobeOptions(alloc_sample=8))
    m = opts.to_manifest()
    assert set(m) == MANIFEST_KEYS
    assert (m["net_ifaces"], m["net_snaplen"], m["freq"], m["offcpu"], m["alloc_sample"]) == (["lo"], 64, 49, True, 8)
    assert (m["snaplen"], m["net_xdp_mode"], m["net_tc_attach"], m["sock_hooks"]) == (512, "generic", "auto", "auto")
    assert m["redact"] is True and o.CaptureOptions(output=Path("x"), redaction=None).to_manifest()["redact"] is False


def test_bounds_clamp():
    assert o.SNAPLEN.clamp(10_000) == 4096 and o.SNAPLEN.clamp(-1) == 0
    assert o.ALLOC_SAMPLE.clamp(0) == 1 and o.ALLOC_SAMPLE.clamp(10**6) == 10**6


def test_cli_limits_come_from_the_options():
    out = trace_cmd("capture", "--help", check=True).stdout
    assert f"default: {o.SNAPLEN.default}; {o.SNAPLEN.min}<=x<={o.SNAPLEN.max}" in " ".join(out.split())
    res = trace_cmd("capture", "-d", "1s", "--net-snaplen", str(o.NET_SNAPLEN.max + 1))
    assert res.returncode != 0 and str(o.NET_SNAPLEN.max) in res.stderr
