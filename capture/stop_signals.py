"""What the signals that stop a capture do while it runs.

SIGINT (Ctrl-C), SIGTERM and SIGHUP (the ssh session or terminal went away) only
ask the capture to stop: the drain loop sees the flag, and a second signal must
not cut the final manifest or the symbol snapshot. A third one quits at once
(should teardown ever hang), leaving NAME.partial with every finished member.
SIGXFSZ is ignored, so that going over RLIMIT_FSIZE is a write error (EFBIG),
handled like a full disk, instead of killing the process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
FORCE_QUIT_AFTER = 3


@contextlib.contextmanager
def stop_signals(request_stop: Callable[[str], None], partial: Path):
    """Install the handlers for the duration of the block (main thread only: Python delivers
    signals there; elsewhere, e.g. a capture run from a library's thread, nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    count = 0

    def handler(signum, frame):
        nonlocal count
        count += 1
        if count >= FORCE_QUIT_AFTER:
            os.write(2, f"trace: error: stop signal {count} ({signal.Signals(signum).name}): quitting now; what "
                        f"was written is in {partial}\n".encode())
            os._exit(128 + signum)
        request_stop("signal")

    old = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    old[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
