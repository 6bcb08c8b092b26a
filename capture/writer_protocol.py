"""What the root capture and its unprivileged writer say to each other.

Root -> writer (the writer's stdin): frames of a 13-byte header (one op byte, the name's length
u32, the payload's length u64, little-endian), the name (UTF-8), the payload. Tables travel as
Arrow IPC stream bytes. Writer -> root (its stdout): one JSON object per line. The root side
treats the writer as untrusted (it runs as the user, who may trace or kill it): lines are
bounded and read with a timeout, unknown fields are ignored.
"""

from __future__ import annotations

import json
import struct

import pyarrow as pa
import pyarrow.ipc as ipc

HEADER = struct.Struct("<cIQ")
MAX_NAME = 4096
MAX_REPLY = 4 << 20   # a reply line: the segment list of a long capture fits easily

ADD_BYTES = b"B"     # name: member, payload: its bytes
TABLE = b"T"         # name: "area/kind", payload: Arrow IPC stream
CLOSE_SINK = b"F"    # roll every open segment; reply {"sink": {...}}
CLOSE = b"C"         # end the tar and rename NAME.partial to NAME; reply {"closed": path} or {"error": ...}
DISCARD = b"D"       # remove NAME.partial; reply {"discarded": path}
ABANDON = b"A"       # leave NAME.partial; reply {"abandoned": path}
# --rotate (capture/parts.py): END_PART, then the part's final manifest (ADD_BYTES), then NEXT_PART.
END_PART = b"E"      # roll every open segment into the part; reply {"part_summary": {...} or null}
NEXT_PART = b"N"     # payload: the next part's first manifest; close the part, open the next;
#                      reply {"next_part": {closed, removed, number, path, partial, ...} or null}


def frame(op: bytes, name: str = "", payload: bytes | memoryview = b"") -> list:
    raw = name.encode()
    return [HEADER.pack(op, len(raw), len(payload)), raw, payload]


def table_bytes(table: pa.Table) -> pa.Buffer:
    out = pa.BufferOutputStream()
    with ipc.new_stream(out, table.schema) as w:
        w.write_table(table)
    return out.getvalue()


def read_table(payload: bytes) -> pa.Table:
    return ipc.open_stream(pa.py_buffer(payload)).read_all()


def reply(obj: dict) -> bytes:
    return (json.dumps(obj) + "\n").encode()
