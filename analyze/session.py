"""Open a capture with the derived views that a SQL statement asks for."""

from __future__ import annotations

from pathlib import Path

from uetrace.analyze.capture import Capture, open_capture
from uetrace.analyze.registry import analyzers


def open_for_analysis(path: str | Path, sql: str | None = None, all_views: bool = False) -> Capture:
    """Derived views cost an analyzer run, so only the ones named in `sql` are built."""
    cap = open_capture(path)
    try:
        for mod in analyzers():
            views = getattr(mod, "VIEWS", ())
            wanted = all_views or (sql is not None and any(v in sql for v in views))
            if views and wanted and mod.applies(cap):
                mod.register_views(cap)
    except BaseException:
        cap.close()
        raise
    return cap
