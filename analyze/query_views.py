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
        add_query_views(db, sql, all_views)
    except BaseException:
        db.close()
        raise
    return db


def add_query_views(db: ArchiveDb, sql: str | None = None, all_views: bool = False) -> None:
    """The derived views `sql` names (all of them with all_views) on an open archive."""
    for a in analyzers():
        wanted = all_views or (sql is not None and any(v in sql for v in a.views))
        if a.views and wanted and a.applies(db):
            a.register_views(db)
