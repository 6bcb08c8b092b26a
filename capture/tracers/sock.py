"""Socket tracer: read/write-like syscalls on TCP and UDP sockets, plus accept,
connect and close of TCP sockets, with a payload prefix of --snaplen bytes
(bpf/sock.bpf.c). Its programs sit on the kernel's socket tracepoints
(sock_send_length, sock_recv_length, tcp_sendmsg_locked, inet_sock_set_state),
not on every system call; the loader attaches every program of the object."""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from uetrace.bpf import object_path
from uetrace.capture import socket_hooks
from uetrace.capture.libbpf import BpfObject
from uetrace.capture.options import SNAPLEN
from uetrace.capture.tracers.contract import Tracer


class SockTracer(Tracer):
    name = "sock"
    structs = ["ue_sock_data", "ue_sock_conn"]
    fixed_slot = True
    description = "socket syscalls (read/write family; TCP accept, connect, close) with payload prefix"

    @property
    def object_file(self) -> str:
        return str(object_path(socket_hooks.object_name(self.name, self.opts.sock_hooks)))

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        self.notes.append(socket_hooks.note(self.opts.sock_hooks))
        rodata["snaplen"] = SNAPLEN.clamp(self.opts.snaplen)
        # Socket identity without writing kernel addresses into a file that may be shared.
        rodata["sock_id_key"] = self.opts.sock_id_key

    def postprocess(self, kind: str, table: pa.Table) -> pa.Table:
        fam = table.column("family").to_numpy()
        for col in ("laddr", "raddr"):
            table = table.set_column(table.schema.get_field_index(col), col, addresses_to_text(
                table.column(col), fam))
        return table


def addresses_to_text(col: pa.ChunkedArray | pa.Array, family: np.ndarray) -> pa.Array:
    """16-byte address fields to text. Addresses repeat a lot, so each distinct one
    is formatted once: dictionary-encode (hashing in Arrow), format the
    dictionary, and let Arrow expand it. IPv4 and IPv6 rows are encoded apart
    because an IPv4 address is only the first 4 of the 16 bytes."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    indices = np.zeros(len(col), dtype=np.int32)
    texts = [""]  # index 0: neither IPv4 nor IPv6
    for fam, fmt in ((2, lambda b: str(ipaddress.IPv4Address(b[:4]))), (10, lambda b: str(ipaddress.IPv6Address(b)))):
        rows = np.flatnonzero(family == fam)
        if not len(rows):
            continue
        enc = pc.dictionary_encode(col.take(pa.array(rows)))
        indices[rows] = enc.indices.to_numpy() + len(texts)
        texts.extend(fmt(b) for b in enc.dictionary.to_pylist())
    return pa.DictionaryArray.from_arrays(pa.array(indices), pa.array(texts, pa.string())).cast(pa.string())
