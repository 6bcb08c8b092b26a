"""Compiled BPF objects (built from the *.bpf.c beside them by `make -C bpf`)."""
from pathlib import Path

OBJECT_DIR = Path(__file__).resolve().parent


def object_path(name: str) -> Path:
    """Path of a shipped BPF object, e.g. object_path("sock") -> .../sock.bpf.o."""
    return OBJECT_DIR / f"{name}.bpf.o"
