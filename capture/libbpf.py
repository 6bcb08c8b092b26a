"""A small typed ctypes binding over libbpf.so.1 (1.1 or newer).

This is the only module that talks to libbpf. Lifecycle, as in libbpf-tools:
open -> configure (.rodata, map sizes) -> load -> attach -> ... -> close.
Every pointer-returning libbpf call returns NULL and sets errno on failure
(libbpf 1.x strict mode); every failure becomes a BpfError whose message says
what failed, the errno, the last lines of libbpf's own log, and a fix when
there is an obvious one. Links are bpf_link objects: when this process dies,
however it dies, the kernel detaches them with the file descriptors.

Over 400 lines on purpose: it is the one place that imports ctypes, so every
libbpf prototype and the thin classes over them live here together.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from uetrace.capture import uprobe_multi
from uetrace.errors import UetraceError

LIBBPF_NAMES = ("libbpf.so.1", "/usr/lib/x86_64-linux-gnu/libbpf.so.1", "/usr/lib64/libbpf.so.1")

c_void_p, c_int, c_char_p, c_size_t = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t
c_uint32, c_uint64, c_bool = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_bool


class BpfError(UetraceError):
    """A libbpf or kernel call failed."""

    def __init__(self, what: str, err: int, log: list[str] | None = None):
        self.errno = abs(err)
        name = errno_mod.errorcode.get(self.errno, "?")
        msg = f"{what}: {os.strerror(self.errno)} ({name})"
        if self.errno in (errno_mod.EPERM, errno_mod.EACCES):
            msg += (" — not permitted: run as root or grant CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN" if
                    not _privileged() else " — refused although privileged (kernel lockdown or LSM policy?)")
        tail = [line for line in (log or []) if line.strip()][-3:]
        if tail:
            msg += " [libbpf: " + " | ".join(tail) + "]"
        super().__init__(msg)


class MissingFeatureError(BpfError):
    """The kernel or libbpf lacks a feature; names it and the minimum version."""

    def __init__(self, feature: str, minimum: str):
        UetraceError.__init__(self, f"{feature} is not available (needs {minimum})")
        self.errno = errno_mod.EOPNOTSUPP


def _privileged() -> bool:
    from uetrace.capture.privileges import missing_caps
    return not missing_caps()


def _load_library() -> ctypes.CDLL:
    for name in LIBBPF_NAMES:
        try:
            return ctypes.CDLL(name, use_errno=True)
        except OSError:
            continue
    raise UetraceError("load libbpf.so.1: not found; install it with: apt-get install libbpf1")


_lib: ctypes.CDLL | None = None
_log_lock = threading.Lock()
_log: list[str] = []
_PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)


@_PRINT_FN
def _print_cb(level: int, fmt: bytes, args: int) -> int:
    # x86_64 passes va_list as a pointer, so libc's vsnprintf can format it.
    # The verifier's log arrives as one message of up to ~1 MB, with the error at its end:
    # format it whole, keep its last lines.
    buf = ctypes.create_string_buffer(1 << 20)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    with _log_lock:
        _log.extend(buf.value.decode(errors="replace").rstrip("\n").splitlines()[-20:])
        del _log[:-200]
    return 0


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
_libc.vsnprintf.restype = c_int

_PROTOTYPES = {
    "libbpf_set_print": (c_void_p, [c_void_p]),
    "libbpf_major_version": (c_uint32, []),
    "libbpf_minor_version": (c_uint32, []),
    "bpf_object__open_file": (c_void_p, [c_char_p, c_void_p]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__section_name": (c_char_p, [c_void_p]),
    "bpf_program__set_autoload": (c_int, [c_void_p, c_bool]),
    "bpf_program__set_expected_attach_type": (c_int, [c_void_p, c_int]),
    "bpf_program__expected_attach_type": (c_int, [c_void_p]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_program__attach": (c_void_p, [c_void_p]),
    "bpf_program__attach_perf_event": (c_void_p, [c_void_p, c_int]),
    "bpf_program__attach_uprobe_opts": (c_void_p, [c_void_p, c_int, c_char_p, c_size_t, c_void_p]),
    "bpf_program__attach_xdp": (c_void_p, [c_void_p, c_int]),
    "bpf_program__attach_tracepoint": (c_void_p, [c_void_p, c_char_p, c_char_p]),
    "bpf_program__attach_kprobe": (c_void_p, [c_void_p, c_bool, c_char_p]),
    "bpf_link__destroy": (c_int, [c_void_p]),
    "bpf_link__fd": (c_int, [c_void_p]),
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
    "bpf_map__max_entries": (c_uint32, [c_void_p]),
    "bpf_map__key_size": (c_uint32, [c_void_p]),
    "bpf_map__value_size": (c_uint32, [c_void_p]),
    "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_link_create": (c_int, [c_int, c_int, c_int, c_void_p]),
    "bpf_tc_hook_create": (c_int, [c_void_p]),
    "bpf_tc_hook_destroy": (c_int, [c_void_p]),
    "bpf_tc_attach": (c_int, [c_void_p, c_void_p]),
    "bpf_tc_detach": (c_int, [c_void_p, c_void_p]),
    "bpf_tc_query": (c_int, [c_void_p, c_void_p]),
    "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_xdp_query_id": (c_int, [c_int, c_int, ctypes.POINTER(c_uint32)]),
    "bpf_prog_query": (c_int, [c_int, c_int, c_uint32, ctypes.POINTER(c_uint32), ctypes.POINTER(c_uint32),
                               ctypes.POINTER(c_uint32)]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, ctypes.POINTER(c_uint32)]),
    "libbpf_num_possible_cpus": (c_int, []),
}


def lib() -> ctypes.CDLL:
    """The loaded libbpf, with prototypes set and its log routed into this module."""
    global _lib
    if _lib is None:
        handle = _load_library()
        for name, (res, args) in _PROTOTYPES.items():
            fn = getattr(handle, name, None)
            if fn is not None:
                fn.restype, fn.argtypes = res, args
        handle.libbpf_set_print(ctypes.cast(_print_cb, c_void_p))
        _lib = handle
    return _lib


def has_symbol(name: str) -> bool:
    """Whether this libbpf exports `name` (1.1 lacks ring__*, attach_tcx...)."""
    return hasattr(lib(), name)


def version() -> tuple[int, int]:
    return lib().libbpf_major_version(), lib().libbpf_minor_version()


def recent_log(clear: bool = False) -> list[str]:
    with _log_lock:
        out = list(_log)
        if clear:
            _log.clear()
    return out


def possible_cpus() -> int:
    return lib().libbpf_num_possible_cpus()


def _check_ptr(ptr: int | None, what: str) -> int:
    err = ctypes.get_errno()
    if not ptr:
        raise BpfError(what, err or errno_mod.EINVAL, recent_log())
    return ptr


def _check_int(ret: int, what: str) -> int:
    if ret < 0:
        raise BpfError(what, -ret, recent_log())
    return ret


class UprobeOpts(ctypes.Structure):
    """struct bpf_uprobe_opts, as of libbpf 1.1 (sz first, for forward compatibility)."""

    _fields_ = [("sz", c_size_t), ("ref_ctr_offset", c_size_t), ("bpf_cookie", c_uint64),
                ("retprobe", c_bool), ("func_name", c_char_p)]


class Link:
    """An attached program. Destroying it (or this process exiting) detaches it."""

    def __init__(self, ptr: int, what: str):
        self.ptr, self.what = ptr, what

    def destroy(self) -> None:
        if self.ptr:
            lib().bpf_link__destroy(self.ptr)
            self.ptr = 0


class FdLink(Link):
    """A link created with bpf_link_create: a bare fd; closing it detaches."""

    def __init__(self, fd: int, what: str):
        super().__init__(0, what)
        self.fd = fd

    def destroy(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# uapi/linux/bpf.h enum bpf_attach_type and uapi/linux/if_link.h XDP flags
BPF_XDP, BPF_TCX_INGRESS, BPF_TCX_EGRESS = 37, 46, 47
XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE = 1 << 1, 1 << 2
BPF_TC_INGRESS, BPF_TC_EGRESS = 1 << 0, 1 << 1  # enum bpf_tc_attach_point


class LinkCreateOpts(ctypes.Structure):
    """struct bpf_link_create_opts of libbpf 1.1 (the union is its largest member)."""

    _fields_ = [("sz", c_size_t), ("flags", c_uint32), ("iter_info", c_void_p), ("iter_info_len", c_uint32),
                ("target_btf_id", c_uint32), ("_union", c_uint64 * 4)]


class TcHook(ctypes.Structure):
    """struct bpf_tc_hook (libbpf >= 0.4)."""

    _fields_ = [("sz", c_size_t), ("ifindex", c_int), ("attach_point", c_int), ("parent", c_uint32),
                ("_pad", c_uint32)]


class TcOpts(ctypes.Structure):
    """struct bpf_tc_opts (libbpf >= 0.4)."""

    _fields_ = [("sz", c_size_t), ("prog_fd", c_int), ("flags", c_uint32), ("prog_id", c_uint32),
                ("handle", c_uint32), ("priority", c_uint32), ("_pad", c_uint32)]


def _tc_hook(ifindex: int, egress: bool) -> TcHook:
    return TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex,
                  attach_point=BPF_TC_EGRESS if egress else BPF_TC_INGRESS)


class TcFilter(Link):
    """A cls_bpf filter on a clsact qdisc: a netlink attachment that outlives
    this process, so it is tagged (handle, priority) and removed explicitly."""

    def __init__(self, ifindex: int, egress: bool, handle: int, priority: int, created_qdisc: bool):
        super().__init__(0, f"clsact {'egress' if egress else 'ingress'} ifindex {ifindex}")
        self.ifindex, self.egress, self.handle, self.priority = ifindex, egress, handle, priority
        self.created_qdisc = created_qdisc
        self.live = True

    def destroy(self) -> None:
        if not self.live:
            return
        self.live = False
        tc_detach(self.ifindex, self.egress, self.handle, self.priority)
        if self.created_qdisc:
            # Only a qdisc this process created, and only when no other filter is left on it.
            if tc_query(self.ifindex, not self.egress, self.handle, self.priority) is None:
                hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=self.ifindex,
                              attach_point=BPF_TC_INGRESS | BPF_TC_EGRESS)
                lib().bpf_tc_hook_destroy(ctypes.byref(hook))


def tc_attach(prog_fd: int, ifindex: int, egress: bool, handle: int, priority: int) -> TcFilter:
    """Attach a direct-action cls_bpf filter, creating the clsact qdisc if missing."""
    hook = _tc_hook(ifindex, egress)
    rc = lib().bpf_tc_hook_create(ctypes.byref(hook))
    if rc < 0 and -rc != errno_mod.EEXIST:
        raise BpfError(f"create clsact qdisc on ifindex {ifindex}", -rc, recent_log())
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), prog_fd=prog_fd, handle=handle, priority=priority)
    _check_int(lib().bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts)),
               f"attach clsact {'egress' if egress else 'ingress'} filter on ifindex {ifindex}")
    return TcFilter(ifindex, egress, handle, priority, created_qdisc=rc == 0)


def tc_query(ifindex: int, egress: bool, handle: int, priority: int) -> int | None:
    """Program id of the filter with this handle and priority, or None."""
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=priority)
    if lib().bpf_tc_query(ctypes.byref(_tc_hook(ifindex, egress)), ctypes.byref(opts)) < 0:
        return None
    return opts.prog_id


def tc_detach(ifindex: int, egress: bool, handle: int, priority: int) -> bool:
    opts = TcOpts(sz=ctypes.sizeof(TcOpts), handle=handle, priority=priority)
    return lib().bpf_tc_detach(ctypes.byref(_tc_hook(ifindex, egress)), ctypes.byref(opts)) == 0


def xdp_prog_id(ifindex: int) -> int:
    """Id of the XDP program attached to an interface in any mode, 0 when none."""
    prog_id = c_uint32(0)
    _check_int(lib().bpf_xdp_query_id(ifindex, 0, ctypes.byref(prog_id)), f"query XDP on ifindex {ifindex}")
    return prog_id.value


def tcx_prog_ids(ifindex: int, egress: bool) -> list[int]:
    """Ids of the programs on an interface's TCX hook ([] when the kernel has no TCX)."""
    ids, count = (c_uint32 * 64)(), c_uint32(64)
    rc = lib().bpf_prog_query(ifindex, BPF_TCX_EGRESS if egress else BPF_TCX_INGRESS, 0, None, ids,
                              ctypes.byref(count))
    return list(ids[:count.value]) if rc == 0 else []


