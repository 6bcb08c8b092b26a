"""Durations as users type them: 500ms, 10s, 2m, 1h, or plain seconds (the click type is
uetrace/cli/options.py:Duration)."""

from __future__ import annotations

import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h)?\s*$")


def parse_duration(text: str) -> float:
    m = _RE.match(text)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"bad duration {text!r}: use a positive number with ms, s, m or h (e.g. 500ms, 10s, 2m)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]
