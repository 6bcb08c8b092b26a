// SPDX-License-Identifier: GPL-2.0
/* Network tracer: XDP on ingress and TC (TCX link or clsact) on egress.
 * Each program parses the Ethernet / VLAN / IPv4 / IPv6 (with its extension
 * headers) / TCP / UDP headers, copies the first `snaplen` bytes of the frame,
 * counts the flow in an LRU table, and always passes the packet on unchanged: XDP_PASS, and TC_ACT_UNSPEC
 * (TCX_NEXT), which lets any later TC program decide as if we were absent. */
#include "common.bpf.h"
#include <bpf/bpf_endian.h>
#include "net.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 snaplen = 128;
/* 1 when some attached interface carries raw IP (iface_cfg has entries): saves
 * every Ethernet-only capture a hash lookup per packet. */
const volatile __u8 any_raw_ip = 0;

/* vmlinux.h carries no #defines */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8
#define IP_FRAG_OFFSET 0x1fff
#define IP6_FRAG_OFFSET 0xfff8
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
/* IPv6 extension headers walked before giving up on reaching TCP/UDP
 * (the kernel's own parsers and xdp-tools stop at the same order of depth). */
#define IPV6_EXT_MAX 6
#define TC_ACT_UNSPEC (-1)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the loader */
} events SEC(".maps");

/* Where a packet is parsed when the ring is full (its headers still count in
 * the flow table). */
struct scratch {
	__u8 buf[sizeof(struct ue_net_packet)];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* Per-CPU values: no atomics on the packet path; user space sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 65536); /* resized by the loader */
	__type(key, struct ue_net_flow_key);
	__type(value, struct ue_net_flow_val);
} flows SEC(".maps");

/* key: ifindex << 1 | direction */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct ue_net_iface_stat);
} iface_stats SEC(".maps");

/* ifindex -> enum ue_net_l2, filled by the loader; absent means Ethernet. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u32);
} iface_cfg SEC(".maps");

/* Keep the record and map layouts in BTF for the Python decoder. */
struct ue_net_packet *unused_net_packet __attribute__((unused));
struct ue_net_flow_key *unused_net_flow_key __attribute__((unused));
struct ue_net_flow_val *unused_net_flow_val __attribute__((unused));
struct ue_net_iface_stat *unused_net_iface_stat __attribute__((unused));
enum ue_net_direction unused_net_direction __attribute__((unused));
enum ue_net_l2 unused_net_l2 __attribute__((unused));

_Static_assert(sizeof(struct ue_net_packet) == 104, "ue_net_packet layout changed: update the decoder test");
_Static_assert(sizeof(struct ue_net_flow_key) == 44, "ue_net_flow_key layout changed");

static __always_inline void parse_l4(struct ue_net_packet *ev, void *data, void *l4, void *end, __u32 l4len)
{
	if (ev->protocol == IPPROTO_TCP) {
		struct tcphdr *th = l4;
		if ((void *)(th + 1) > end)
			return;
		__u32 doff = th->doff * 4;
		ev->l4_offset = l4 - data;
		ev->sport = bpf_ntohs(th->source);
		ev->dport = bpf_ntohs(th->dest);
		ev->seq = bpf_ntohl(th->seq);
		ev->ack = bpf_ntohl(th->ack_seq);
		ev->window = bpf_ntohs(th->window);
		ev->tcp_flags = ((__u8 *)th)[13];
		ev->payload_len = l4len > doff ? l4len - doff : 0;
	} else if (ev->protocol == IPPROTO_UDP) {
		struct udphdr *uh = l4;
		if ((void *)(uh + 1) > end)
			return;
		__u32 ulen = bpf_ntohs(uh->len);
		ev->l4_offset = l4 - data;
		ev->sport = bpf_ntohs(uh->source);
		ev->dport = bpf_ntohs(uh->dest);
		ev->payload_len = ulen > sizeof(*uh) ? ulen - sizeof(*uh) : 0;
	}
}

/* Walk the IPv6 extension headers that start at p with next-header *proto:
 * hop-by-hop, routing, destination options, fragment and AH. Returns the
 * upper-layer header with its protocol in *proto, or NULL when there is no
 * upper-layer header in this packet (a fragment other than the first, more
 * than IPV6_EXT_MAX headers, or a truncated chain); *proto is then the last
 * next-header value read (for a later fragment: the fragmented protocol). */
