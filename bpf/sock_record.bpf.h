/* SPDX-License-Identifier: GPL-2.0 */
/* The socket tracer's records and their filling, shared by the object on the
 * socket tracepoints (sock.bpf.c) and the one on every system call for kernels
 * without them (sock_syscalls.bpf.c): what differs is only where the socket,
 * the times and the calls come from. Include after the socket header. */
#ifndef UETRACE_SOCK_RECORD_BPF_H
#define UETRACE_SOCK_RECORD_BPF_H

#include "sock.h"

const volatile __u32 snaplen = 512;
const volatile __u64 sock_id_key = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the loader */
} events SEC(".maps");

#define MAX_IOV 8

/* An iovec whose first piece is short gathers its pieces here: twice the
 * largest snaplen lets the verifier bound each piece's offset and length with
 * a mask; the result is then copied into the ring slot in one read. */
struct scratch {
	__u8 buf[2 * SOCK_MAX_SNAPLEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* Keep the record structs in BTF for the Python decoder. */
struct ue_sock_data *unused_sock_data __attribute__((unused));
struct ue_sock_conn *unused_sock_conn __attribute__((unused));

/* The payload bound as a constant the verifier knows (snaplen is frozen .rodata). */
static __always_inline __u32 payload_max(void)
{
	return snaplen < SOCK_MAX_SNAPLEN ? snaplen : SOCK_MAX_SNAPLEN;
}

/* Copy up to `want` bytes from an iovec array into the ring slot's payload.
 * The array is read in one call; when its first piece holds all `want` bytes
 * (one-buffer sendmsg/recvmsg) they go straight into the slot. */
static __always_inline __u32 copy_iov(__u8 *payload, __u64 iov_addr, __u32 iovcnt, __u32 want)
{
	struct iovec iovs[MAX_IOV] = {};
	__u32 zero = 0, got = 0;
	__u32 pieces = iovcnt < MAX_IOV ? iovcnt : MAX_IOV;
	__u64 size = pieces * sizeof(struct iovec);
	asm volatile("" : "+r"(size)); /* keep the bound check below where the verifier sees it */
	if (size > sizeof(iovs))
		size = sizeof(iovs);
	if (bpf_probe_read_user(iovs, size, (void *)iov_addr)) {
		count_drop(UE_DROP_READ_FAULT);
		return 0;
	}
	if (iovs[0].iov_len >= want) {
		if (bpf_probe_read_user(payload, want, iovs[0].iov_base)) {
			count_drop(UE_DROP_READ_FAULT);
			return 0;
		}
		return want;
	}
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	for (__u32 i = 0; i < MAX_IOV; i++) {
		if (i >= pieces || got >= want)
			break;
		__u32 len = iovs[i].iov_len < want - got ? iovs[i].iov_len : want - got;
		if (len && bpf_probe_read_user(s->buf + (got & (SOCK_MAX_SNAPLEN - 1)), len & (SOCK_MAX_SNAPLEN - 1),
					       iovs[i].iov_base)) {
			count_drop(UE_DROP_READ_FAULT);
			break;
		}
		got += len;
	}
	/* A 64-bit bound check on a value clang cannot see through, so that the
	 * verifier sees it too (it lost a 32-bit clamp in a narrowing move). */
	__u64 n = got;
	asm volatile("" : "+r"(n));
	if (n > payload_max())
		n = payload_max();
	if (n && bpf_probe_read_kernel(payload, n, s->buf))
		return 0;
	return n;
}

/* A read/write-like system call, from its number and saved user registers. */
struct data_call {
	__u64 buf;     /* the bytes, or an iovec array when iovcnt; 0: none to copy (sendfile) */
	__u64 iovcnt;
	__u16 sc;      /* enum ue_sock_syscall */
	__u8 dir;
};

#define ANY_DIR 0xff

/* Whether `nr` is a read/write-like call of direction want_dir (or ANY_DIR). */
static __always_inline bool read_data_call(struct pt_regs *regs, long nr, __u8 want_dir, struct data_call *c)
{
	c->buf = regs->si;
	c->iovcnt = 0;
	switch (nr) {
	case NR_READ: c->sc = SYS_READ; c->dir = DIR_INGRESS; break;
	case NR_WRITE: c->sc = SYS_WRITE; c->dir = DIR_EGRESS; break;
	case NR_RECVFROM: c->sc = SYS_RECVFROM; c->dir = DIR_INGRESS; break;
	case NR_SENDTO: c->sc = SYS_SENDTO; c->dir = DIR_EGRESS; break;
	case NR_READV: c->sc = SYS_READV; c->dir = DIR_INGRESS; c->iovcnt = regs->dx; break;
	case NR_WRITEV: c->sc = SYS_WRITEV; c->dir = DIR_EGRESS; c->iovcnt = regs->dx; break;
	case NR_SENDFILE: c->sc = SYS_SENDFILE; c->dir = DIR_EGRESS; c->buf = 0; break; /* bytes come from a file */
	case NR_RECVMSG: c->sc = SYS_RECVMSG; c->dir = DIR_INGRESS; break;
	case NR_SENDMSG: c->sc = SYS_SENDMSG; c->dir = DIR_EGRESS; break;
	default:
		return false;
	}
	if (want_dir != ANY_DIR && c->dir != want_dir)
		return false;
	if (nr == NR_RECVMSG || nr == NR_SENDMSG) {
		/* the iovec array sits inside the user's msghdr */
		struct user_msghdr msg;
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)regs->si))
			return false;
		c->buf = (__u64)msg.msg_iov;
		c->iovcnt = msg.msg_iovlen;
		if (!c->iovcnt)
			return false;
	}
	return true;
}

