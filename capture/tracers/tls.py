"""TLS tracer: the plaintext of OpenSSL's SSL_read/SSL_write(_ex) calls (bpf/tls.bpf.c).

Records land in `tls_data`, whose columns are those of `sock_data` (the kernel
side checks the struct copy; tests compare the BTF), so the HTTP analyzer
decodes HTTPS from it exactly like plain HTTP. The socket of each call comes
from the socket sends and receives made inside it (the sock_send_length and
sock_recv_length tracepoints), with the same sock_id as the socket tracer's.

Uprobes are attached to each libssl file system-wide (pid -1): SSL calls are
rare next to malloc or mutex calls, so one link per library file is cheap and
also catches processes that start during the capture. --pid/--comm are
honored in the kernel by wanted().
"""

from __future__ import annotations

import glob
import os
import re

import pyarrow as pa

from uetrace.bpf import object_path
from uetrace.capture import socket_hooks
from uetrace.capture.libbpf import BpfError, BpfObject
from uetrace.capture.options import SNAPLEN
from uetrace.capture.procfs import live_pids, read_maps, root_path
from uetrace.capture.tracers.contract import NotAttached, Tracer
from uetrace.capture.tracers.function_probes import attach_functions
from uetrace.capture.tracers.sock import addresses_to_text
from uetrace.capture.tracers.uprobe_offsets import function_offsets
from uetrace.errors import UetraceError

# OpenSSL 3 and 1.1 (1.0 is long dead and has no _ex functions). Not NSS's libssl3.so.
_LIBSSL_RE = re.compile(r"/libssl\.so\.(3|1\.1)$")
_LIB_DIRS = ("/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/usr/local/lib64")

# (BPF program, libssl function, is a return probe), in attach order: return
# probes after their entry probes, so no return is seen without its entry.
# Handshake functions only teach the program the socket; SSL_free forgets it.
PROBES: list[tuple[str, str, bool]] = [
    ("ssl_free_enter", "SSL_free", False),
    ("ssl_handshake_enter", "SSL_do_handshake", False),
    ("ssl_return", "SSL_do_handshake", True),
    ("ssl_handshake_enter", "SSL_connect", False),
    ("ssl_return", "SSL_connect", True),
    ("ssl_handshake_enter", "SSL_accept", False),
    ("ssl_return", "SSL_accept", True),
    ("ssl_read_enter", "SSL_read", False),
    ("ssl_return", "SSL_read", True),
    ("ssl_write_enter", "SSL_write", False),
    ("ssl_return", "SSL_write", True),
    ("ssl_read_ex_enter", "SSL_read_ex", False),
    ("ssl_return", "SSL_read_ex", True),
    ("ssl_write_ex_enter", "SSL_write_ex", False),
    ("ssl_return", "SSL_write_ex", True),
]
# Without these the tracer records nothing; the others only improve attribution.
_DATA_FUNCS = {"SSL_read", "SSL_write", "SSL_read_ex", "SSL_write_ex"}


class TlsTracer(Tracer):
    name = "tls"
    structs = ["ue_tls_data"]
    description = "plaintext of OpenSSL SSL_read/SSL_write(_ex) with the socket they use (uprobes on libssl)"

    def __init__(self, opts):
        super().__init__(opts)
        self.libraries: list[str] = []

    def check(self) -> None:
        self.libraries = find_libssl(exclude=os.getpid())
        if not self.libraries:
            raise NotAttached("no libssl found")

    @property
    def object_file(self) -> str:
        return str(object_path(socket_hooks.object_name(self.name, self.opts.sock_hooks)))

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        if socket_hooks.use_syscall_hooks(self.opts.sock_hooks):
            self.notes.append("the socket of an SSL call from a program on every system call (raw sys_enter)")
        rodata["snaplen"] = SNAPLEN.clamp(self.opts.snaplen)
        rodata["sock_id_key"] = self.opts.sock_id_key
        obj.use_uprobe_multi()

    def attach(self, obj: BpfObject) -> None:
        # The socket tracepoints first: an SSL call that starts before them would not learn its socket.
        for prog in obj.programs():
            if prog.section.startswith("tp_btf/"):
                self.try_attach(prog.section, prog.attach)
        data_probes = 0
        for lib in self.libraries:
            data_probes += self._attach_library(obj, lib)
        if not data_probes:
            raise BpfError(f"attach {self.name}: no SSL_read/SSL_write probe attached", 95)

    def _attach_library(self, obj: BpfObject, lib: str) -> int:
        """Attach every probe to one libssl file; return how many data probes attached."""
        try:
            offsets = function_offsets(lib)
        except (OSError, UetraceError) as e:
            self.failures.append({"point": lib, "error": str(e)})
            return 0
        # SSL_read_ex and SSL_write_ex exist since 1.1.1 only: a miss is a failure of that point alone.
        return len(attach_functions(self, obj, PROBES, lib, offsets, point_pid=False) & _DATA_FUNCS)

    def postprocess(self, kind: str, table: pa.Table) -> pa.Table:
        fam = table.column("family").to_numpy()
        for col in ("laddr", "raddr"):
            table = table.set_column(table.schema.get_field_index(col), col,
                                     addresses_to_text(table.column(col), fam))
        return table

    def finish(self, write_table) -> None:
        self.stats["libraries"] = list(self.libraries)


def find_libssl(exclude: int = 0) -> list[str]:
    """Every distinct OpenSSL libssl file: those in the usual library folders and
    those mapped by live processes (a bundled or container copy is another file,
    with its own uprobes). One path per file: /lib is often /usr/lib."""
    candidates: list[str] = []
    for d in _LIB_DIRS:
        candidates += sorted(glob.glob(f"{d}/libssl.so.*")) + sorted(glob.glob(f"{d}/*/libssl.so.*"))
    candidates += _mapped_libssl(exclude)
    seen: dict[tuple[int, int], str] = {}
    for path in candidates:
        if not _LIBSSL_RE.search(path):
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        seen.setdefault((st.st_dev, st.st_ino), path)
    return list(seen.values())


def _mapped_libssl(exclude: int) -> list[str]:
    # Through /proc/<pid>/root: the path is in that process's mount namespace.
    return [root_path(pid, m["path"]) for pid in live_pids() if pid != exclude
            for m in read_maps(pid) if _LIBSSL_RE.search(m["path"])]