def prog_name(prog_id: int) -> str | None:
    """The name of a loaded program (struct bpf_prog_info.name at offset 64), or None."""
    fd = lib().bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        info = ctypes.create_string_buffer(80)
        size = c_uint32(80)
        if lib().bpf_obj_get_info_by_fd(fd, info, ctypes.byref(size)) != 0:
            return None
        return info.raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
    finally:
        os.close(fd)


class Map:
    def __init__(self, ptr: int):
        self.ptr = ptr
        self.name = lib().bpf_map__name(ptr).decode()

    @property
    def fd(self) -> int:
        return lib().bpf_map__fd(self.ptr)

    @property
    def max_entries(self) -> int:
        return lib().bpf_map__max_entries(self.ptr)

    @property
    def key_size(self) -> int:
        return lib().bpf_map__key_size(self.ptr)

    @property
    def value_size(self) -> int:
        return lib().bpf_map__value_size(self.ptr)

    def set_max_entries(self, n: int) -> None:
        _check_int(lib().bpf_map__set_max_entries(self.ptr, n), f"resize map {self.name}")

    def lookup(self, key: bytes, value_size: int) -> bytes | None:
        val = ctypes.create_string_buffer(value_size)
        if lib().bpf_map_lookup_elem(self.fd, key, val) != 0:
            return None
        return val.raw

    def update(self, key: bytes, value: bytes) -> None:
        _check_int(lib().bpf_map_update_elem(self.fd, key, value, 0), f"update map {self.name}")

    def delete(self, key: bytes) -> None:
        lib().bpf_map_delete_elem(self.fd, key)

    def keys(self) -> Iterator[bytes]:
        size = self.key_size
        prev, key = None, ctypes.create_string_buffer(size)
        while lib().bpf_map_get_next_key(self.fd, prev, key) == 0:
            yield key.raw
            prev = ctypes.create_string_buffer(key.raw, size)

    def initial_value(self) -> ctypes.Array:
        """The writable pre-load image of a .rodata/.data/.bss map."""
        size = c_size_t(0)
        ptr = _check_ptr(lib().bpf_map__initial_value(self.ptr, ctypes.byref(size)), f"map {self.name} image")
        return (ctypes.c_char * size.value).from_address(ptr)


