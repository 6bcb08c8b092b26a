"""Which capture an archive holds: an id that names it among others (several hosts, several runs) and
the host it ran on. An explicit manifest["capture_id"] (the parts of a rotated set share one) wins;
else derived from the manifest's start, so archives of any format version have one and a
capture keeps its id whether its manifest is the final one or the one a killed capture left."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class CaptureIdentity:
    capture_id: str  # 16 hex digits
    host: str  # the hostname the capture ran on ("" if the manifest lacks it)


# What a capture may name itself (`--rotate` writes one id into every part of a set): archive text, so
# only a short token of safe characters is taken as an id.
_EXPLICIT_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def capture_identity(manifest: dict) -> CaptureIdentity:
    host = manifest.get("host") if isinstance(manifest.get("host"), dict) else {}
    hostname = str(host.get("hostname") or "")
    explicit = manifest.get("capture_id")
    if isinstance(explicit, str) and _EXPLICIT_ID.fullmatch(explicit):
        # Every part of a rotated set carries the same id: the parts are one capture.
        return CaptureIdentity(explicit, hostname)
    start = ((manifest.get("clock") or {}).get("start") or {}) if isinstance(manifest.get("clock"), dict) else {}
    # Boot id + the monotonic start instant identify a capture on its machine; the hostname and the
    # wall-clock start keep two machines that share neither apart.
    key = "|".join(str(v) for v in (host.get("boot_id", ""), host.get("hostname", ""),
                                     start.get("monotonic_ns", ""), start.get("realtime_ns", "")))
    return CaptureIdentity(hashlib.sha256(key.encode()).hexdigest()[:16], hostname)