static __always_inline void *skip_ipv6_ext(void *p, void *end, __u8 *proto)
{
	__u8 nh = *proto;

	for (int i = 0; i <= IPV6_EXT_MAX; i++) {
		struct ipv6_opt_hdr *h = p;
		struct frag_hdr *fh = p;

		switch (nh) {
		case NEXTHDR_HOP:
		case NEXTHDR_ROUTING:
		case NEXTHDR_DEST:
			if ((void *)(h + 1) > end || i == IPV6_EXT_MAX)
				return NULL;
			nh = h->nexthdr;
			p += (h->hdrlen + 1) * 8;
			break;
		case NEXTHDR_AUTH:
			if ((void *)(h + 1) > end || i == IPV6_EXT_MAX)
				return NULL;
			nh = h->nexthdr;
			p += (h->hdrlen + 2) * 4;
			break;
		case NEXTHDR_FRAGMENT:
			if ((void *)(fh + 1) > end || i == IPV6_EXT_MAX)
				return NULL;
			*proto = fh->nexthdr;
			if (fh->frag_off & bpf_htons(IP6_FRAG_OFFSET))
				return NULL; /* a later fragment: no L4 header here */
			nh = fh->nexthdr;
			p = fh + 1;
			break;
		default:
			*proto = nh;
			return p;
		}
		*proto = nh;
	}
	return NULL;
}

/* Fill the parsed header fields of ev from the linear part of the frame.
 * Stops quietly at the first header that is not there: the record still
 * carries the length and the captured bytes. */
static __always_inline void parse(struct ue_net_packet *ev, void *data, void *end, __u32 l2)
{
	void *p = data;
	__u16 proto = 0;

	if (l2 == NET_L2_ETHERNET) {
		struct ethhdr *eth = p;
		if ((void *)(eth + 1) > end)
			return;
		__builtin_memcpy(ev->dst_mac, eth->h_dest, 6);
		__builtin_memcpy(ev->src_mac, eth->h_source, 6);
		proto = eth->h_proto;
		p = eth + 1;
		if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
			struct vlan_hdr *vh = p;
			if ((void *)(vh + 1) > end)
				return;
			ev->vlan = bpf_ntohs(vh->h_vlan_TCI) & 0x0fff;
			proto = vh->h_vlan_encapsulated_proto;
			p = vh + 1;
		}
	} else {
		__u8 *v = p;
		if ((void *)(v + 1) > end)
			return;
		proto = (*v >> 4) == 4 ? bpf_htons(ETH_P_IP) : (*v >> 4) == 6 ? bpf_htons(ETH_P_IPV6) : 0;
	}
	ev->eth_proto = bpf_ntohs(proto);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = p;
		if ((void *)(ip + 1) > end)
			return;
		__u32 ihl = ip->ihl * 4;
		ev->ip_version = 4;
		ev->protocol = ip->protocol;
		ev->ttl = ip->ttl;
		ev->ip_len = bpf_ntohs(ip->tot_len);
		__builtin_memcpy(ev->saddr, &ip->saddr, 4);
		__builtin_memcpy(ev->daddr, &ip->daddr, 4);
		if (ihl < sizeof(*ip) || (ip->frag_off & bpf_htons(IP_FRAG_OFFSET)))
			return; /* bad header, or a later fragment: no L4 header here */
		parse_l4(ev, data, p + ihl, end, ev->ip_len > ihl ? ev->ip_len - ihl : 0);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = p;
		if ((void *)(ip6 + 1) > end)
			return;
		__u32 plen = bpf_ntohs(ip6->payload_len);
		ev->ip_version = 6;
		ev->ttl = ip6->hop_limit;
		ev->ip_len = plen + sizeof(*ip6);
		__builtin_memcpy(ev->saddr, &ip6->saddr, 16);
		__builtin_memcpy(ev->daddr, &ip6->daddr, 16);
		__u8 nh = ip6->nexthdr;
		void *l4 = skip_ipv6_ext(ip6 + 1, end, &nh);
		ev->protocol = nh;
		if (!l4)
			return;
		__u32 ext = l4 - (void *)(ip6 + 1);
		parse_l4(ev, data, l4, end, plen > ext ? plen - ext : 0);
	}
}

