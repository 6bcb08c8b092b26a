"""C enum values, looked up by name in the archive that holds the records.

The capture writes every enum of a tracer's object BTF into schema/<kind>.json as
`"enums": {"<C enum type>": {"<ENUMERATOR>": value, ...}}`, so that a later version may renumber
an enum and still read old archives: analyzers ask for `("lock", "ue_lock_op", "LOCK_OP_UNLOCK")`
and never write the number. Archives written before that key existed get the values of bpf/*.h as
they were then (FALLBACK below: never edit those numbers, they describe old archives).

Resolution is per enum type: a kind's schema without "enums", or without that type, falls back to
the table; an enumerator that the archive's type lacks is an error, because guessing would count
the wrong records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from uetrace.archive_format import SCHEMA_DIR
from uetrace.errors import BadInputError

_COMMON = {
    "ue_kind": {"UE_KIND_SOCK_DATA": 1, "UE_KIND_SOCK_CONN": 2, "UE_KIND_TLS_DATA": 3, "UE_KIND_PROC": 10,
                "UE_KIND_NET_PACKET": 20, "UE_KIND_STACK_SAMPLE": 30, "UE_KIND_OFFCPU": 31, "UE_KIND_LOCK": 40,
                "UE_KIND_ALLOC": 50},
    "ue_drop": {"UE_DROP_RINGBUF": 0, "UE_DROP_READ_FAULT": 1, "UE_DROP_MAP_FULL": 2, "UE_DROP_STACK": 3,
                "UE_DROP_MAX": 8},
}
_SOCK = {
    "ue_sock_syscall": {"SYS_READ": 1, "SYS_WRITE": 2, "SYS_RECVFROM": 3, "SYS_SENDTO": 4, "SYS_READV": 5,
                        "SYS_WRITEV": 6, "SYS_RECVMSG": 7, "SYS_SENDMSG": 8, "SYS_ACCEPT": 9, "SYS_ACCEPT4": 10,
                        "SYS_CONNECT": 11, "SYS_CLOSE": 12, "SYS_SENDFILE": 13},
    "ue_sock_direction": {"DIR_EGRESS": 0, "DIR_INGRESS": 1},
    "ue_sock_conn_op": {"CONN_ACCEPT": 1, "CONN_CONNECT": 2, "CONN_CLOSE": 3},
}
_TLS = {
    "ue_tls_fn": {"TLS_SSL_READ": 21, "TLS_SSL_WRITE": 22, "TLS_SSL_READ_EX": 23, "TLS_SSL_WRITE_EX": 24},
    # tls_data's direction has ue_sock_direction's meaning (0: SSL_write, 1: SSL_read)
    "ue_sock_direction": _SOCK["ue_sock_direction"],
}
_PROC = {"ue_proc_op": {"PROC_EXEC": 1, "PROC_FORK": 2, "PROC_EXIT": 3, "PROC_THREAD": 4, "PROC_THREAD_EXIT": 5}}
_NET = {"ue_net_direction": {"NET_EGRESS": 0, "NET_INGRESS": 1},
        "ue_net_l2": {"NET_L2_ETHERNET": 0, "NET_L2_RAW_IP": 1}}
_STACK = {"ue_stack_flag": {"UE_STACK_NO_KSTACK": 1, "UE_STACK_NO_USTACK": 2, "UE_STACK_USER_MODE": 4,
                            "UE_STACK_KTHREAD": 8, "UE_STACK_PREEMPT": 16}}
_LOCK = {
    "ue_lock_op": {"LOCK_OP_REQUEST": 1, "LOCK_OP_ACQUIRE": 2, "LOCK_OP_TRYLOCK": 3, "LOCK_OP_UNLOCK": 4},
    "ue_lock_fn": {"LOCK_FN_LOCK": 1, "LOCK_FN_TIMEDLOCK": 2, "LOCK_FN_TRYLOCK": 3, "LOCK_FN_UNLOCK": 4,
                   "LOCK_FN_COND_WAIT": 5, "LOCK_FN_COND_TIMEDWAIT": 6, "LOCK_FN_COND_CLOCKWAIT": 7,
                   "LOCK_FN_RDLOCK": 8, "LOCK_FN_WRLOCK": 9, "LOCK_FN_TIMEDRDLOCK": 10, "LOCK_FN_TIMEDWRLOCK": 11,
                   "LOCK_FN_TRYRDLOCK": 12, "LOCK_FN_TRYWRLOCK": 13, "LOCK_FN_RWUNLOCK": 14},
}
_ALLOC = {
    "ue_alloc_op": {"ALLOC_OP_ALLOC": 1, "ALLOC_OP_FREE": 2},
    "ue_alloc_fn": {"ALLOC_FN_MALLOC": 1, "ALLOC_FN_CALLOC": 2, "ALLOC_FN_REALLOC": 3, "ALLOC_FN_POSIX_MEMALIGN": 4,
                    "ALLOC_FN_ALIGNED_ALLOC": 5, "ALLOC_FN_FREE": 6},
}

# kind -> enum type -> enumerator -> value: bpf/*.h at format version 1, before archives carried enums.
FALLBACK: dict[str, dict[str, dict[str, int]]] = {
    kind: {**_COMMON, **enums} for kind, enums in (
        ("sock_data", _SOCK), ("sock_conn", _SOCK), ("tls_data", _TLS), ("proc", _PROC), ("net_packet", _NET),
        ("stack_sample", _STACK), ("offcpu", _STACK), ("lock", _LOCK), ("alloc", _ALLOC))
}


class Enums:
    """The enums of one archive: kind -> enum type -> enumerator -> value, for the kinds whose schema
    carries them; the rest resolves through FALLBACK."""

    def __init__(self, by_kind: dict[str, dict[str, dict[str, int]]]):
        self._by_kind = by_kind

    def values(self, kind: str, enum_type: str) -> dict[str, int]:
        """Every enumerator of one enum type as the archive's `kind` records use it."""
        found = self._by_kind.get(kind, {}).get(enum_type)
        if found is None:
            found = FALLBACK.get(kind, {}).get(enum_type)
        if found is None:
            raise KeyError(f"no enum {enum_type} for record kind {kind}")
        return found

    def value(self, kind: str, enum_type: str, enumerator: str) -> int:
        values = self.values(kind, enum_type)
        if enumerator not in values:
            raise BadInputError(f"archive's {kind} records have no {enum_type} value {enumerator}: "
                                "written by an incompatible uetrace")
        return values[enumerator]

    def many(self, kind: str, enum_type: str, enumerators: Iterable[str]) -> frozenset[int]:
        return frozenset(self.value(kind, enum_type, e) for e in enumerators)

    def sql_list(self, kind: str, enum_type: str, enumerators: Iterable[str]) -> str:
        """"1, 3": values to splice into SQL, as integers (never text from the archive)."""
        return ", ".join(str(int(v)) for v in sorted(self.many(kind, enum_type, enumerators)))


def read_enums(root: Path) -> Enums:
    """The enums of the archive extracted at `root` (schema/<kind>.json). A schema file that is not
    JSON, or whose "enums" is not a mapping of names to integers, is ignored (the records it
    describes are checked where they are read)."""
    by_kind: dict[str, dict[str, dict[str, int]]] = {}
    schema_dir = root / SCHEMA_DIR
    if not schema_dir.is_dir():
        return Enums(by_kind)
    for path in sorted(schema_dir.glob("*.json")):
        try:
            enums = json.loads(path.read_text()).get("enums")
        except (ValueError, UnicodeDecodeError, AttributeError, OSError, RecursionError):
            continue
        if isinstance(enums, dict):
            by_kind[path.stem] = {t: {str(k): int(v) for k, v in vals.items() if isinstance(v, int)}
                                  for t, vals in enums.items() if isinstance(vals, dict)}
    return Enums(by_kind)


DEFAULT = Enums({})  # what an archive without "enums" means; for code that works on a bare DuckDB connection
