"""The archive layout shared by the writer (capture) and the reader (analyze).

An archive is a tar stream compressed with zstd, one zstd frame per tar member
group, so that a capture killed at any moment still decompresses up to its last
finished segment. Members:

    manifest.json                 written first (complete=false) and again last;
                                  a reader uses the last one it finds
    schema/<kind>.json            the record layout of each kind (field, type, offset)
    events/<kind>/NNNNNN.parquet  records of one kind, one file per segment
    symbols/...                   process, mapping and symbol snapshots (parquet)

FORMAT_VERSION changes when a reader of the previous version would misread an
archive; docs/archive-format.md keeps the history.
"""

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SCHEMA_DIR = "schema"
EVENTS_DIR = "events"
SYMBOLS_DIR = "symbols"
ALLOWED_TOP = (MANIFEST, SCHEMA_DIR, EVENTS_DIR, SYMBOLS_DIR)


def segment_member(kind: str, seq: int) -> str:
    return f"{EVENTS_DIR}/{kind}/{seq:06d}.parquet"


def table_member(kind: str, seq: int) -> str:
    """A snapshot table (processes, mappings, symbols...) is also rolled in segments."""
    return f"{SYMBOLS_DIR}/{kind}/{seq:06d}.parquet"