static __always_inline void count_flow(struct ue_net_packet *ev)
{
	struct ue_net_flow_key k = {};
	__builtin_memcpy(k.saddr, ev->saddr, 16);
	__builtin_memcpy(k.daddr, ev->daddr, 16);
	k.ifindex = ev->ifindex;
	k.sport = ev->sport;
	k.dport = ev->dport;
	k.protocol = ev->protocol;
	k.ip_version = ev->ip_version;
	k.direction = ev->direction;
	struct ue_net_flow_val *v = bpf_map_lookup_elem(&flows, &k);
	if (v) {
		if (!v->packets)
			v->first_ts = ev->ts; /* first packet of this flow on this CPU */
		v->packets += 1;
		v->bytes += ev->len;
		v->last_ts = ev->ts;
		v->tcp_flags |= ev->tcp_flags;
		return;
	}
	struct ue_net_flow_val nv = {
		.packets = 1, .bytes = ev->len, .first_ts = ev->ts, .last_ts = ev->ts, .tcp_flags = ev->tcp_flags,
	};
	if (bpf_map_update_elem(&flows, &k, &nv, BPF_NOEXIST) && !bpf_map_lookup_elem(&flows, &k))
		count_drop(UE_DROP_MAP_FULL);
}

static __always_inline struct ue_net_iface_stat *iface_stat(__u32 ifindex, __u8 dir)
{
	__u32 key = ifindex << 1 | dir;
	struct ue_net_iface_stat *st = bpf_map_lookup_elem(&iface_stats, &key);
	if (st)
		return st;
	struct ue_net_iface_stat zero = {};
	bpf_map_update_elem(&iface_stats, &key, &zero, BPF_NOEXIST);
	st = bpf_map_lookup_elem(&iface_stats, &key);
	if (!st)
		count_drop(UE_DROP_MAP_FULL);
	return st;
}

/* Parse the frame into a record: straight into a ring slot (record_slot bytes,
 * see common.bpf.h), or, when the ring is full, into the per-CPU scratch buffer
 * so that the flow table and counters still see the packet (*in_ring = false). */
static __always_inline struct ue_net_packet *begin(__u8 dir, __u32 ifindex, __u32 len, void *data, void *end,
						   bool *in_ring)
{
	__u32 zero = 0, l2 = NET_L2_ETHERNET;
	if (any_raw_ip) {
		__u32 *cfg = bpf_map_lookup_elem(&iface_cfg, &ifindex);
		if (cfg)
			l2 = *cfg;
	}
	struct ue_net_packet *ev = bpf_ringbuf_reserve(&events, record_slot, 0);
	*in_ring = ev != NULL;
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
		if (!s)
			return NULL;
		ev = (struct ue_net_packet *)s->buf;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->kind = UE_KIND_NET_PACKET;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = bpf_ktime_get_ns();
	ev->ifindex = ifindex;
	ev->len = len;
	ev->direction = dir;
	parse(ev, data, end, l2);
	return ev;
}

/* How many frame bytes to copy: 0..snaplen, in a form the verifier bounds
 * (snaplen is frozen .rodata, so the verifier knows it; the loader sizes
 * record_slot to hold it). */
static __always_inline __u64 capture_len(__u32 len)
{
	__u64 cap = len;
	/* clang would otherwise pass the helper a register it knows is clamped
	 * but the verifier does not; the empty asm hides the value. */
	asm volatile("" : "+r"(cap));
	if (cap > snaplen)
		cap = snaplen;
	return cap;
}

static __always_inline void submit(struct ue_net_packet *ev, __u64 cap, bool in_ring)
{
	ev->captured = cap;
	count_flow(ev);
	struct ue_net_iface_stat *st = iface_stat(ev->ifindex, ev->direction);
	if (st) {
		st->packets += 1;
		if (!in_ring)
			st->dropped += 1;
	}
	if (in_ring)
		bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

SEC("xdp.frags")
int ue_net_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	__u32 len = bpf_xdp_get_buff_len(ctx);
	bool in_ring;
	struct ue_net_packet *ev = begin(NET_INGRESS, ctx->ingress_ifindex, len, data, end, &in_ring);
	if (!ev)
		return XDP_PASS;
	__u64 cap = in_ring ? capture_len(len) : 0;
	if (cap && bpf_xdp_load_bytes(ctx, 0, ev->payload, cap)) {
		count_drop(UE_DROP_READ_FAULT);
		cap = 0;
	}
	submit(ev, cap, in_ring);
	return XDP_PASS;
}

SEC("tc")
int ue_net_tc_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	__u32 len = skb->len;
	bool in_ring;
	struct ue_net_packet *ev = begin(NET_EGRESS, skb->ifindex, len, data, end, &in_ring);
	if (!ev)
		return TC_ACT_UNSPEC;
	__u64 cap = in_ring ? capture_len(len) : 0;
	if (cap && bpf_skb_load_bytes(skb, 0, ev->payload, cap)) {
		count_drop(UE_DROP_READ_FAULT);
		cap = 0;
	}
	submit(ev, cap, in_ring);
	return TC_ACT_UNSPEC;
}
