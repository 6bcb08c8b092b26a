"""The maskers on arbitrary bytes (hypothesis): never an exception, never a length changed, and a
masked byte is always the mask (or, in a Huffman string, a whole valid string)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from uetrace.redaction.cmdline import mask_cmdline
from uetrace.redaction.hpack_values import H2Direction, mask_h2
from uetrace.redaction.http1 import mask_http1
from uetrace.redaction.policy import RedactionPolicy
from uetrace.redaction.tables import _mask_with_carry

P = RedactionPolicy()
PIECES = [b"GET /x?token=1&a=2 HTTP/1.1\r\n", b"Authorization: Bearer x\r\n", b" folded\r\n", b"Cookie: a=b",
          b"\r\n", b"https://u:p@h/?q=1", b"\x00\x00\x06\x04\x00\x00\x00\x00\x00", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
          b"\x00\x00\x10\x01\x04\x00\x00\x00\x01", b"\x82\x84\x40\x0dauthorization\x03abc", b"\xff\xff\xff"]
payloads = st.lists(st.one_of(st.sampled_from(PIECES), st.binary(max_size=40)), max_size=12).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(payloads, st.binary(max_size=30))
def test_http1_keeps_lengths_and_masks_only_with_stars(data, carry):
    buf = bytearray(data)
    out, _, new_carry = _mask_with_carry(buf, carry, P)
    assert len(out) == len(data) and len(new_carry) <= 2048
    assert all(a == b or b == ord("*") for a, b in zip(data, out))
    buf = bytearray(data)
    mask_http1(buf, P)
    assert len(buf) == len(data)


@settings(max_examples=400, deadline=None)
@given(st.lists(payloads, min_size=1, max_size=4), st.integers(0, 64))
def test_h2_never_fails_and_keeps_lengths(chunks, extra):
    d = H2Direction()
    for data in chunks:
        buf = bytearray(data)
        mask_h2(buf, len(data) + extra, d, P)
        assert len(buf) == len(data)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_cmdline_never_fails(text):
    out, n = mask_cmdline(text)
    assert (n == 0) == (out == text)
