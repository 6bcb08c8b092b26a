"""Offline side: open an archive, expose it to DuckDB, run the analyzers."""
