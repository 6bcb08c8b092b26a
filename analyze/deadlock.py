"""Deadlock: the lock-order graph of each process, its cycles (potential
deadlocks), and the threads really deadlocked when the capture ended.

Locks are mutexes and rwlocks; an rwlock is held shared (read) or exclusive
(write), a mutex always exclusive. Lock order: when a thread asks for lock M (a
blocking lock, timedlock, rdlock or wrlock) while it holds H, the graph gets the
edge H -> M, with the evidence: thread, modes, when H was taken and from which
stack, when M was asked for and from which stack. A trylock never waits, so it
adds no edge into its lock (but what it takes counts as held). A condition wait
releases its mutex at entry and takes it again before it returns: a blocking
acquisition, so it adds edges like a lock call. A cycle is reported when its edges can
come from different threads without one lock that all of them held (a "gate"
lock that serializes them, unless all of them only read it), and when at every
lock of the cycle the waiting thread and the holding thread conflict (a read
request is not blocked by a reader: glibc's default rwlocks prefer readers).
So a cycle made only of read acquisitions is never reported.

Hangs: a thread whose last blocking request has no return by the end of the
capture waits for the lock's holders that conflict with it (those that took it
and did not release it); a cycle in that wait-for relation is a real deadlock.
A thread inside a condition wait at the end holds nothing there and is no hang:
it is listed apart (cond_waits), as lost wakeups are found there.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field

from uetrace.analyze.analyzer import ResultRendering
from uetrace.analyze.archive_db import ArchiveDb
from uetrace.analyze.cycles import simple_cycles, strongly_connected
from uetrace.analyze.data_address import DataNamer
from uetrace.analyze.enums import FALLBACK
from uetrace.analyze.stacks.stack_text import StackNamer

NAME = "deadlock"
VIEWS: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeadlockParams:
    max_cycles: int = 50  # stop looking for lock-order cycles after this many


# The replay's own codes for ue_lock_op and ue_lock_fn: the values of bpf/lock.h when archives did not
# carry their enums. _replay maps each archive's values to these by enumerator name.
_OPS = FALLBACK["lock"]["ue_lock_op"]
_FNS = FALLBACK["lock"]["ue_lock_fn"]
OP_REQUEST, OP_ACQUIRE, OP_TRYLOCK, OP_UNLOCK = (_OPS[n] for n in (
    "LOCK_OP_REQUEST", "LOCK_OP_ACQUIRE", "LOCK_OP_TRYLOCK", "LOCK_OP_UNLOCK"))
# condition waits, and rwlock functions taking the lock shared
FN_COND = frozenset(_FNS[n] for n in ("LOCK_FN_COND_WAIT", "LOCK_FN_COND_TIMEDWAIT", "LOCK_FN_COND_CLOCKWAIT"))
FN_SHARED = frozenset(_FNS[n] for n in ("LOCK_FN_RDLOCK", "LOCK_FN_TIMEDRDLOCK", "LOCK_FN_TRYRDLOCK"))
ACQUIRED = (0, errno.EOWNERDEAD)  # return values after which the caller holds the lock
# A condition wait returns with its mutex held, timed out or not; EPERM: the caller did not own it.
COND_NOT_HELD = (errno.EPERM,)


Site = tuple[int, ...]  # (ustack_id, caller return address, pystack_id) of a lock call: StackNamer.frames' args


@dataclass
class Hold:
    ts: int           # when it was taken
    site: Site        # the call that took it
    depth: int = 1    # recursive mutexes, read locks taken again
    shared: bool = False  # an rwlock taken for reading


@dataclass
class Evidence:
    """One thread taking the edge held -> wanted."""

    pid: int
    tid: int
    held_ts: int
    held_site: Site
    wanted_ts: int
    wanted_site: Site
    gates: frozenset   # other locks the thread held meanwhile
    shared_gates: frozenset = frozenset()  # those of them it held for reading only
    held_shared: bool = False    # held was an rwlock taken for reading
    wanted_shared: bool = False  # wanted is an rwlock asked for reading


@dataclass
class Edge:
    held: int
    wanted: int
    count: int = 0
    by_thread: dict[tuple, Evidence] = field(default_factory=dict)  # first evidence per (tid, modes)


@dataclass
class ProcessLocks:
    """Replay of one process's lock records, thread by thread."""

    pid: int
    edges: dict[tuple[int, int], Edge] = field(default_factory=dict)
    held: dict[int, dict[int, Hold]] = field(default_factory=dict)        # tid -> lock -> hold, at the end
    waiting: dict[int, tuple[int, int, Site, bool]] = field(default_factory=dict)  # tid -> (lock, since,
    #                                                                                site, shared)
    cond_waits: dict[int, tuple[int, int, Site]] = field(default_factory=dict)  # tid -> (mutex, since, site)
    mutexes: set[int] = field(default_factory=set)
    first_use: dict[int, int] = field(default_factory=dict)

    def replay(self, tid: int, rows: list[tuple]) -> None:
        """rows: (ts, op, lock, ret, ustack_id, caller, fn[, pystack_id]) of one thread, in time order."""
        held: dict[int, Hold] = {}
        waiting = None
        for ts, op, mutex, ret, stack, caller, fn, *py in rows:
            site = (stack, caller, py[0] if py else -1)
            shared = fn in FN_SHARED
            self.mutexes.add(mutex)
            self.first_use.setdefault(mutex, ts)
            if op == OP_REQUEST:
                waiting = (mutex, ts, site, shared)
                if mutex not in held:  # else recursive (or self-deadlock: reported as a hang below)
                    self._order(tid, held, mutex, ts, site, shared)
            elif op == OP_ACQUIRE and fn in FN_COND:
                self.cond_waits.pop(tid, None)
                if ret not in COND_NOT_HELD and mutex in held:  # a recursive mutex taken twice stays held
                    held[mutex].depth += 1
                elif ret not in COND_NOT_HELD:
                    self._order(tid, held, mutex, ts, site, False)  # taken again, waiting if need be
                    held[mutex] = Hold(ts, site)
            elif op in (OP_ACQUIRE, OP_TRYLOCK):
                waiting = None
                if ret in ACQUIRED:
                    if mutex in held:
                        held[mutex].depth += 1
                    else:
                        held[mutex] = Hold(ts, site, shared=shared)
            elif op == OP_UNLOCK:
                if fn in FN_COND:  # the wait releases one level of its mutex, as an unlock would
                    self.cond_waits[tid] = (mutex, ts, site)
                if mutex in held:  # else: taken before the capture started
                    held[mutex].depth -= 1
                    if held[mutex].depth <= 0:
                        del held[mutex]
        self.held[tid] = held
        if waiting:
            self.waiting[tid] = waiting

    def _order(self, tid: int, held: dict[int, Hold], mutex: int, ts: int, site: Site, shared: bool) -> None:
        """Edges held -> mutex: the thread waits for mutex while it holds the others."""
        reading = frozenset(m for m, h in held.items() if h.shared)
        for h, hold in held.items():
            edge = self.edges.setdefault((h, mutex), Edge(h, mutex))
            edge.count += 1
            edge.by_thread.setdefault((tid, hold.shared, shared), Evidence(
                self.pid, tid, hold.ts, hold.site, ts, site, frozenset(held) - {h}, reading - {h},
                hold.shared, shared))

    def graph(self) -> dict[int, list[int]]:
        g: dict[int, list[int]] = {}
        for held, wanted in self.edges:
            g.setdefault(held, []).append(wanted)
        return g

    def holders(self, mutex: int, shared: bool = False) -> list[int]:
        """Threads holding the lock in a mode that blocks a request (shared: for reading)."""
        return [tid for tid, held in self.held.items()
                if mutex in held and not (shared and held[mutex].shared)]


