// SPDX-License-Identifier: GPL-2.0
/* Socket tracer: syscall tracepoints on socket fds. Entry saves the arguments
 * per thread; exit emits one record with the bytes moved and a payload prefix.
 * Sockets opened before the capture are covered because the socket is found
 * from the fd at every call, not from accept/connect. */
#include "sockfd.bpf.h"
#include "sock.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 snaplen = 512;
const volatile __u64 sock_id_key = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the loader */
} events SEC(".maps");

#define MAX_IOV 8

struct inflight {
	__u64 ts;
	__u64 buf;      /* user buffer, or iovec array when iovcnt > 0 */
	__u64 sk;
	__s32 fd;
	__u32 iovcnt;
	__u16 syscall;
	__u8 direction;
	__u8 _pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct inflight);
} inflight SEC(".maps");

/* A data record plus room for the payload: four times SOCK_MAX_SNAPLEN so that
 * the verifier can bound offset + length of each iovec copy with two masks. */
struct scratch {
	__u8 buf[sizeof(struct ue_sock_data) + 4 * SOCK_MAX_SNAPLEN];
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

static __always_inline int enter(int fd, __u64 buf, __u32 iovcnt, __u16 sc, __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!wanted(id >> 32))
		return 0;
	struct sock *sk = fd_to_sock(fd);
	if (!sk)
		return 0;
	struct inflight in = {
		.ts = bpf_ktime_get_ns(), .buf = buf, .sk = (__u64)sk, .fd = fd,
		.iovcnt = iovcnt, .syscall = sc, .direction = dir,
	};
	__u32 tid = (__u32)id;
	if (bpf_map_update_elem(&inflight, &tid, &in, BPF_ANY))
		count_drop(UE_DROP_MAP_FULL);
	return 0;
}

static __always_inline int exit_(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, zero = 0;
	struct inflight *in = bpf_map_lookup_elem(&inflight, &tid);
	if (!in)
		return 0;
	struct inflight call = *in;
	bpf_map_delete_elem(&inflight, &tid);
	if (ret <= 0)
		return 0;

	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct ue_sock_data *ev = (struct ue_sock_data *)s->buf;
	__u8 *payload = s->buf + sizeof(*ev);
	struct sock *sk = (struct sock *)call.sk;
	ev->kind = UE_KIND_SOCK_DATA;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts_enter = call.ts;
	ev->ts_exit = bpf_ktime_get_ns();
	ev->sock_id = call.sk ^ sock_id_key;
	ev->pid = id >> 32;
	ev->tid = tid;
	ev->fd = call.fd;
	ev->syscall = call.syscall;
	ev->direction = call.direction;
	ev->_pad0 = 0;
	ev->bytes = ret;
	ev->_pad1 = 0;
	FILL_TUPLE(ev, sk);

	__u32 want = snaplen < SOCK_MAX_SNAPLEN ? snaplen : SOCK_MAX_SNAPLEN;
	if ((__u64)ret < want)
		want = ret;
	if (!call.buf)
		want = 0; /* sendfile: the bytes come from a file, not user memory */
	__u32 got = 0;
	if (call.iovcnt == 0) {
		if (want && bpf_probe_read_user(payload, want & (SOCK_MAX_SNAPLEN * 2 - 1),
						(void *)call.buf))
			count_drop(UE_DROP_READ_FAULT);
		else
			got = want;
	} else {
		struct iovec iov;
		__u32 n = call.iovcnt < MAX_IOV ? call.iovcnt : MAX_IOV;
		for (__u32 i = 0; i < MAX_IOV; i++) {
			if (i >= n || got >= want)
				break;
			if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(call.buf + i * sizeof(iov)))) {
				count_drop(UE_DROP_READ_FAULT);
				break;
			}
			__u32 len = iov.iov_len < want - got ? iov.iov_len : want - got;
			if (len && bpf_probe_read_user(payload + (got & (2 * SOCK_MAX_SNAPLEN - 1)),
						       len & (2 * SOCK_MAX_SNAPLEN - 1),
						       iov.iov_base)) {
				count_drop(UE_DROP_READ_FAULT);
				break;
			}
			got += len;
		}
	}
	ev->captured = got;
	__u64 size = sizeof(*ev) + (got & (2 * SOCK_MAX_SNAPLEN - 1));
	if (bpf_ringbuf_output(&events, s, size, BPF_RB_NO_WAKEUP))
		count_drop(UE_DROP_RINGBUF);
	return 0;
}

static __always_inline void emit_conn(int fd, long ret, __u16 op)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct sock *sk = fd_to_sock(fd);
	if (!sk)
		return;
	struct ue_sock_conn *ev = bpf_ringbuf_reserve(&events, sizeof(*ev), 0);
	if (!ev) {
		count_drop(UE_DROP_RINGBUF);
		return;
	}
	ev->kind = UE_KIND_SOCK_CONN;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts = bpf_ktime_get_ns();
	ev->sock_id = (__u64)sk ^ sock_id_key;
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->fd = fd;
	ev->ret = ret;
	ev->op = op;
	ev->_pad0 = 0;
	ev->_pad1 = 0;
	FILL_TUPLE(ev, sk);
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
}

