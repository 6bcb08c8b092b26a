"""Who writes a capture's archive when root runs it for someone (issue 11 item 5).

Under sudo (SUDO_UID/SUDO_GID) or with `--user NAME`, the archive is written by a process that
runs as that user with no capability at all: it creates the file (so the user owns it), encodes
the segments and writes them (capture/writer_child.py). The root process keeps only what needs
privilege: the BPF objects and their links, the rings, the /proc and symbol reads. A real root
login (no SUDO_UID, no --user) writes as before, in one process.
"""

from __future__ import annotations

import ctypes
import os
import pwd
from dataclasses import dataclass

from uetrace.errors import BadInputError, UetraceError

PR_SET_NO_NEW_PRIVS = 38


@dataclass(frozen=True)
class WriterUser:
    uid: int
    gid: int
    name: str


def writer_user(user: str | None, environ: dict | None = None) -> WriterUser | None:
    """The user the archive is written as: --user NAME (or a uid), else the sudo caller; None to
    write as this process (not root, or root logged in as root)."""
    env = os.environ if environ is None else environ
    if os.geteuid() != 0:
        if user is not None:
            raise BadInputError("--user needs root (the capture switches to that user to write)")
        return None
    if user is not None:
        try:
            pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        except (KeyError, ValueError):
            raise BadInputError(f"--user {user!r}: no such user") from None
        return WriterUser(pw.pw_uid, pw.pw_gid, pw.pw_name)
    uid, gid = env.get("SUDO_UID", ""), env.get("SUDO_GID", "")
    if not uid.isdigit() or int(uid) == 0:
        return None
    try:
        name = pwd.getpwuid(int(uid)).pw_name
    except KeyError:
        name = uid
    return WriterUser(int(uid), int(gid) if gid.isdigit() else int(uid), name)


def drop_to(user: WriterUser) -> None:
    """Become `user` for good: no supplementary groups, real/effective/saved ids all the user's
    (setuid from root to another uid clears every capability set but the bounding set), and no
    way back through a setuid binary or file capabilities (PR_SET_NO_NEW_PRIVS)."""
    os.setgroups([])
    os.setresgid(user.gid, user.gid, user.gid)
    os.setresuid(user.uid, user.uid, user.uid)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise UetraceError(f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(ctypes.get_errno())}")
    caps = capability_sets()
    if user.uid != 0 and (caps.get("CapEff") or caps.get("CapPrm") or caps.get("CapAmb")):
        raise UetraceError(f"still holding capabilities after switching to {user.name}: {caps}")


def capability_sets(pid: int | str = "self") -> dict[str, int]:
    """CapInh, CapPrm, CapEff, CapBnd, CapAmb of a process, from /proc/PID/status."""
    caps: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key.startswith("Cap"):
                caps[key] = int(value.strip(), 16)
    return caps
