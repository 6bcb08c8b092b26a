/* SPDX-License-Identifier: GPL-2.0 */
/* Record and map layouts of the network tracer (bpf/net.bpf.c). The Python
 * decoder reads the record from the object's BTF and the flow table layout
 * from here through BTF as well, so this file is their only definition.
 * Fields are fixed width with explicit padding: ring memory is not zeroed. */
#ifndef UETRACE_NET_H
#define UETRACE_NET_H

/* Largest --net-snaplen. The scratch buffer holds twice this so that the
 * verifier can bound the masked record size (see sock.bpf.c). */
#define NET_MAX_SNAPLEN 4096

/* Same values as enum ue_sock_direction: one meaning of "direction" per archive. */
enum ue_net_direction { NET_EGRESS = 0, NET_INGRESS = 1 };

/* Per-interface link-layer framing, written by the loader into `iface_cfg`
 * (raw-IP devices such as tun or wireguard carry no Ethernet header). */
enum ue_net_l2 { NET_L2_ETHERNET = 0, NET_L2_RAW_IP = 1 };

/* One packet seen at XDP (ingress) or TC (egress). */
struct ue_net_packet {
	__u32 kind;          /* UE_KIND_NET_PACKET */
	__u32 cpu;
	__u64 ts;            /* CLOCK_MONOTONIC ns when the hook ran */
	__u32 ifindex;
	__u32 len;           /* original length of the frame (all fragments / the whole skb) */
	__u32 captured;      /* frame bytes that follow in payload[] (<= snaplen) */
	__u8 direction;      /* enum ue_net_direction */
	__u8 ip_version;     /* 4, 6, or 0 when the frame is not IP */
	__u8 protocol;       /* upper-layer protocol (6 TCP, 17 UDP, 1/58 ICMP...) after any IPv6
	                      * extension headers, 0 when not IP; see skip_ipv6_ext() */
	__u8 tcp_flags;      /* FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 URG 0x20 ECE 0x40 CWR 0x80 */
	__u16 eth_proto;     /* ethertype after at most one VLAN tag, host byte order */
	__u16 vlan;          /* 802.1Q VLAN id, 0 when untagged */
	__u16 ip_len;        /* L3 packet length from the IP header (IPv6: payload length + 40) */
	__u16 l4_offset;     /* offset of the TCP/UDP header in the frame; 0 when not parsed */
	__u16 payload_len;   /* L4 payload bytes from the headers (TCP/UDP), 0 otherwise */
	__u16 sport;         /* host byte order */
	__u16 dport;         /* host byte order */
	__u16 window;        /* TCP window, as on the wire (unscaled) */
	__u32 seq;           /* TCP sequence number, host byte order */
	__u32 ack;           /* TCP acknowledgment number, host byte order */
	__u8 ttl;            /* IPv4 TTL / IPv6 hop limit */
	__u8 _pad0[3];
	__u8 src_mac[6];
	__u8 dst_mac[6];
	__u8 saddr[16];      /* IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u8 payload[];      /* the first `captured` bytes of the frame, from the L2 header on */
};

/* Flow table key: one direction of a 5-tuple as seen on one interface. */
struct ue_net_flow_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 ifindex;
	__u16 sport;
	__u16 dport;
	__u8 protocol;
	__u8 ip_version;
	__u8 direction;
	__u8 _pad0;
};

/* Flow table value, one per CPU (LRU per-CPU hash): summed when dumped. */
struct ue_net_flow_val {
	__u64 packets;
	__u64 bytes;         /* sum of original frame lengths */
	__u64 first_ts;
	__u64 last_ts;
	__u8 tcp_flags;      /* OR of every packet's flags */
	__u8 _pad0[7];
};

/* Per interface and direction: what the hook saw and what it could not record. */
struct ue_net_iface_stat {
	__u64 packets;
	__u64 dropped;       /* records lost because the ring buffer was full */
};

/* Keep these enums in the object's BTF (clang drops types nothing uses): the capture
 * writes every enum of the object into schema/<kind>.json, where analysis looks values up. */
enum ue_net_direction unused_ue_net_direction __attribute__((unused));
enum ue_net_l2 unused_ue_net_l2 __attribute__((unused));

#endif