def feasible(edges: list[Edge]) -> list[Evidence] | None:
    """One evidence per edge, from pairwise different threads, with no gate lock
    common to all of them (one they all only read is none), each waiting for a
    lock that the next one holds in a conflicting mode; None if the cycle cannot
    deadlock."""
    chosen: list[Evidence] = []

    def search(i: int, used: set[int]) -> bool:
        if i == len(edges):
            gates = frozenset.intersection(*(e.gates for e in chosen))
            gates -= frozenset.intersection(*(e.shared_gates for e in chosen))
            blocks = all(not (ev.wanted_shared and chosen[(k + 1) % len(chosen)].held_shared)
                         for k, ev in enumerate(chosen))
            return blocks and not gates
        for ev in edges[i].by_thread.values():
            if ev.tid not in used:
                chosen.append(ev)
                if search(i + 1, used | {ev.tid}):
                    return True
                chosen.pop()
        return False

    return list(chosen) if search(0, set()) else None


@dataclass
class DeadlockReport:
    processes: int = 0
    mutexes: int = 0
    edges: int = 0
    potential: list[dict] = field(default_factory=list)   # cycles of the lock-order graph
    deadlocks: list[dict] = field(default_factory=list)   # threads deadlocked at the end
    blocked: list[dict] = field(default_factory=list)     # threads still waiting at the end, not in a cycle
    cond_waits: list[dict] = field(default_factory=list)  # threads in a condition wait at the end (no hang)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return self.__dict__.copy()

    def to_text(self) -> str:
        out = [f"{self.processes} processes, {self.mutexes} locks, {self.edges} lock-order edges: "
               f"{len(self.potential)} potential deadlocks, {len(self.deadlocks)} actual deadlocks"]
        out += [f"note: {n}" for n in self.notes]
        for d in self.deadlocks:
            out.append(f"\nDEADLOCK in pid {d['pid']} ({d['comm']}): threads "
                       + ", ".join(str(w["tid"]) for w in d["threads"]) + " wait for each other")
            for w in d["threads"]:
                out.append(f"  thread {w['tid']} waits {w['waited_s']:.3f}s for {w['wants']} "
                           f"held by thread {w['holder']}")
                out.append("    holds " + ", ".join(h["mutex"] for h in w["holds"]))
                out += _frames("    asked at", w["wait_stack"])
                for h in w["holds"]:
                    out += _frames(f"    took {h['mutex']} at", h["stack"])
        for c in self.potential:
            out.append(f"\npotential deadlock in pid {c['pid']} ({c['comm']}): "
                       + " -> ".join(c["cycle"] + [c["cycle"][0]]))
            for e in c["edges"]:
                modes = "" if e["held_mode"] == e["wanted_mode"] == "exclusive" else \
                    f" ({e['held_mode']} -> {e['wanted_mode']})"
                out.append(f"  thread {e['tid']}: holds {e['held']} (taken at +{e['held_s']:.6f}s), "
                           f"asks for {e['wanted']} at +{e['wanted_s']:.6f}s{modes}")
                out += _frames(f"    took {e['held']} at", e["held_stack"])
                out += _frames(f"    asked for {e['wanted']} at", e["wanted_stack"])
        for b in self.blocked:
            out.append(f"\nthread {b['tid']} of pid {b['pid']} ({b['comm']}) still waiting for {b['wants']} "
                       f"after {b['waited_s']:.3f}s (holder: {b['holder'] or 'unknown'})")
        for w in self.cond_waits:
            out.append(f"\nthread {w['tid']} of pid {w['pid']} ({w['comm']}) in a condition wait with "
                       f"{w['mutex']} for {w['waited_s']:.3f}s at the end (released while it waits)")
        return "\n".join(out)


