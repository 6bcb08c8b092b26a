"""Python frames of stack samples, merged into their native stacks.

A CPython sample carries its Python frames (`pystack_id` -> `py_stacks`, keyed by
code object address and checksum into `py_code`; capture/tracers/python_frames.py).
Each `_PyEval_EvalFrameDefault` native frame ran a chain of Python frames that starts
at an entry frame (UE_PY_ENTRY in lasti); as py-spy does, the Nth eval frame from the
root is replaced by the frames of the Nth entry from the root. When the native walk is
truncated (CPython is usually built without frame pointers), the eval frames that
were found are paired from the leaf instead, the native frames outside them are
dropped, and the Python frames hang under the thread root.

A Python frame is named `qualname (file.py:line)`, its kind is "python" (outputs
mark it [py]); the line is computed from the code object's line table (the format of
3.11 and 3.12, CPython's Objects/locations.md; 3.10's own, Objects/lnotab_notes.txt).
"""

from __future__ import annotations

import os

from uetrace.analyze.archive_db import ArchiveDb

EVAL_FUNCTION = "_PyEval_EvalFrameDefault"
ENTRY_BIT = 0x80000000  # UE_PY_ENTRY in bpf/stack.h


def available(cap: ArchiveDb) -> bool:
    """Whether the capture recorded Python frames (archives before them have no pystack_id)."""
    if not (cap.has("py_stacks") and cap.has("stack_sample")):
        return False
    return "pystack_id" in [d[0] for d in cap.con.execute('SELECT * FROM stack_sample LIMIT 0').description]


def line_of(linetable: bytes, firstlineno: int, lasti: int) -> int | None:
    """The source line of instruction index lasti (code units) from a 3.11/3.12 co_linetable,
    or None when the instruction has no line. Entries: a first byte 1CCCCLLL (code C,
    length L+1 code units), then per code: 15 no location; 14 long form (svarint line
    delta, three varints); 13 svarint line delta only; 10-12 line delta C-10 and two
    column bytes; 0-9 line delta 0 and one column byte."""
    line, addr, i, n = firstlineno, 0, 0, len(linetable)

    def varint() -> int:
        nonlocal i
        b = linetable[i]
        i += 1
        val, shift = b & 63, 6
        while b & 64 and i < n:
            b = linetable[i]
            i += 1
            val |= (b & 63) << shift
            shift += 6
        return val

    def svarint() -> int:
        v = varint()
        return -(v >> 1) if v & 1 else v >> 1

    while i < n:
        first = linetable[i]
        i += 1
        code, length = (first >> 3) & 15, (first & 7) + 1
        has_line = True
        if code == 15:
            has_line = False
        elif code == 14:
            line += svarint()
            varint(), varint(), varint()
        elif code == 13:
            line += svarint()
        elif code >= 10:
            line += code - 10
            i += 2
        else:
            i += 1
        if addr <= lasti < addr + length:
            return line if has_line else None
        addr += length
    return None


def line_of_310(linetable: bytes, firstlineno: int, lasti: int) -> int | None:
    """The same for a 3.10 co_linetable: (byte offset delta, signed line delta) pairs, a line
    delta of -128 meaning no line (CPython 3.10's Objects/lnotab_notes.txt)."""
    addr, line, end = lasti * 2, firstlineno, 0
    for i in range(0, len(linetable) - 1, 2):
        start, end = end, end + linetable[i]
        delta = linetable[i + 1] - 256 if linetable[i + 1] > 127 else linetable[i + 1]
        current = None if delta == -128 else line + delta
        if current is not None:
            line = current
        if start <= addr < end:
            return current
    return None


class PyFrames:
    """Python stacks of a capture, as named groups (one per eval call), root first."""

    def __init__(self, cap: ArchiveDb, keys: set[tuple[int, int]], tracer: str = "stack"):
        """keys: the (pid, pystack_id) pairs to load, ids of `tracer`'s records."""
        self.groups: dict[tuple[int, int], list[list[tuple[str, str, int | None]]]] = {}
        if not keys or not (available(cap) if tracer == "stack" else cap.has("py_stacks")):
            return
        con = cap.con
        ids = sorted({k[1] for k in keys})
        # Archives from before lock and alloc recorded Python frames: every row is the stack tracer's.
        columns = [d[0] for d in con.execute("SELECT * FROM py_stacks LIMIT 0").description]
        if "tracer" not in columns and tracer != "stack":
            return
        own = "AND tracer = ?" if "tracer" in columns else ""
        stacks = {sid: (code, check, lasti) for sid, code, check, lasti in con.execute(
            "SELECT pystack_id, code, checksum, lasti FROM py_stacks WHERE pystack_id IN "
            f"(SELECT unnest(?::INTEGER[])) {own}", [ids, tracer] if own else [ids]).fetchall()}
        pids = sorted({k[0] for k in keys})
        # Only the code objects these stacks name: a report asks for a few stacks at a time.
        addrs = sorted({a for sid in {k[1] for k in keys} if sid in stacks for a in stacks[sid][0]})
        code = {}
        if cap.has("py_code"):
            for pid, addr, check, qualname, filename, first, table, version in con.execute(
                    "SELECT pid, addr, checksum, qualname, filename, firstlineno, linetable, version FROM py_code "
                    "WHERE pid IN (SELECT unnest(?::UINTEGER[])) AND addr IN (SELECT unnest(?::UBIGINT[]))",
                    [pids, addrs]).fetchall():
                decode = line_of_310 if (version or "").startswith("3.10") else line_of
                code[(pid, addr, check)] = (qualname, filename, first, bytes(table or b""), decode)
        for pid, sid in keys:
            if sid not in stacks:
                continue
            addrs, checks, lastis = stacks[sid]
            groups: list[list[tuple[str, str, int | None]]] = []
            # Innermost first in the record: walk from the root.
            for addr, check, lasti in reversed(list(zip(addrs, checks, lastis))):
                known = code.get((pid, addr, check))
                if known is None:
                    frame = (f"[python code {addr:#x}]", "", None)
                else:
                    qualname, filename, first, table, decode = known
                    frame = (qualname, filename, decode(table, first, lasti & ~ENTRY_BIT))
                if lasti & ENTRY_BIT or not groups:
                    groups.append([])
                groups[-1].append(frame)
            self.groups[(pid, sid)] = groups


def frame_label(qualname: str, filename: str, line: int | None) -> str:
    if not filename:
        return qualname
    return f"{qualname} ({os.path.basename(filename)}:{line if line is not None else '?'})"


def merge(native: list, groups: list[list], truncated: bool, make) -> list:
    """Native user frames (root first) with their eval frames replaced by the Python groups
    (root first); make(group) turns one group into frames. See the module doc for the rules."""
    evals = [i for i, f in enumerate(native) if f.name == EVAL_FUNCTION]
    if truncated:
        pairs = list(zip(reversed(evals), reversed(groups)))[::-1]
        outer = groups[:len(groups) - len(pairs)]
        out = [f for g in outer for f in make(g)]
        if not pairs:  # no eval frame found: keep only the native leaf, which is exact
            return out + native[-1:]
        start = pairs[0][0]
    else:
        pairs = list(zip(evals, groups))
        extra = groups[len(pairs):]
        if extra and pairs:
            pairs[-1] = (pairs[-1][0], [f for g in [pairs[-1][1], *extra] for f in g])
        out, start = [], 0
        if not pairs:  # no eval frame named (no symbols?): Python first, under the thread root
            return [f for g in groups for f in make(g)] + native
    replaced = dict(pairs)
    for i in range(start, len(native)):
        out.extend(make(replaced[i]) if i in replaced else [native[i]])
    return out
