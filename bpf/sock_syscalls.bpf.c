// SPDX-License-Identifier: GPL-2.0
/* Socket tracer for kernels without the socket tracepoints sock.bpf.c uses
 * (capture/socket_hooks.py chooses; `--sock-hooks syscalls` asks for it): two
 * BTF raw tracepoints on every system call, sys_enter and sys_exit, that act
 * only on the socket calls below. Entry keeps the time in task-local storage;
 * exit reads the arguments back from the saved user registers (a system call
 * leaves them in place) and emits one record with the bytes moved and a
 * payload prefix. Same records as sock.bpf.c; here a receive's ts_enter is its
 * entry, and UDP connect and close are recorded too. Sockets opened before the
 * capture are covered because the socket is found from the fd at every call.
 *
 * Why not tp/syscalls/sys_{enter,exit}_<name>: those run behind the perf
 * trace-event path (a perf record of every argument is built before the
 * program runs) and needed an in-flight hash insert + delete per call; on
 * nginx at ~100 K requests/s that was ~1 us of kernel time per traced call. */
#include "sockfd_walk.bpf.h"
#include "sock.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 snaplen = 512;
const volatile __u64 sock_id_key = 0;

#define EINPROGRESS 115

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the loader */
} events SEC(".maps");

/* Entry time of the thread's current socket call; 0 once its exit consumed it,
 * so a call already in flight when the capture attached is not recorded. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} call_start SEC(".maps");

#define MAX_IOV 8

/* readv/writev/recvmsg/sendmsg gather their pieces here first: twice the
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

static __always_inline bool is_socket_call(long nr)
{
	switch (nr) {
	case NR_READ: case NR_WRITE: case NR_CLOSE: case NR_READV: case NR_WRITEV: case NR_SENDFILE:
	case NR_CONNECT: case NR_ACCEPT: case NR_SENDTO: case NR_RECVFROM: case NR_SENDMSG:
	case NR_RECVMSG: case NR_ACCEPT4:
		return true;
	}
	return false;
}

/* The payload bound as a constant the verifier knows (snaplen is frozen .rodata). */
static __always_inline __u32 payload_max(void)
{
	return snaplen < SOCK_MAX_SNAPLEN ? snaplen : SOCK_MAX_SNAPLEN;
}

