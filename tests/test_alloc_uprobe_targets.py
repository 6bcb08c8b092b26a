"""Target resolution for the uprobe tracers, without the kernel: where the C
library of a process is, and function offsets that libbpf 1.1 cannot resolve
itself (two versions of one name)."""

from __future__ import annotations

import os
import subprocess

from uetrace.bpf import object_path
from uetrace.capture.btf import Btf
from uetrace.capture.records import kinds_from_btf
from uetrace.capture.tracers.uprobe_offsets import function_offsets
from uetrace.capture.tracers.uprobe_targets import comm_matches, libc_path, resolve


def test_own_libc_and_versioned_offsets():
    lib = libc_path(os.getpid())
    assert lib and os.path.exists(lib)
    offsets = function_offsets(lib)
    nm = subprocess.run(["nm", "-D", lib], capture_output=True, text=True, check=True).stdout
    defaults = {line.split()[2].split("@")[0]: int(line.split()[0], 16) for line in nm.splitlines()
                if "@@" in line and len(line.split()) == 3}
    for fn in ("malloc", "free", "pthread_mutex_lock", "pthread_mutex_trylock", "pthread_mutex_timedlock"):
        assert fn not in defaults or offsets[fn] == defaults[fn]  # glibc: text vaddr == file offset


def test_resolve_reports_missing_processes_and_skips_self():
    targets, problems = resolve([2**22 + 12345, os.getpid()], [], exclude=os.getpid())
    assert targets == [] and "no such process" in problems[0]["error"]


def test_comm_is_compared_on_15_characters():
    assert comm_matches("a_very_long_nam", ["a_very_long_name_indeed"])
    assert not comm_matches("other", ["a_very_long_name_indeed"])


def test_record_layouts_match_btf():
    # pystack (the Python stack's key in py_stackmap) made them 8 bytes longer.
    for name, struct, size in (("lock", "ue_lock", 72), ("alloc", "ue_alloc", 56)):
        (kind,) = kinds_from_btf(Btf.from_object(object_path(name)), [struct])
        assert kind.layout.size == size and kind.dtype().itemsize == size
        assert {f.name for f in kind.columns} >= {"ts", "pid", "tid", "ustack_id", "op", "fn", "pystack"}
