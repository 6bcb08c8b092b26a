"""The capture session's side of --rotate (capture/parts.py has the files, SegmentSink the switch).

When the part being written nears --rotate, a thread of its own (`uetrace-rotate`) ends it while the
drain loop goes on queueing records behind: it waits until every record drained so far is decoded
(its pids are then with the process snapshotter), has the snapshotter write those processes and each
tracer write what the part's records need offline (Tracer.part_done: stacks, symbols), then queues
the end of the part in the sink. There, on the sink's thread, the part gets its final manifest (its
own segments, rows and losses, its time window) and the next part its first one; the sink closes the
part and opens the next, which starts with the schema members and every symbols segment written so far.
"""

from __future__ import annotations

import copy
import json
import threading

import pyarrow as pa

from uetrace.capture.manifest import clock_anchors

MIN_PART_GROWTH = 1 << 20   # a part whose carried snapshot alone nears --rotate still grows by this
SNAPSHOT_FLUSH_S = 5.0      # a part waits this long at most for its processes' snapshot


def size_budget(limit: int) -> int:
    """When to stop (--max-size) or end a part (--rotate): what is still to come after that (rows
    buffered for a row group, segment footers, the symbol snapshot, the final manifest) needs room
    below the limit."""
    return limit - max(1 << 20, limit // 10)


class Rotation:
    def __init__(self, session) -> None:
        self.session = session
        self.rotate: int = session.opts.rotate
        self.keep: int | None = session.opts.keep
        self.parts: list[str] = []          # the parts closed so far, in order
        self.removed: list[str] = []        # ...and those --keep deleted
        self.finished_bytes = 0             # of the closed parts, deleted ones included
        self._start_size = 0                # what a new part holds before its first record
        self._base: dict[str, dict] = {}    # tracer -> its loss counters when the part began
        self._thread: threading.Thread | None = None
        self._noted: set[str] = set()

    def due(self, size_so_far: int) -> bool:
        if self._thread is not None and self._thread.is_alive():
            return False
        return size_so_far >= max(size_budget(self.rotate), self._start_size + MIN_PART_GROWTH)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._end_part, name="uetrace-rotate", daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _end_part(self) -> None:
        s = self.session
        barrier = threading.Event()
        s.sink.put(lambda: barrier.set() or {})
        barrier.wait()
        s.snap.flush(SNAPSHOT_FLUSH_S)
        s.sink.put(self._part_done_tables, area="symbols")
        done = threading.Event()
        s.sink.rotate(self._finish_part, lambda result: (self._rotated(result), done.set()))
        done.wait()

    def _part_done_tables(self) -> dict:
        """A sink job: what each tracer writes as the part ends, one table per kind."""
        got: dict[str, list] = {}
        for run in self.session.runs:
            run.tracer.part_done(lambda k, t: got.setdefault(k, []).append(t))
        return {k: pa.concat_tables(ts) for k, ts in got.items()}

    def _finish_part(self, summary: dict) -> tuple[bytes, bytes]:
        """On the sink's thread: the final manifest of the part that ends and the first of the next."""
        s = self.session
        now = clock_anchors()
        s.manifest["clock"]["detached"] = now
        final = s.completed_manifest(summary.get("segments") or [], summary.get("rows_written") or {}, "rotate")
        m = s.manifest
        m["part"] = {"number": m["part"]["number"] + 1, "window": {"start": now}}
        m["clock"] = {"start": now, "attached": now}
        self._base = {run.tracer.name: {"lost": run.lost, "lost_per_cpu": copy.deepcopy(run.lost_per_cpu)}
                      for run in s.runs}
        return json.dumps(final, indent=1).encode(), json.dumps(m, indent=1).encode()

    def part_counters(self, m: dict, name: str, kinds: dict, lost: int, per_cpu: dict,
                      windows: list) -> tuple[int, int, dict, list]:
        """A tracer's records and losses in the part `m` describes: its rows, what was lost since it began."""
        base = self._base.get(name, {})
        before = base.get("lost_per_cpu", {})
        per_cpu = {n: [a - b for a, b in zip(v, before.get(n, [0] * len(v)))] for n, v in per_cpu.items()}
        since = m["clock"]["start"]["monotonic_ns"]
        return (sum(k["records"] for k in kinds.values()), lost - base.get("lost", 0), per_cpu,
                [w for w in windows if w["until_ns"] >= since])

    def _rotated(self, result: dict | None) -> None:
        """On the sink's thread, once the next part is open (None: it could not be; the sink's error
        stops the capture)."""
        if not result:
            return
        self.parts.append(result["closed"])
        self.removed.extend(result["removed"])
        self.finished_bytes = result["finished_bytes"]
        self._start_size = result["start_size"]
        if result["removed"]:
            self._notice("keep", f"--keep {self.keep}: the oldest parts are deleted as new ones start "
                                 f"(first: {result['removed'][0]})")
        if result["start_size"] > self.rotate // 2:
            self._notice("large", f"every part starts with {result['start_size']:,} bytes of symbol snapshot, "
                                  f"more than half of --rotate: parts grow past {self.rotate:,} bytes")

    def _notice(self, key: str, text: str) -> None:
        if key not in self._noted:
            self._noted.add(key)
            if self.session.on_notice:
                self.session.on_notice(text)