def _age_s(since: int, end: int) -> float:
    """Seconds from `since` to the end of recording. The uprobes still fire while they detach, after
    the end's anchor: a wait that began then is 0 s old at the end, never negative."""
    return max(0, end - since) / 1e9


def _mode(shared: bool) -> str:
    return "read" if shared else "exclusive"


def _frames(title: str, frames: list[str]) -> list[str]:
    return [title + ":"] + [f"      {f}" for f in frames[:12]] if frames else [title + ": (no stack)"]


def applies(cap: ArchiveDb) -> bool:
    return cap.has("lock")


def run(cap: ArchiveDb, params: DeadlockParams = DeadlockParams()) -> DeadlockReport:
    limit = params.max_cycles
    start_ns = cap.info.start_ns or 0
    # When recording stopped (programs detached), not when the archive was closed.
    end = cap.info.stop_ns or cap.query("SELECT max(ts) FROM lock")[0][0]
    report = DeadlockReport()
    procs = _replay(cap)
    names = DataNamer(cap)
    stacks = StackNamer(cap, "lock")
    comms = cap.process_names()
    report.processes = len(procs)
    for p in procs.values():
        report.mutexes += len(p.mutexes)
        report.edges += len(p.edges)

        def mutex_name(m: int, p: ProcessLocks = p) -> str:
            return names.name(p.pid, m, p.first_use.get(m)).text

        for cycle in simple_cycles(p.graph(), limit=limit):
            edges = [p.edges[(cycle[i], cycle[(i + 1) % len(cycle)])] for i in range(len(cycle))]
            evidence = feasible(edges)
            if evidence is None:
                continue
            report.potential.append({
                "pid": p.pid, "comm": comms.get(p.pid, ""), "cycle": [mutex_name(m) for m in cycle],
                "addresses": [hex(m) for m in cycle],
                "edges": [{"held": mutex_name(e.held), "wanted": mutex_name(e.wanted), "tid": ev.tid,
                           "held_mode": _mode(ev.held_shared), "wanted_mode": _mode(ev.wanted_shared),
                           "count": e.count, "held_s": (ev.held_ts - start_ns) / 1e9,
                           "wanted_s": (ev.wanted_ts - start_ns) / 1e9,
                           "held_stack": stacks.frames(p.pid, *ev.held_site),
                           "wanted_stack": stacks.frames(p.pid, *ev.wanted_site)}
                          for e, ev in zip(edges, evidence)]})
        _hangs(p, report, end, mutex_name, stacks, comms.get(p.pid, ""))
        for tid, (m, since, site) in sorted(p.cond_waits.items()):
            report.cond_waits.append({"pid": p.pid, "comm": comms.get(p.pid, ""), "tid": tid,
                                      "mutex": mutex_name(m), "waited_s": _age_s(since, end),
                                      "stack": stacks.frames(p.pid, *site)})
    return report