#define DATA_PROBES(name, SC, DIR, BUFARG, IOVCNT)                                   \
	SEC("tp/syscalls/sys_enter_" #name)                                          \
	int ue_in_##name(struct trace_event_raw_sys_enter *ctx)                      \
	{                                                                            \
		return enter((int)ctx->args[0], BUFARG, IOVCNT, SC, DIR);            \
	}                                                                            \
	SEC("tp/syscalls/sys_exit_" #name)                                           \
	int ue_out_##name(struct trace_event_raw_sys_exit *ctx)                      \
	{                                                                            \
		return exit_(ctx->ret);                                              \
	}

DATA_PROBES(read, SYS_READ, DIR_INGRESS, ctx->args[1], 0)
DATA_PROBES(write, SYS_WRITE, DIR_EGRESS, ctx->args[1], 0)
DATA_PROBES(recvfrom, SYS_RECVFROM, DIR_INGRESS, ctx->args[1], 0)
DATA_PROBES(sendto, SYS_SENDTO, DIR_EGRESS, ctx->args[1], 0)
DATA_PROBES(readv, SYS_READV, DIR_INGRESS, ctx->args[1], (__u32)ctx->args[2])
DATA_PROBES(writev, SYS_WRITEV, DIR_EGRESS, ctx->args[1], (__u32)ctx->args[2])
/* sendfile(out_fd, in_fd, ...): bytes sent on the socket, no payload to copy */
DATA_PROBES(sendfile64, SYS_SENDFILE, DIR_EGRESS, 0, 0)

/* recvmsg/sendmsg: the iovec array sits inside the user's msghdr. */
static __always_inline int enter_msg(struct trace_event_raw_sys_enter *ctx, __u16 sc, __u8 dir)
{
	struct user_msghdr msg;
	if (bpf_probe_read_user(&msg, sizeof(msg), (void *)ctx->args[1]))
		return 0;
	return enter((int)ctx->args[0], (__u64)msg.msg_iov, (__u32)msg.msg_iovlen, sc, dir);
}

SEC("tp/syscalls/sys_enter_recvmsg")
int ue_in_recvmsg(struct trace_event_raw_sys_enter *ctx) { return enter_msg(ctx, SYS_RECVMSG, DIR_INGRESS); }
SEC("tp/syscalls/sys_exit_recvmsg")
int ue_out_recvmsg(struct trace_event_raw_sys_exit *ctx) { return exit_(ctx->ret); }
SEC("tp/syscalls/sys_enter_sendmsg")
int ue_in_sendmsg(struct trace_event_raw_sys_enter *ctx) { return enter_msg(ctx, SYS_SENDMSG, DIR_EGRESS); }
SEC("tp/syscalls/sys_exit_sendmsg")
int ue_out_sendmsg(struct trace_event_raw_sys_exit *ctx) { return exit_(ctx->ret); }

/* accept/connect: the new or connected socket is announced with its tuple. */
#define CONN_EXIT(name, fdexpr, OP)                                                  \
	SEC("tp/syscalls/sys_exit_" #name)                                           \
	int ue_out_##name(struct trace_event_raw_sys_exit *ctx)                      \
	{                                                                            \
		if (!wanted(bpf_get_current_pid_tgid() >> 32))                       \
			return 0;                                                    \
		long ret = ctx->ret;                                                 \
		emit_conn(fdexpr, ret, OP);                                          \
		return 0;                                                            \
	}

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __s32);
} connect_fd SEC(".maps");

SEC("tp/syscalls/sys_enter_connect")
int ue_in_connect(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	__s32 fd = (__s32)ctx->args[0];
	if (wanted(id >> 32) && bpf_map_update_elem(&connect_fd, &tid, &fd, BPF_ANY))
		count_drop(UE_DROP_MAP_FULL);
	return 0;
}

static __always_inline int pop_connect_fd(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	__s32 *fd = bpf_map_lookup_elem(&connect_fd, &tid);
	if (!fd)
		return -1;
	int v = *fd;
	bpf_map_delete_elem(&connect_fd, &tid);
	return v;
}

SEC("tp/syscalls/sys_exit_connect")
int ue_out_connect(struct trace_event_raw_sys_exit *ctx)
{
	int fd = pop_connect_fd();
	long ret = ctx->ret;
	if (fd >= 0 && (ret == 0 || ret == -115 /* EINPROGRESS */))
		emit_conn(fd, ret, CONN_CONNECT);
	return 0;
}

CONN_EXIT(accept, ret >= 0 ? (int)ret : -1, CONN_ACCEPT)
CONN_EXIT(accept4, ret >= 0 ? (int)ret : -1, CONN_ACCEPT)

SEC("tp/syscalls/sys_enter_close")
int ue_in_close(struct trace_event_raw_sys_enter *ctx)
{
	if (!wanted(bpf_get_current_pid_tgid() >> 32))
		return 0;
	emit_conn((int)ctx->args[0], 0, CONN_CLOSE);
	return 0;
}
