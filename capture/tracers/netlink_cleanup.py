"""Find and remove clsact filters that a crashed capture left behind.

XDP and TCX attachments are bpf_links and die with the process. The clsact
fallback (kernels before 6.6) is a netlink attachment that stays until removed,
so every filter uetrace attaches carries a fixed tag (TC_HANDLE, TC_PRIORITY)
and a program named "ue_*"; a filter with both is ours and is removed at the
next capture start and by `trace doctor --cleanup`.
"""

from __future__ import annotations

import socket

from uetrace.capture import libbpf

TC_HANDLE = 0x7565          # "ue"
TC_PRIORITY = 0x7565
PROG_PREFIX = "ue_"


def leftover_filters() -> list[tuple[int, str, bool, int, str]]:
    """(ifindex, ifname, egress, prog_id, prog_name) of each tagged uetrace filter in this netns."""
    found = []
    for ifindex, ifname in socket.if_nameindex():
        for egress in (False, True):
            prog_id = libbpf.tc_query(ifindex, egress, TC_HANDLE, TC_PRIORITY)
            if prog_id is None:
                continue
            name = libbpf.prog_name(prog_id) or ""
            if name.startswith(PROG_PREFIX):
                found.append((ifindex, ifname, egress, prog_id, name))
    return found


def remove_leftovers() -> list[str]:
    """Detach every leftover uetrace filter; returns one line per filter removed."""
    removed = []
    for ifindex, ifname, egress, prog_id, name in leftover_filters():
        if libbpf.tc_detach(ifindex, egress, TC_HANDLE, TC_PRIORITY):
            removed.append(f"{ifname} {'egress' if egress else 'ingress'}: clsact filter {name} (prog id {prog_id})")
    return removed
