"""Alloc tracer + leak analyzer on fixtures/leaky.c: exact leak sites, bytes and
counts; nothing freed reported; --alloc-sample estimates within 20%; --comm
attaches to a process started during the capture; no target -> not attached."""

from __future__ import annotations

import json
import signal
import time

import pytest
from c_fixtures import FixtureProcess, compile_fixture
from helpers import CaptureRun, require_kernel, trace_cmd

N_MALLOC, N_CALLOC, N_REALLOC, N_FREED = 100, 50, 20, 1000
SITES = {"leak_site_malloc": (100, 100), "leak_site_calloc": (256, 50), "leak_site_realloc": (512, 20)}


@pytest.fixture(scope="module")
def kernel_ok():
    require_kernel()


def _run_leaky(tmp, archive, leaky_args, capture_args, start_before_capture=True):
    """leaky: go -> leaks and frees -> (1.2 s) -> one young block -> stop the capture."""
    exe = compile_fixture("leaky", tmp)
    proc = FixtureProcess(exe, *leaky_args) if start_before_capture else None
    cap = CaptureRun(archive, "-t", "proc,alloc", *(("--pid", str(proc.pid)) if proc else ()), *capture_args)
    try:
        cap.wait_attached()
        if proc is None:
            proc = FixtureProcess(exe, *leaky_args)  # execs during the capture: found by --comm
            time.sleep(1.0)                          # the watcher polls every 0.2 s
        proc.step("done")
        time.sleep(1.2)
        proc.step("young")
        cap.signal(signal.SIGINT)
        rc, _, err = cap.wait()
        assert rc == 0, err
    finally:
        cap.kill()
        if proc:
            proc.close()
    return proc.pid


def _leaks(archive, *args) -> dict:
    return json.loads(trace_cmd("leaks", str(archive), "--json", *args, check=True).stdout)


def _site(group) -> str:
    top = group["frames"][0] if group["frames"] else ""
    return next((s for s in (*SITES, "young_site", "churn") if top.startswith(s + "+")), top)


def test_exact_leaks(kernel_ok, tmp_path):
    archive = tmp_path / "leaky.tar.zst"
    pid = _run_leaky(tmp_path, archive, [str(N_MALLOC), str(N_CALLOC), str(N_REALLOC), str(N_FREED)], [])
    report = _leaks(archive)
    groups = [g for g in report["groups"] if g["pid"] == pid]
    found = {_site(g): (g["bytes"], g["blocks"]) for g in groups}
    assert found == {s: (size * n, n) for s, (size, n) in SITES.items()}, groups
    assert len(groups) == 3  # exactly one stack per site, nothing from churn()
    assert report["unknown_frees"] == 0 and report["missed_frees"] == 0
    assert all(g["oldest_age_s"] >= 1.0 for g in groups)
    assert all(g["growth"][-1] == g["bytes"] for g in groups)
    # The young block is there, but only without --min-age.
    young = [g for g in _leaks(archive, "--min-age", "0")["groups"] if _site(g) == "young_site"]
    assert [(g["bytes"], g["blocks"]) for g in young] == [(777, 1)]
    text = trace_cmd("analyze", str(archive), "--only", "leaks", check=True).stdout
    assert "leak_site_calloc" in text


def test_sampled_estimate_and_comm_attach(kernel_ok, tmp_path):
    n_malloc, rate = 4000, 8
    archive = tmp_path / "sampled.tar.zst"
    _run_leaky(tmp_path, archive, [str(n_malloc), "400", "100", "2000"],
               ["--comm", "leaky", "--alloc-sample", str(rate)], start_before_capture=False)
    report = _leaks(archive)
    assert report["sample_rate"] == rate
    by_site = {_site(g): g for g in report["groups"]}
    est = by_site["leak_site_malloc"]["bytes"]
    assert abs(est - n_malloc * 100) <= 0.2 * n_malloc * 100, est
    truth = n_malloc * 100 + 400 * 256 + 100 * 512
    assert abs(report["leaked_bytes"] - truth) <= 0.2 * truth, report["leaked_bytes"]
    assert "churn" not in by_site


def test_no_target_means_not_attached(kernel_ok, tmp_path):
    archive = tmp_path / "none.tar.zst"
    trace_cmd("capture", "-q", "-d", "1s", "-t", "proc,lock,alloc", "-o", str(archive), check=True)
    tracers = json.loads(trace_cmd("info", str(archive), "--json", check=True).stdout)["tracers"]
    for name in ("lock", "alloc"):
        assert tracers[name]["attached"] is False
        assert "no target process" in tracers[name]["reason"]