class Program:
    def __init__(self, ptr: int):
        self.ptr = ptr
        self.name = lib().bpf_program__name(ptr).decode()
        self.section = lib().bpf_program__section_name(ptr).decode()

    def set_autoload(self, on: bool) -> None:
        lib().bpf_program__set_autoload(self.ptr, on)

    def _link(self, ptr: int | None, what: str) -> Link:
        return Link(_check_ptr(ptr, f"attach {self.name} ({what})"), what)

    def attach(self) -> Link:
        """Attach by section name (tp/, tp_btf/, raw_tp/...)."""
        ctypes.set_errno(0)
        return self._link(lib().bpf_program__attach(self.ptr), self.section)

    def attach_perf_event(self, pfd: int) -> Link:
        ctypes.set_errno(0)
        return self._link(lib().bpf_program__attach_perf_event(self.ptr, pfd), f"perf event fd {pfd}")

    def attach_uprobe(self, binary: str, func: str, pid: int = -1, retprobe: bool = False,
                      offset: int = 0) -> Link:
        opts = UprobeOpts(sz=ctypes.sizeof(UprobeOpts), retprobe=retprobe,
                          func_name=func.encode() if func else None)
        ctypes.set_errno(0)
        ptr = lib().bpf_program__attach_uprobe_opts(self.ptr, pid, binary.encode(), offset, ctypes.byref(opts))
        kind = "uretprobe" if retprobe else "uprobe"
        return self._link(ptr, f"{kind} {binary}:{func or hex(offset)} pid {pid}")

    @property
    def uprobe_multi(self) -> bool:
        """Whether this program was loaded for uprobe_multi links (BpfObject.use_uprobe_multi)."""
        return lib().bpf_program__expected_attach_type(self.ptr) == uprobe_multi.BPF_TRACE_UPROBE_MULTI

    def attach_uprobe_multi(self, binary: str, offsets: list[int], pid: int = -1, retprobe: bool = False) -> Link:
        """One link for every offset (capture/uprobe_multi.py); the program must have been loaded for it."""
        what = f"{'uretprobe' if retprobe else 'uprobe'}.multi {binary} x{len(offsets)} pid {pid}"
        try:
            return FdLink(uprobe_multi.link_create(self.fd, binary, offsets, retprobe, pid), what)
        except OSError as e:
            raise BpfError(f"attach {self.name} ({what})", e.errno or errno_mod.EINVAL) from None

    def attach_xdp(self, ifindex: int) -> Link:
        ctypes.set_errno(0)
        return self._link(lib().bpf_program__attach_xdp(self.ptr, ifindex), f"xdp ifindex {ifindex}")

    def attach_xdp_mode(self, ifindex: int, native: bool) -> Link:
        """XDP link in an explicit mode: generic (SKB) never touches the driver;
        native may make some drivers reset the link. bpf_program__attach_xdp
        passes no mode flag, so the kernel would pick native where it can."""
        flags = XDP_FLAGS_DRV_MODE if native else XDP_FLAGS_SKB_MODE
        opts = LinkCreateOpts(sz=ctypes.sizeof(LinkCreateOpts), flags=flags)
        fd = lib().bpf_link_create(self.fd, ifindex, BPF_XDP, ctypes.byref(opts))
        what = f"xdp {'native' if native else 'generic'} ifindex {ifindex}"
        return FdLink(_check_int(fd, f"attach {self.name} ({what})"), what)

    def attach_tcx(self, ifindex: int, egress: bool) -> Link:
        """TCX link (kernel >= 6.6); libbpf 1.1 has no bpf_program__attach_tcx,
        but its bpf_link_create passes the attach type through."""
        what = f"tcx {'egress' if egress else 'ingress'} ifindex {ifindex}"
        fd = lib().bpf_link_create(self.fd, ifindex, BPF_TCX_EGRESS if egress else BPF_TCX_INGRESS, None)
        return FdLink(_check_int(fd, f"attach {self.name} ({what})"), what)

    @property
    def fd(self) -> int:
        return lib().bpf_program__fd(self.ptr)


