"""Archives written by an earlier version still open and analyze the same.

tests/data/format1/ holds a capture made before the capture-overhead rework (see its
README) and what that version's analyzers printed for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import trace_cmd

DATA = Path(__file__).parent / "data" / "format1"


@pytest.mark.parametrize("command", ["requests", "flows", "analyze"])
def test_old_archive_gives_the_same_analysis(command):
    res = trace_cmd(command, str(DATA / "http_keepalive.tar.zst"), "--json", check=True)
    then = json.loads((DATA / f"{command}.json").read_text())
    assert known_fields(json.loads(res.stdout), then) == then


def known_fields(now, then):
    """`now` without the object keys `then` does not have: fields added since (an exchange's
    `anomalies`, ...) are new output, not a different analysis."""
    if isinstance(now, dict) and isinstance(then, dict):
        return {k: known_fields(v, then[k]) for k, v in now.items() if k in then}
    if isinstance(now, list) and isinstance(then, list) and len(now) == len(then):
        return [known_fields(a, b) for a, b in zip(now, then, strict=True)]
    return now


def test_old_archive_info_reads_its_manifest():
    res = trace_cmd("info", str(DATA / "http_keepalive.tar.zst"), check=True)
    assert "format 1" in res.stdout and "sock" in res.stdout
