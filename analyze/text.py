"""Text from an archive made safe to print: a terminal obeys control characters (ESC sequences
can retitle the window, hide lines, or write hyperlinks), so every string that comes from an archive
is passed through `printable` before it reaches stdout or stderr. Rich markup is a separate matter,
handled where rich renders (render.render_table, the CLI's console)."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL, and the bidirectional overrides and isolates (text that reads differently
# from what it is). Newlines and tabs are kept only where a caller says so.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_KEEP_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(s: str, keep_lines: bool = False) -> str:
    """`s` with control characters shown as escapes (ESC as \\x1b); `keep_lines` keeps newlines and tabs."""
    return (_UNSAFE_KEEP_LINES if keep_lines else _UNSAFE).sub(_escape, s)