def _hangs(p: ProcessLocks, report: DeadlockReport, end: int, mutex_name, stacks, comm: str) -> None:
    """Wait-for cycles among the threads still waiting at the end (a thread waits for
    every holder of its lock in a conflicting mode: several readers of an rwlock)."""
    waits_for = {tid: p.holders(m, shared) for tid, (m, _, _, shared) in p.waiting.items()}
    in_cycle: set[int] = set()
    for comp in strongly_connected(waits_for):
        if len(comp) > 1 or comp[0] in waits_for.get(comp[0], ()):  # one thread: waits for itself
            ring = sorted(comp)
            in_cycle.update(ring)
            report.deadlocks.append({"pid": p.pid, "comm": comm, "threads": [
                _waiter(p, t, end, mutex_name, stacks, ring) for t in ring]})
    for tid in sorted(set(waits_for) - in_cycle):
        report.blocked.append({"pid": p.pid, "comm": comm, **_waiter(p, tid, end, mutex_name, stacks)})


def _waiter(p: ProcessLocks, tid: int, end: int, mutex_name, stacks, ring: list[int] = ()) -> dict:
    mutex, since, site, shared = p.waiting[tid]
    holders = p.holders(mutex, shared)
    holder = next((t for t in holders if t in ring), holders[0] if holders else None)
    return {"tid": tid, "wants": mutex_name(mutex), "mode": _mode(shared),
            "holder": holder, "holders": holders, "waited_s": _age_s(since, end),
            "wait_stack": stacks.frames(p.pid, *site),
            "holds": [{"mutex": mutex_name(m), "since_s": (end - h.ts) / 1e9, "stack": stacks.frames(p.pid, *h.site)}
                      for m, h in p.held.get(tid, {}).items()]}


def _replay(cap: ArchiveDb) -> dict[int, ProcessLocks]:
    """Every thread's records in time order (a thread's own records never tie), op and fn in the
    replay's codes."""
    op, fn = _to_replay_codes(cap, "op", "ue_lock_op", _OPS), _to_replay_codes(cap, "fn", "ue_lock_fn", _FNS)
    # Archives from before lock records named their Python frames have no pystack_id.
    columns = [d[0] for d in cap.con.execute("SELECT * FROM lock LIMIT 0").description]
    py = "pystack_id" if "pystack_id" in columns else "-1"
    cur = cap.con.execute(f"""
        SELECT pid, tid, ts, {op} AS op, mutex, ret, ustack_id, caller, {fn} AS fn, {py} AS pystack_id FROM lock
        ORDER BY pid, tid, ts, 4""")
    procs: dict[int, ProcessLocks] = {}
    key, rows = None, []
    while batch := cur.fetchmany(65536):
        for pid, tid, *rest in batch:
            if (pid, tid) != key:
                if rows:
                    procs.setdefault(key[0], ProcessLocks(key[0])).replay(key[1], rows)
                key, rows = (pid, tid), []
            rows.append(rest)
    if rows:
        procs.setdefault(key[0], ProcessLocks(key[0])).replay(key[1], rows)
    return procs


def _to_replay_codes(cap: ArchiveDb, column: str, enum_type: str, codes: dict[str, int]) -> str:
    """SQL mapping the archive's values of `column` to the replay's codes by enumerator name (a value
    the archive's enum does not name becomes 1000 + value: none of the replay's codes)."""
    values = cap.enums.values("lock", enum_type)
    arms = " ".join(f"WHEN {int(values[n])} THEN {int(c)}" for n, c in codes.items() if n in values)
    return f"CASE {column} {arms} ELSE 1000 + {column} END" if arms else column


class DeadlockAnalyzer(ResultRendering[DeadlockReport]):
    name, views = NAME, VIEWS

    def applies(self, db: ArchiveDb) -> bool:
        return applies(db)

    def report_params(self, top: int) -> DeadlockParams:
        return DeadlockParams()

    def run(self, db: ArchiveDb, params: DeadlockParams) -> DeadlockReport:
        return run(db, params)


ANALYZER = DeadlockAnalyzer()
