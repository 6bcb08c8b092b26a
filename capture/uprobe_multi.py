"""uprobe_multi links (kernel >= 6.6): one BPF link puts a program on many offsets of one binary.

Why: a uprobe attached the classic way (libbpf 1.1's bpf_program__attach_uprobe_opts: a perf event
per probe) is removed one at a time, each waiting out an RCU grace period under perf's event mutex,
so concurrent closes do not overlap: the tls tracer's 15 probes took ~1.25 s to detach, most of the
time a default capture spends after its -d. A uprobe_multi link removes all its probes behind one
grace period, and links close concurrently (3 links: 0.14 s one after another).

libbpf 1.1 knows neither the attach type nor its link_create fields, so the link is made with the
bpf(2) system call directly. A program must be loaded for it (expected attach type
BPF_TRACE_UPROBE_MULTI) and can then no longer be attached through a perf event: `supported()`
decides before the load, from the kernel version.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

BPF_TRACE_UPROBE_MULTI = 48   # enum bpf_attach_type
BPF_F_UPROBE_MULTI_RETURN = 1
_SYS_BPF = 321                # x86_64
_BPF_LINK_CREATE = 28
_BPF_LINK_GET_FD_BY_ID = 30
_BPF_OBJ_GET_INFO_BY_FD = 15
_ATTR_SIZE = 128              # union bpf_attr is larger; the kernel takes a shorter one whose tail is zero
_BPF_LINK_TYPE_UPROBE_MULTI = 12

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@cache
def supported() -> bool:
    """Whether this kernel has uprobe_multi links (6.6 and later)."""
    try:
        major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (6, 6)


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    ret = _libc.syscall(_SYS_BPF, cmd, attr, ctypes.sizeof(attr))
    if ret < 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    return ret


def link_create(prog_fd: int, binary: str, offsets: Sequence[int], retprobe: bool, pid: int) -> int:
    """The new link's fd: prog_fd on every offset (file offsets) of binary, in process pid
    (its threads; -1 or 0: every process). Raises OSError."""
    path = ctypes.create_string_buffer(os.fsencode(binary))
    offs = (ctypes.c_uint64 * len(offsets))(*offsets)
    attr = (ctypes.c_uint8 * _ATTR_SIZE)()
    # link_create: prog_fd, target_fd, attach_type, flags; then the uprobe_multi member of its union:
    # path, offsets, ref_ctr_offsets, cookies (u64 pointers), cnt, flags, pid.
    struct.pack_into("<IIII", attr, 0, prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0)
    struct.pack_into("<QQQQIII", attr, 16, ctypes.addressof(path), ctypes.addressof(offs), 0, 0, len(offsets),
                     BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, max(pid, 0))
    return _bpf(_BPF_LINK_CREATE, attr)


@dataclass(frozen=True)
class LinkInfo:
    """What the kernel says about one uprobe_multi link (for tests and checks)."""

    path: str
    count: int
    retprobe: bool
    pid: int


def link_info(link_id: int) -> LinkInfo | None:
    """The uprobe_multi link of that id (`bpftool link show` lists ids), or None for another kind."""
    attr = (ctypes.c_uint8 * _ATTR_SIZE)()
    struct.pack_into("<I", attr, 0, link_id)
    fd = _bpf(_BPF_LINK_GET_FD_BY_ID, attr)
    try:
        # struct bpf_link_info: type, id, prog_id, then (aligned to 8) the uprobe_multi member:
        # path, offsets, ref_ctr_offsets, cookies (u64 pointers), path_size, count, flags, pid.
        info = (ctypes.c_uint8 * 256)()
        path = ctypes.create_string_buffer(4096)
        struct.pack_into("<QQQQII", info, 16, ctypes.addressof(path), 0, 0, 0, len(path), 0)
        attr = (ctypes.c_uint8 * _ATTR_SIZE)()
        struct.pack_into("<IIQ", attr, 0, fd, len(info), ctypes.addressof(info))
        _bpf(_BPF_OBJ_GET_INFO_BY_FD, attr)
        kind, = struct.unpack_from("<I", info, 0)
        if kind != _BPF_LINK_TYPE_UPROBE_MULTI:
            return None
        _, count, flags, pid = struct.unpack_from("<IIII", info, 48)
        return LinkInfo(path.value.decode(errors="replace"), count, bool(flags & BPF_F_UPROBE_MULTI_RETURN), pid)
    finally:
        os.close(fd)
