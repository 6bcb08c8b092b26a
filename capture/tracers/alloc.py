"""Allocation tracer: the C library allocator of the target processes
(bpf/alloc.bpf.c): malloc, calloc, realloc, posix_memalign, aligned_alloc
(glibc's memalign is the same function) and free.

--alloc-sample N keeps 1 block in N, chosen in the kernel by a hash of the
block's address, so that a block's allocation and its free are kept or
dropped together and the kept ones are an unbiased sample of addresses. The
rate is in the manifest (options.alloc_sample); the leak analyzer scales by it.
The per-call trap cost stays (the uprobe fires before the hash is known); what
sampling saves is the stack walk, the record and the ring, drain and disk work.
"""

from __future__ import annotations

from uetrace.capture.libbpf import BpfObject
from uetrace.capture.options import ALLOC_SAMPLE
from uetrace.capture.tracers.uprobe import UprobeTracer

SAMPLE = "alloc_sample"   # the .rodata variable and the stats key


class AllocTracer(UprobeTracer):
    name = "alloc"
    structs = ["ue_alloc"]
    cost = "~0.6 us per malloc, ~10 us per free (a uprobe trap, per hit)"
    description = "malloc/calloc/realloc/posix_memalign/aligned_alloc/free of the target processes (uprobes)"
    probes = [
        ("malloc_enter", "malloc", False),
        ("alloc_return", "malloc", True),
        ("calloc_enter", "calloc", False),
        ("alloc_return", "calloc", True),
        ("realloc_enter", "realloc", False),
        ("realloc_return", "realloc", True),
        ("aligned_alloc_enter", "aligned_alloc", False),
        ("alloc_return", "aligned_alloc", True),
        ("posix_memalign_enter", "posix_memalign", False),
        ("posix_memalign_return", "posix_memalign", True),
        ("free_enter", "free", False),
    ]

    def configure(self, obj: BpfObject, rodata: dict[str, object]) -> None:
        super().configure(obj, rodata)
        rodata[SAMPLE] = self.sample = ALLOC_SAMPLE.clamp(self.opts.uprobe.alloc_sample)
        self.stats[SAMPLE] = self.sample
