"""The analyzers `trace analyze` runs, in report order.

An analyzer is a module with:
    NAME: str                          section name ("summary", "http", ...)
    VIEWS: tuple[str, ...]             derived tables it can add for `trace query`
    def applies(cap) -> bool           whether the capture has what it reads
    def run(cap, params: dict) -> R    R has to_text() -> str and to_json() -> dict
    def register_views(cap) -> None    (if VIEWS) create those tables on cap.con
Adding an analyzer is one line in ANALYZERS.
"""

from __future__ import annotations

import importlib
from types import ModuleType

ANALYZERS = (
    "uetrace.analyze.summary",
    "uetrace.analyze.http",
    "uetrace.analyze.flows",
    "uetrace.analyze.profile",
    "uetrace.analyze.deadlock",
    "uetrace.analyze.leaks",
)


def analyzers() -> list[ModuleType]:
    return [importlib.import_module(name) for name in ANALYZERS]
