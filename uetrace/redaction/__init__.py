"""Redaction: secrets masked in place, at the same length, before anything is written.

Shared by the capture (capture/segments.py runs every table through it on the way to the spool)
and `trace redact` (an existing archive): it lives in the core package because analyze/ may not
import capture/. docs/redaction.md says what is masked and what cannot be.
"""
