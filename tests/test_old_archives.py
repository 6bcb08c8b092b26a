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
    assert _as_printed_then(json.loads(res.stdout), json.loads((DATA / f"{command}.json").read_text())) == \
        json.loads((DATA / f"{command}.json").read_text())


def _as_printed_then(now, then):
    """What today's output holds of what that version printed: everything it printed must be the same;
    what was added since (sections, row fields such as the correlation's ids) is left out."""
    if isinstance(now, dict) and isinstance(then, dict):
        return {k: _as_printed_then(now[k], then[k]) if k in now else None for k in then}
    if isinstance(now, list) and isinstance(then, list) and len(now) == len(then):
        return [_as_printed_then(a, b) for a, b in zip(now, then)]
    return now


def test_old_archive_info_reads_its_manifest():
    res = trace_cmd("info", str(DATA / "http_keepalive.tar.zst"), check=True)
    assert "format 1" in res.stdout and "sock" in res.stdout
