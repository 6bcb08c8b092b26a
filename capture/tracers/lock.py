"""Lock tracer: pthread mutex, rwlock and condition wait calls of the target
processes (bpf/lock.bpf.c).

Every call is recorded, none sampled: the deadlock analyzer needs every
acquisition to see the lock order. Condition waits are probed because they
release and re-take their mutex inside the C library, past the mutex probes.
Names resolve to the default symbol version (capture/tracers/uprobe_offsets.py):
pthread_cond_wait@@GLIBC_2.3.2, not the old-ABI @GLIBC_2.2.5 one. Records carry the user stack id of the
call; the `stacks` map is dumped at the end like the stack tracer's, and the
targets' data symbols (capture/snapshot/data_symbols.py), read as each target
is attached, are added to name mutexes.
"""

from __future__ import annotations

from uetrace.capture.snapshot.data_symbols import DataSymbols
from uetrace.capture.tracers.uprobe import UprobeTracer


class LockTracer(UprobeTracer):
    name = "lock"
    structs = ["ue_lock"]
    cost = "~10 us per pthread_mutex_*/rwlock/condition wait call (a uprobe trap, per hit)"
    description = ("pthread mutex and rwlock lock/trylock/timedlock/unlock and condition waits "
                   "of the target processes (uprobes)")
    probes = [
        ("lock_enter", "pthread_mutex_lock", False),
        ("lock_return", "pthread_mutex_lock", True),
        ("timedlock_enter", "pthread_mutex_timedlock", False),
        ("lock_return", "pthread_mutex_timedlock", True),
        ("trylock_enter", "pthread_mutex_trylock", False),
        ("lock_return", "pthread_mutex_trylock", True),
        ("unlock_enter", "pthread_mutex_unlock", False),
        *[probe for prog, func in (("cond_wait", "cond_wait"), ("cond_timedwait", "cond_timedwait"),
                                   ("cond_clockwait", "cond_clockwait"), ("rdlock", "rwlock_rdlock"),
                                   ("wrlock", "rwlock_wrlock"), ("timedrdlock", "rwlock_timedrdlock"),
                                   ("timedwrlock", "rwlock_timedwrlock"), ("tryrdlock", "rwlock_tryrdlock"),
                                   ("trywrlock", "rwlock_trywrlock"))
          for probe in ((f"{prog}_enter", f"pthread_{func}", False), ("lock_return", f"pthread_{func}", True))],
        ("rwunlock_enter", "pthread_rwlock_unlock", False),
    ]

    def __init__(self, opts, symbols=None):
        super().__init__(opts, symbols)
        self.data_symbols = DataSymbols()

    def snapshot_target(self, pid: int) -> None:
        super().snapshot_target(pid)
        # Static mutexes (a global `lock_a`) are named from these offline.
        self.data_symbols.add(pid)

    def tick(self, write_table) -> None:
        super().tick(write_table)
        self._write_data_symbols(write_table)   # a killed capture keeps what was read so far

    def part_done(self, write_table) -> None:
        super().part_done(write_table)
        self._write_data_symbols(write_table)

    def finish(self, write_table) -> None:
        super().finish(write_table)
        for t in self.targets:   # objects loaded (dlopen) after attach; gone processes read as empty
            self.data_symbols.add(t.pid)
        self._write_data_symbols(write_table)

    def _write_data_symbols(self, write_table) -> None:
        table = self.data_symbols.take()
        if table.num_rows:
            write_table("elf_data_symbols", table)
