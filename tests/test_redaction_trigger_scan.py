"""The redaction's cheap test (uetrace/redaction/trigger_scan.py) against the single RE2 pattern it
replaced, on arbitrary batches (hypothesis): no row the pattern matches is ever missed, a row on its
own gets exactly the pattern's answer, and the fallback without Hyperscan agrees with it."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from uetrace.redaction import trigger_scan
from uetrace.redaction.policy import RedactionPolicy
from uetrace.redaction.trigger_scan import TriggerScan

WORDS = RedactionPolicy.make(redact=["X-Internal-Id"]).trigger_words()
PIECES = [b"GET /x?a=1 HTTP/1.1\r\n", b"\r\n", b"coOkie", b"TOKEN", b"x-internal-id", b"X-Api-", b"Key: k",
          b"?", b"=", b"?=", b"://", b"@", b"://@", b":", b" ", b"\t", b"\n", b"PRI * HTTP/2",
          b"\x00\x00\x06\x04\x00\x00\x00\x00\x00", b"\x00\x00\x00\x04\x01\x00\x00\x00\x00",
          b"session", b"h/a", b"\xff\xfe", b"\xc3\xa9"]
payloads = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=12)), max_size=10).map(b"".join)


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else "\\" + c if not c.isalnum() else c for c in word)


def _old_pattern(packets: bool) -> str:
    """The single RE2 alternation the capture used before trigger_scan.py."""
    words = "|".join(_any_case(w) for w in WORDS)
    triggers = rf"{words}|\?[!-~]*=|://[!-.0-~]*@"
    if packets:
        return rf"{triggers}|PRI \* HTTP/2"
    return (rf"{triggers}|\r\n[-!#$%&'*+.^_`|~0-9A-Za-z]{{1,64}}(?::[ -~\t]*)?$"
            r"|^PRI \* HTTP/2|^\x00\x00[\x00-\x7f]\x04[\x00\x01]\x00\x00\x00\x00")


def _old(rows: list[bytes | None], packets: bool) -> np.ndarray:
    arr = pa.array(rows, pa.binary())
    return pc.fill_null(pc.match_substring_regex(arr, _old_pattern(packets)), False).to_numpy(zero_copy_only=False)


def _scanners(packets: bool) -> list[TriggerScan]:
    fast = TriggerScan(WORDS, packets=packets)
    slow = TriggerScan(WORDS, packets=packets)
    slow._db = None   # what runs where the hyperscan module is missing
    return [fast, slow]


@pytest.mark.parametrize("packets", [False, True])
@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.one_of(payloads, st.none()), min_size=1, max_size=8), cut=st.integers(0, 3))
def test_never_misses_a_row_the_old_pattern_matches(packets, rows, cut):
    arr = pa.array([b"pad"] * cut + rows, pa.binary()).slice(cut)   # a slice: offsets do not start at 0
    want = _old(rows, packets)
    for scan in _scanners(packets):
        got = scan.rows(arr, np.ones(len(rows), dtype=bool))
        assert not (want & ~got).any(), (rows, want, got)
        for i, row in enumerate(rows):   # alone, nothing can straddle: exactly the old answer
            alone = scan.rows(pa.array([row], pa.binary()), np.ones(1, dtype=bool))
            assert bool(alone[0]) == bool(want[i]), row


def test_a_truncated_payload_does_not_carry_its_last_line():
    """Only rows captured whole are looked at for an unfinished line: a cut payload's last line is never
    carried into the next one."""
    scan = TriggerScan(WORDS)
    arr = pa.array([b"HTTP/1.1 200 OK\r\nX-Api-", b"HTTP/1.1 200 OK\r\nX-Api-"], pa.binary())
    assert scan.rows(arr, np.array([True, False])).tolist() == [True, False]


def test_hyperscan_is_what_the_capture_runs():
    """It is a dependency: without it the search still works, ~7x slower, so its absence would go unseen."""
    assert trigger_scan.hyperscan is not None


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.one_of(payloads, st.none()), min_size=1, max_size=40), cut=st.integers(0, 3))
def test_row_start_checks_agree_with_the_regex(rows, cut):
    """The HTTP/2 start test runs as word compares on each row's first 16 bytes, copied from a sliding
    view (rows near the buffer's end one by one): the same rows as the anchored regex it replaced."""
    arr = pa.array([b"pad"] * cut + rows, pa.binary()).slice(cut)
    want = pc.fill_null(pc.match_substring_regex(arr, trigger_scan.H2_START), False).to_numpy(zero_copy_only=False)
    assert trigger_scan.h2_starts(*trigger_scan.row_heads(arr)).tolist() == want.tolist()


LINE_PIECES = [b"\r\n", b"\r", b"\n", b"X-Api-Key", b":", b": v", b" ", b"\t", b"\xc3\xa9", b"{\"a\": 1}", b"a" * 63,
               b"b" * 64, b"c" * 65, b"GET / HTTP/1.1"]


@settings(max_examples=400, deadline=None)
@given(rows=st.lists(st.lists(st.sampled_from(LINE_PIECES), max_size=8).map(b"".join), min_size=1, max_size=30),
       cut=st.integers(0, 3))
def test_unfinished_lines_agree_with_the_regex(rows, cut):
    """The last-line test runs in numpy on each row's last line (name lengths around the pattern's
    64 included), RE2 only for a `name:` line's value: the same rows as the `$`-anchored regex."""
    arr = pa.array([b"pad"] * cut + rows, pa.binary()).slice(cut)
    want = pc.match_substring_regex(arr, trigger_scan.UNFINISHED_LINE).to_numpy(zero_copy_only=False)
    got = trigger_scan.unfinished_lines(arr, np.arange(len(rows)))
    assert got.tolist() == want.tolist()
