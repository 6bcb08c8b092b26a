"""Snapshot of the network interfaces of this network namespace (pyroute2 over
netlink): index, name, MAC, MTU, link type, flags and addresses. The net
tracer picks its interfaces from it and writes it into the archive
(symbols/interfaces), so that offline analysis and the pcapng export can name
interfaces by index and choose their link type."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import pyarrow as pa

IFF_UP, IFF_LOOPBACK = 0x1, 0x8
# include/uapi/linux/if_arp.h: link types whose frames carry no Ethernet header
# (tun and wireguard are ARPHRD_NONE; ipip/ip6tnl/sit are tunnels without header_ops).
ARPHRD_RAW_IP = {519: "rawip", 768: "tunnel", 769: "tunnel6", 776: "sit", 0xFFFE: "none"}


@dataclass
class Interface:
    ifindex: int
    name: str
    mac: str
    mtu: int
    link_type: int            # ARPHRD_* from the kernel
    kind: str                 # rtnl link kind: veth, bridge, ... ("" for physical and lo)
    up: bool
    loopback: bool
    addresses: list[str] = field(default_factory=list)  # "addr/prefixlen"

    @property
    def raw_ip(self) -> bool:
        """Frames start at the IP header (tun, wireguard, ipip...)."""
        return self.link_type in ARPHRD_RAW_IP


def snapshot() -> list[Interface]:
    """Every interface of the current network namespace, in ifindex order."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.get_links()
        addrs = ipr.get_addr()
    by_index: dict[int, list[str]] = {}
    for a in addrs:
        addr = a.get_attr("IFA_ADDRESS") or a.get_attr("IFA_LOCAL")
        if addr:
            by_index.setdefault(a["index"], []).append(f"{addr}/{a['prefixlen']}")
    out = []
    for link in links:
        info = link.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") or "") if info else ""
        flags = link["flags"]
        out.append(Interface(ifindex=link["index"], name=link.get_attr("IFLA_IFNAME") or "",
                             mac=link.get_attr("IFLA_ADDRESS") or "", mtu=link.get_attr("IFLA_MTU") or 0,
                             link_type=link["ifi_type"], kind=kind, up=bool(flags & IFF_UP),
                             loopback=bool(flags & IFF_LOOPBACK), addresses=by_index.get(link["index"], [])))
    return sorted(out, key=lambda i: i.ifindex)


SCHEMA = pa.schema([("ifindex", pa.uint32()), ("name", pa.string()), ("mac", pa.string()), ("mtu", pa.uint32()),
                    ("link_type", pa.uint32()), ("kind", pa.string()), ("up", pa.bool_()),
                    ("loopback", pa.bool_()), ("addresses", pa.list_(pa.string())),
                    ("xdp_attach", pa.string()), ("tc_attach", pa.string())])


def to_table(ifaces: list[Interface], attach: dict[int, dict[str, str]]) -> pa.Table:
    """The archive table; `attach` maps ifindex -> {"xdp": how, "tc": how} ("" when not attached)."""
    rows = [{**asdict(i), "xdp_attach": attach.get(i.ifindex, {}).get("xdp", ""),
             "tc_attach": attach.get(i.ifindex, {}).get("tc", "")} for i in ifaces]
    return pa.Table.from_pylist(rows, schema=SCHEMA)
