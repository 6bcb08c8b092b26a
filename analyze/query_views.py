"""Open an archive with the derived views that a SQL statement asks for (`trace query`)."""

from __future__ import annotations

from pathlib import Path

from uetrace.analyze.archive import ReadLimits
from uetrace.analyze.archive_db import ArchiveDb, open_archive_db
from uetrace.analyze.sections import analyzers


def open_for_query(path: str | Path, sql: str | None = None, all_views: bool = False,
                   limits: ReadLimits | None = None) -> ArchiveDb:
    """Derived views cost an analyzer run, so only the ones named in `sql` are built."""
    db = open_archive_db(path, limits)
    try:
        for a in analyzers():
            wanted = all_views or (sql is not None and any(v in sql for v in a.views))
            if a.views and wanted and a.applies(db):
                a.register_views(db)
    except BaseException:
        db.close()
        raise
    return db
