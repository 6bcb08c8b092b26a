"""Kernel text symbols (/proc/kallsyms), table `kallsyms` under symbols/, so
that kernel frames are named offline."""

from __future__ import annotations

import pyarrow as pa

KALLSYMS_SCHEMA = pa.schema([("addr", pa.uint64()), ("name", pa.string()), ("module", pa.string()),
                             ("type", pa.string())])


def read_kallsyms(path: str = "/proc/kallsyms") -> pa.Table:
    """Kernel text symbols. All-zero addresses mean kptr_restrict hid them: then the
    table is empty and kernel frames stay unnamed (kernel+0x...)."""
    addrs, names, modules, types = [], [], [], []
    try:
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in "tTwW":
                    continue
                addrs.append(int(parts[0], 16))
                types.append(parts[1])
                names.append(parts[2])
                modules.append(parts[3].strip("[]") if len(parts) > 3 else "")
    except OSError:
        return KALLSYMS_SCHEMA.empty_table()
    if not any(addrs):
        return KALLSYMS_SCHEMA.empty_table()
    return pa.Table.from_arrays([pa.array(addrs, pa.uint64()), pa.array(names, pa.string()),
                                 pa.array(modules, pa.string()), pa.array(types, pa.string())],
                                schema=KALLSYMS_SCHEMA)
