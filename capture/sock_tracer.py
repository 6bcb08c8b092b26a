"""Socket tracer: read/write-like syscalls on TCP and UDP sockets, plus accept,
connect and close, with a payload prefix of --snaplen bytes (bpf/sock.bpf.c)."""

from __future__ import annotations

import ipaddress
import os

import numpy as np
import pyarrow as pa
from uetrace.capture.libbpf import BpfObject
from uetrace.capture.tracer import Tracer

MAX_SNAPLEN = 4096  # SOCK_MAX_SNAPLEN in bpf/sock.h


class SockTracer(Tracer):
    name = "sock"
    structs = ["ue_sock_data", "ue_sock_conn"]
    description = "socket syscalls (accept, connect, read/write family, close) with payload prefix"

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        rodata["snaplen"] = min(self.opts.snaplen, MAX_SNAPLEN)
        # Socket identity without writing kernel addresses into a file that may be shared.
        rodata["sock_id_key"] = int.from_bytes(os.urandom(8), "little") & ((1 << 63) - 1)

    def postprocess(self, kind: str, table: pa.Table) -> pa.Table:
        fam = table.column("family").to_numpy()
        for col in ("laddr", "raddr"):
            table = table.set_column(table.schema.get_field_index(col), col, addresses_to_text(
                table.column(col), fam))
        return table


def addresses_to_text(col: pa.ChunkedArray | pa.Array, family: np.ndarray) -> pa.Array:
    """16-byte address fields to text, formatting each distinct address once."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    raw = np.frombuffer(col.buffers()[1], dtype=np.uint8, count=n * 16).reshape(n, 16)
    v4 = (family == 2)[:, None]
    keyed = np.where(v4, np.concatenate([raw[:, :4], np.zeros((n, 12), np.uint8)], axis=1), raw)
    keys = np.ascontiguousarray(keyed).view("V16").reshape(n)
    fam_key = np.where(family == 2, 4, 6).astype(np.uint64)  # keep the stack uint64, not float
    uniq, inverse = np.unique(np.stack([keys.view("<u8").reshape(n, 2)[:, 0],
                                        keys.view("<u8").reshape(n, 2)[:, 1], fam_key], axis=1),
                              axis=0, return_inverse=True)
    texts = []
    for lo, hi, fk in uniq:
        b = int(lo).to_bytes(8, "little") + int(hi).to_bytes(8, "little")
        texts.append(str(ipaddress.IPv4Address(b[:4])) if fk == 4 else str(ipaddress.IPv6Address(b)))
    return pa.array(np.array(texts, dtype=object)[inverse.reshape(-1)], type=pa.string())
