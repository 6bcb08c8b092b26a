// SPDX-License-Identifier: GPL-2.0
/* Socket tracer: BTF tracepoints that fire only where socket data moves or a
 * TCP socket changes state, so that no program runs on the other system calls.
 *
 * Data: sock_send_length / sock_recv_length fire at the end of
 * sock_sendmsg_nosec / sock_recvmsg_nosec with the struct sock and the byte
 * count. The syscall that got there and its arguments come from the task's
 * saved user registers (orig_ax, rdi, rsi, rdx): the fd is arg 0 and the
 * payload is read from the user's buffer or iovec as the call returns.
 * Timestamps: ts_exit is the tracepoint's time. A TCP send's ts_enter is the
 * first tcp_sendmsg_locked fire of that call (before any byte is queued: on
 * loopback the receiver can be handed the data, and return from its read,
 * before the sender's call returns). Nothing marks the start of a receive or
 * of a non-TCP send without a hook on every system call: their ts_enter is
 * ts_exit (a blocking read's entry time says nothing about the data anyway).
 *
 * Connections (inet_sock_set_state, TCP only): CLOSE -> SYN_SENT inside
 * connect() and LISTEN -> SYN_RECV (the child socket accept() will hand out)
 * are kept in socket-local storage, and their CONN_CONNECT / CONN_ACCEPT record
 * is written at the socket's first data call or close, when its local port is
 * known and, for an accepted one, the process holding it. The first state
 * change a close() makes on the socket it releases is CONN_CLOSE. Per-call
 * syscall tracepoints (tp/syscalls/sys_exit_accept4 ...) would see the calls
 * themselves but put every task on the syscall slow path: ~42 ns more on every
 * system call of every process (getppid loop; docs/architecture.md "Capture
 * overhead"). */
#include "sockfd.bpf.h"
#include "sock.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 snaplen = 512;
const volatile __u64 sock_id_key = 0;

#define EINPROGRESS 115
#define O_NONBLOCK 04000

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the loader */
} events SEC(".maps");

/* Time of the first tcp_sendmsg_locked fire of the thread's current send; 0
 * once sock_send_length consumed it. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} send_start SEC(".maps");

/* A connection opened during the capture whose CONN_ACCEPT / CONN_CONNECT
 * record is not written yet: it is written at the socket's first data call or
 * close, once its 5-tuple is complete (a connecting socket has no local port
 * yet when it enters SYN_SENT) and, for an accepted one, once a process holds
 * it. Connect fills in its call's time, thread, fd and return value here. */
struct conn_pending {
	__u64 ts;
	__u64 pid_tgid;
	__s32 fd;
	__s32 ret;
	__u16 op;          /* CONN_ACCEPT or CONN_CONNECT */
	__u16 _pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct conn_pending);
} conn_pending SEC(".maps");

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

static __always_inline bool is_send_call(long nr)
{
	return nr == NR_WRITE || nr == NR_WRITEV || nr == NR_SENDTO || nr == NR_SENDMSG || nr == NR_SENDFILE;
}

/* sk: the socket the tracepoint named (in a close() the fd is already gone
 * from the table, so it is not looked up); fd: the caller's, from its registers. */
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

/* The socket's pending CONN_ACCEPT / CONN_CONNECT record, if any (an accept's
 * is this call's: accept() returned the fd it uses). */
