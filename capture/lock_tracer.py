"""Lock tracer: pthread mutex calls of the target processes (bpf/lock.bpf.c).

Every call is recorded, none sampled: the deadlock analyzer needs every
acquisition to see the lock order. Records carry the user stack id of the
call; the `stacks` map is dumped at the end like the stack tracer's, and the
targets' data symbols (capture/data_symbols.py) are added to name mutexes.
"""

from __future__ import annotations

from uetrace.capture.data_symbols import data_symbols_of
from uetrace.capture.uprobe_tracer import UprobeTracer


class LockTracer(UprobeTracer):
    name = "lock"
    structs = ["ue_lock"]
    description = "pthread mutex lock/trylock/timedlock/unlock of the target processes (uprobes)"
    probes = [
        ("lock_enter", "pthread_mutex_lock", False),
        ("lock_return", "pthread_mutex_lock", True),
        ("timedlock_enter", "pthread_mutex_timedlock", False),
        ("lock_return", "pthread_mutex_timedlock", True),
        ("trylock_enter", "pthread_mutex_trylock", False),
        ("lock_return", "pthread_mutex_trylock", True),
        ("unlock_enter", "pthread_mutex_unlock", False),
    ]

    def finish(self, write_table) -> None:
        super().finish(write_table)
        # Static mutexes (a global `lock_a`) are named from these offline.
        table = data_symbols_of([t.pid for t in self.targets], set())
        if table.num_rows:
            write_table("elf_data_symbols", table)