class BpfObject:
    """One compiled BPF object file: its programs, maps and attachments."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if not os.path.exists(self.path):
            raise UetraceError(f"open BPF object {self.path}: file not found (reinstall uetrace)")
        ctypes.set_errno(0)
        self.ptr = _check_ptr(lib().bpf_object__open_file(self.path.encode(), None),
                              f"open BPF object {self.path}")
        self.links: list[Link] = []
        self.loaded = False

    def programs(self) -> list[Program]:
        out, p = [], None
        while True:
            p = lib().bpf_object__next_program(self.ptr, p)
            if not p:
                return out
            out.append(Program(p))

    def maps(self) -> list[Map]:
        out, m = [], None
        while True:
            m = lib().bpf_object__next_map(self.ptr, m)
            if not m:
                return out
            out.append(Map(m))

    def program(self, name: str) -> Program:
        for p in self.programs():
            if p.name == name:
                return p
        raise UetraceError(f"find program {name}: not in {self.path}")

    def map(self, name: str) -> Map:
        for m in self.maps():
            if m.name == name or m.name.endswith("." + name.lstrip(".")):
                return m
        raise UetraceError(f"find map {name}: not in {self.path}")

    def load(self) -> None:
        recent_log(clear=True)
        _check_int(lib().bpf_object__load(self.ptr), f"load BPF object {os.path.basename(self.path)}")
        self.loaded = True

    def use_uprobe_multi(self) -> bool:
        """Before load: load every program of a bare "uprobe"/"uretprobe" section for uprobe_multi links,
        where the kernel has them (they detach in one grace period, not one per probe). Then those
        programs attach only with Program.attach_uprobe_multi. Returns whether it did."""
        if not uprobe_multi.supported():
            return False
        for prog in self.programs():
            if prog.section in ("uprobe", "uretprobe"):
                _check_int(lib().bpf_program__set_expected_attach_type(prog.ptr, uprobe_multi.BPF_TRACE_UPROBE_MULTI),
                           f"set {prog.name} for uprobe_multi")
        return True

    def keep(self, link: Link) -> Link:
        self.links.append(link)
        return link

    def detach(self) -> None:
        """Destroy every link, concurrently: a uprobe link waits for an RCU grace period
        when it goes (~0.25 s each here, so the tls tracer's eight took 2 s one by one),
        and concurrent waits overlap."""
        links, self.links = self.links, []
        plain = [link for link in links if type(link) in (Link, FdLink)]  # TC links touch shared qdiscs
        if len(plain) > 1:
            with ThreadPoolExecutor(max_workers=min(len(plain), 16), thread_name_prefix="uetrace-detach") as pool:
                list(pool.map(lambda link: link.destroy(), plain))
        for link in links:
            link.destroy()  # the rest, in order (a no-op for those already gone)

    def close(self) -> None:
        self.detach()
        if self.ptr:
            lib().bpf_object__close(self.ptr)
            self.ptr = 0

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