static __always_inline void announce_conn(struct sock *sk, __u64 sk_addr, int fd, __u64 ts)
{
	struct conn_pending *p = bpf_sk_storage_get(&conn_pending, sk, 0, 0);
	if (!p || p->op == CONN_CLOSE)
		return;
	if (p->op == CONN_ACCEPT)
		emit_conn(sk, sk_addr, bpf_get_current_pid_tgid(), fd, fd, CONN_ACCEPT, ts);
	else
		emit_conn(sk, sk_addr, p->pid_tgid, p->fd, p->ret, CONN_CONNECT, p->ts);
	bpf_sk_storage_delete(&conn_pending, sk);
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

/* One data record for the syscall in `regs` that moved `ret` bytes through sk,
 * if it is a read/write-like call of direction `want_dir` (a sendfile whose
 * input is a socket reads it: that read is not the call's data). */
static __always_inline void emit_data(void *ctx, struct pt_regs *regs, struct sock *sk, long ret, __u8 want_dir,
				      __u64 ts_enter, __u64 ts_exit)
{
	long nr = regs->orig_ax;
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
	case NR_RECVMSG: sc = SYS_RECVMSG; dir = DIR_INGRESS; break;
	case NR_SENDMSG: sc = SYS_SENDMSG; dir = DIR_EGRESS; break;
	default:
		return;
	}
	if (dir != want_dir)
		return;
	if (nr == NR_RECVMSG || nr == NR_SENDMSG) {
		/* the iovec array sits inside the user's msghdr */
		struct user_msghdr msg;
		if (bpf_probe_read_user(&msg, sizeof(msg), (void *)regs->si))
			return;
		buf = (__u64)msg.msg_iov;
		iovcnt = msg.msg_iovlen;
		if (!iovcnt)
			return;
	}
	__u64 sk_addr;
	if (!user_inet_sock(sk, ctx, &sk_addr))
		return;
	int fd = regs->di;
	announce_conn(sk, sk_addr, fd, ts_exit);
	struct ue_sock_data *ev = bpf_ringbuf_reserve(&events, record_slot, 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	__u64 id = bpf_get_current_pid_tgid();
	ev->kind = UE_KIND_SOCK_DATA;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts_enter = ts_enter;
	ev->ts_exit = ts_exit;
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
		/* Straight into the ring slot: through the per-CPU scratch (one kernel
		 * copy more, to spare the usercopy check on the ring's address) measured
		 * slower, 448 vs 418 ns per nginx receive with bpf_stats. */
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

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(ue_tcp_sendmsg, const struct sock *sk, const struct msghdr *msg, const struct sk_buff *skb,
	     int size_goal)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	/* Only a user send that will reach sock_send_length, which clears the slot
	 * (not e.g. a kTLS close flushing its records). */
	if (regs->cs != USER_CS_64 || !is_send_call(regs->orig_ax))
		return 0;
	if (!wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	__u64 *start = bpf_task_storage_get(&send_start, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!start)
		count_drop(UE_DROP_MAP_FULL);
	else if (!*start) /* the loop fires once per segment: keep the first */
		*start = bpf_ktime_get_ns();
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(ue_sock_send, struct sock *sk, int ret, int flags)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 ts_enter = 0;
	/* Consumed whatever the outcome: a failed send must not lend its start to the next. */
	__u64 *start = bpf_task_storage_get(&send_start, task, 0, 0);
	if (start) {
		ts_enter = *start;
		*start = 0;
	}
	if (ret <= 0 || !wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	if (regs->cs != USER_CS_64)
		return 0; /* a kernel thread's socket (its saved registers are zero) */
	__u64 now = bpf_ktime_get_ns();
	emit_data(ctx, regs, sk, ret, DIR_EGRESS, ts_enter ? ts_enter : now, now);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(ue_sock_recv, struct sock *sk, int ret, int flags)
{
	if (ret <= 0 || !wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (regs->cs != USER_CS_64)
		return 0;
	__u64 now = bpf_ktime_get_ns();
	emit_data(ctx, regs, sk, ret, DIR_INGRESS, now, now);
	return 0;
}

/* Before 6.13 the count was an atomic_long_t f_count. */
struct file___f_count {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

/* Whether the file's last reference is gone (it is in __fput). file_ref_t
 * counts from 0 for one reference; released and dead are negative. */
static __always_inline bool file_released(struct file *f)
{
	if (bpf_core_field_exists(f->f_ref))
		return (__s64)f->f_ref.refcnt.counter < 0;
	return BPF_CORE_READ((struct file___f_count *)f, f_count.counter) == 0;
}

/* The first state change a close() makes on a TCP socket: from a live state
 * to another, or the same-state step tcp_close takes after a shutdown()
 * (FIN_WAIT2 -> FIN_WAIT2, then -> CLOSE: only the first is taken). */
static __always_inline bool close_step(int oldstate, int newstate)
{
	switch (oldstate) {
	case TCP_ESTABLISHED: case TCP_CLOSE_WAIT: case TCP_SYN_SENT: case TCP_SYN_RECV: case TCP_LISTEN:
		return newstate != oldstate;
	case TCP_FIN_WAIT1: case TCP_FIN_WAIT2: case TCP_CLOSING:
		return newstate == oldstate;
	}
	return false;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(ue_sock_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct sock *s = (struct sock *)sk;
	if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV) {
		/* a connection request's child socket: accept() will hand it out */
		struct conn_pending *p = bpf_sk_storage_get(&conn_pending, s, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (p)
			p->op = CONN_ACCEPT;
		else
			count_drop(UE_DROP_MAP_FULL);
		return 0;
	}
	__u16 op;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT)
		op = CONN_CONNECT;
	else if (close_step(oldstate, newstate))
		op = CONN_CLOSE;
	else
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (regs->cs != USER_CS_64 || regs->orig_ax != (op == CONN_CONNECT ? NR_CONNECT : NR_CLOSE))
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	if (!wanted(id >> 32))
		return 0;
	__u64 sk_addr;
	if (!user_inet_sock(s, ctx, &sk_addr))
		return 0;
	int fd = regs->di;
	__u64 now = bpf_ktime_get_ns();
	if (op == CONN_CONNECT) {
		struct conn_pending *p = bpf_sk_storage_get(&conn_pending, s, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!p) {
			count_drop(UE_DROP_MAP_FULL);
			return 0;
		}
		p->ts = now;
		p->pid_tgid = id;
		p->fd = fd;
		/* connect() returns 0 once the handshake completes, -EINPROGRESS at once on a non-blocking socket */
		p->ret = s->sk_socket->file->f_flags & O_NONBLOCK ? -EINPROGRESS : 0;
		p->op = CONN_CONNECT;
		return 0;
	}
	/* Only the socket whose file close() releases: any other one is a
	 * softirq's, run on this task (the peer of a loopback connection getting
	 * our FIN). */
	if (!file_released(s->sk_socket->file))
		return 0;
	announce_conn(s, sk_addr, fd, now);
	/* Once per socket: on loopback the peer's answer to our FIN can move this
	 * socket on again inside the same close() (softirq on this task), and such a
	 * step can pass close_step() too (seen: one close in ~6 written twice). */
	struct conn_pending *p = bpf_sk_storage_get(&conn_pending, s, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (p) {
		if (p->op == CONN_CLOSE)
			return 0;
		p->op = CONN_CLOSE;
	}
	emit_conn(s, sk_addr, id, fd, 0, CONN_CLOSE, now);
	return 0;
}