static __always_inline void emit_conn(int fd, long ret, __u16 op, __u64 ts)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 sk_addr;
	struct sock *sk = fd_to_sock_btf(fd, &sk_addr);
	if (!sk)
		return;
	struct ue_sock_conn *ev = bpf_ringbuf_reserve(&events, record_slot, 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	ev->kind = UE_KIND_SOCK_CONN;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = ts;
	ev->sock_id = sk_addr ^ sock_id_key;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->fd = fd;
	ev->ret = ret;
	ev->op = op;
	ev->_pad0 = 0;
	ev->_pad1 = 0;
	FILL_TUPLE_BTF(ev, sk);
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

/* Copy up to `want` bytes from an iovec array into the ring slot's payload. */
static __always_inline __u32 copy_iov(__u8 *payload, __u64 iov_addr, __u32 iovcnt, __u32 want)
{
	__u32 zero = 0, got = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct iovec iov;
	__u32 pieces = iovcnt < MAX_IOV ? iovcnt : MAX_IOV;
	for (__u32 i = 0; i < MAX_IOV; i++) {
		if (i >= pieces || got >= want)
			break;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(iov_addr + i * sizeof(iov)))) {
			count_drop(UE_DROP_READ_FAULT);
			break;
		}
		__u32 len = iov.iov_len < want - got ? iov.iov_len : want - got;
		if (len && bpf_probe_read_user(s->buf + (got & (SOCK_MAX_SNAPLEN - 1)), len & (SOCK_MAX_SNAPLEN - 1),
					       iov.iov_base)) {
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

static __always_inline void emit_data(struct pt_regs *regs, long nr, long ret, __u64 ts_enter)
{
	__u64 buf = regs->si, iovcnt = 0;
	__u16 sc;
	__u8 dir;
	switch (nr) {
	case NR_READ: sc = SYS_READ; dir = DIR_INGRESS; break;
	case NR_WRITE: sc = SYS_WRITE; dir = DIR_EGRESS; break;
	case NR_RECVFROM: sc = SYS_RECVFROM; dir = DIR_INGRESS; break;
	case NR_SENDTO: sc = SYS_SENDTO; dir = DIR_EGRESS; break;
	case NR_READV: sc = SYS_READV; dir = DIR_INGRESS; iovcnt = regs->dx; break;
	case NR_WRITEV: sc = SYS_WRITEV; dir = DIR_EGRESS; iovcnt = regs->dx; break;
	case NR_SENDFILE: sc = SYS_SENDFILE; dir = DIR_EGRESS; buf = 0; break; /* bytes come from a file */
	case NR_RECVMSG:
	case NR_SENDMSG: {
		/* the iovec array sits inside the user's msghdr */
		struct user_msghdr msg;
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)regs->si))
			return;
		sc = nr == NR_RECVMSG ? SYS_RECVMSG : SYS_SENDMSG;
		dir = nr == NR_RECVMSG ? DIR_INGRESS : DIR_EGRESS;
		buf = (__u64)msg.msg_iov;
		iovcnt = msg.msg_iovlen;
		if (!iovcnt)
			return;
		break;
	}
	default:
		return;
	}
	int fd = regs->di;
	__u64 sk_addr;
	struct sock *sk = fd_to_sock_btf(fd, &sk_addr);
	if (!sk)
		return;
	struct ue_sock_data *ev = bpf_ringbuf_reserve(&events, record_slot, 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
	ev->kind = UE_KIND_SOCK_DATA;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts_enter = ts_enter;
	ev->ts_exit = bpf_ktime_get_ns();
	ev->sock_id = sk_addr ^ sock_id_key;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->fd = fd;
	ev->syscall = sc;
	ev->direction = dir;
	ev->_pad0 = 0;
	ev->bytes = ret;
	ev->_pad1 = 0;
	FILL_TUPLE_BTF(ev, sk);

	__u32 want = payload_max();
	if ((__u64)ret < want)
		want = ret;
	__u32 got = 0;
	if (!buf) {
		/* sendfile: nothing to copy */
	} else if (!iovcnt) {
		if (want && bpf_probe_read_user(ev->payload, want, (void *)buf))
			count_drop(UE_DROP_READ_FAULT);
		else
			got = want;
	} else {
		got = copy_iov(ev->payload, buf, iovcnt, want);
	}
	ev->captured = got;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(ue_sys_enter, struct pt_regs *regs, long nr)
{
	if (!is_socket_call(nr) || regs->cs != USER_CS_64)
		return 0;
	if (!wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	__u64 now = bpf_ktime_get_ns();
	if (nr == NR_CLOSE) { /* before the fd is gone */
		emit_conn(regs->di, 0, CONN_CLOSE, now);
		return 0;
	}
	__u64 *start = bpf_task_storage_get(&call_start, bpf_get_current_task_btf(), 0,
					    BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (start)
		*start = now;
	else
		count_drop(UE_DROP_MAP_FULL);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(ue_sys_exit, struct pt_regs *regs, long ret)
{
	long nr = regs->orig_ax;
	if (!is_socket_call(nr) || nr == NR_CLOSE || regs->cs != USER_CS_64)
		return 0;
	__u64 *start = bpf_task_storage_get(&call_start, bpf_get_current_task_btf(), 0, 0);
	if (!start || !*start)
		return 0; /* entered before the capture attached, or not a wanted task */
	__u64 ts_enter = *start;
	*start = 0;
	switch (nr) {
	case NR_ACCEPT:
	case NR_ACCEPT4:
		if (ret >= 0)
			emit_conn(ret, ret, CONN_ACCEPT, bpf_ktime_get_ns());
		return 0;
	case NR_CONNECT:
		if (ret == 0 || ret == -EINPROGRESS)
			emit_conn(regs->di, ret, CONN_CONNECT, bpf_ktime_get_ns());
		return 0;
	}
	if (ret > 0)
		emit_data(regs, nr, ret, ts_enter);
	return 0;
}