/* Fill and submit a reserved data record: `ret` bytes moved by call c on fd
 * (sk: BTF-typed; sk_addr: its address as a number). */
static __always_inline void write_data(struct ue_sock_data *ev, struct sock *sk, __u64 sk_addr,
				       const struct data_call *c, int fd, long ret, __u64 ts_enter, __u64 ts_exit)
{
	__u64 id = bpf_get_current_pid_tgid();
	ev->kind = UE_KIND_SOCK_DATA;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts_enter = ts_enter;
	ev->ts_exit = ts_exit;
	ev->sock_id = sk_addr ^ sock_id_key;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->fd = fd;
	ev->syscall = c->sc;
	ev->direction = c->dir;
	ev->_pad0 = 0;
	ev->bytes = ret;
	ev->_pad1 = 0;
	FILL_TUPLE_BTF(ev, sk);

	__u32 want = payload_max();
	if ((__u64)ret < want)
		want = ret;
	__u32 got = 0;
	if (!c->buf) {
		/* sendfile: nothing to copy */
	} else if (!c->iovcnt) {
		/* Straight into the ring slot: through the per-CPU scratch (one kernel
		 * copy more, to spare the usercopy check on the ring's address) measured
		 * slower, 448 vs 418 ns per nginx receive with bpf_stats. */
		if (want && bpf_probe_read_user(ev->payload, want, (void *)c->buf))
			count_drop(UE_DROP_READ_FAULT);
		else
			got = want;
	} else {
		got = copy_iov(ev->payload, c->buf, c->iovcnt, want);
	}
	ev->captured = got;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* A connection record for sk (BTF-typed), written and submitted. */
static __always_inline void emit_conn(struct sock *sk, __u64 sk_addr, __u64 pid_tgid, int fd, long ret, __u16 op,
				      __u64 ts)
{
	struct ue_sock_conn *ev = bpf_ringbuf_reserve(&events, record_slot, 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	ev->kind = UE_KIND_SOCK_CONN;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = ts;
	ev->sock_id = sk_addr ^ sock_id_key;
	ev->pid = pid_tgid >> 32;
	ev->tid = (__u32)pid_tgid;
	ev->fd = fd;
	ev->ret = ret;
	ev->op = op;
	ev->_pad0 = 0;
	ev->_pad1 = 0;
	FILL_TUPLE_BTF(ev, sk);
	if (!ev->lport) {
		/* close() unhashed the socket before the state change: its bound port is gone, the source port is not */
		struct inet_sock *inet = bpf_rdonly_cast(sk, bpf_core_type_id_kernel(struct inet_sock));
		ev->lport = bpf_ntohs(inet->inet_sport);
	}
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

#endif
