"""Run the `trace` CLI as another user: `python tests/as_user.py UID ARGS...`.

Where the Python installation is not readable by that user (here: pyenv under /root, 0700),
`setpriv --reuid` cannot even import the standard library. So this starts as root, imports
every uetrace module (and what they import) while it may still read the installation, then
drops to UID for good (uetrace.capture.privsep.drop_to: no groups, no capabilities,
no_new_privs) before the CLI parses its arguments or touches any file: everything the command
does with its input and output, it does without privilege.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import uetrace  # noqa: F401
from uetrace.capture.privsep import WriterUser, capability_sets, drop_to

# Imported on first use by the libraries: load them now, while the installation is readable.
LAZY = ("difflib", "csv", "html", "tarfile", "numpy.ma", "encodings.idna", "encodings.latin_1", "encodings.ascii",
        "hpack", "pyarrow.compute", "pyarrow.dataset", "pyarrow.ipc", "pyarrow.parquet", "pyarrow.csv", "pyarrow.json")
# Packages imported module by module (capture/ and analyze/ are mapped into uetrace: walked on their own).
WHOLE = ("uetrace", "uetrace.capture", "uetrace.analyze", "rich", "click", "elftools")


def preload() -> None:
    for name in WHOLE:
        pkg = importlib.import_module(name)
        for mod in pkgutil.walk_packages(pkg.__path__, f"{name}."):
            if mod.name.endswith("__main__") or "jupyter" in mod.name:   # __main__ runs the CLI
                continue
            try:
                importlib.import_module(mod.name)
            except Exception:   # noqa: BLE001 - optional parts of a library (IPython support...)
                pass
    for name in LAZY:
        importlib.import_module(name)


def main() -> None:
    preload()
    uid = int(sys.argv[1])
    drop_to(WriterUser(uid, uid, str(uid)))
    caps = capability_sets()
    assert caps["CapEff"] == caps["CapPrm"] == 0, caps
    from uetrace.cli import main as cli_main

    cli_main(args=sys.argv[2:], prog_name="trace")


if __name__ == "__main__":
    main()
