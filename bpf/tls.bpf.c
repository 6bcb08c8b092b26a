// SPDX-License-Identifier: GPL-2.0
/* TLS tracer: uprobes on libssl's SSL_read/SSL_write and their _ex variants
 * record the plaintext a program hands to or gets from OpenSSL.
 *
 * libssl does not tell which socket an SSL object uses (its BIO may be a
 * socket, a custom BIO over send/recv, or memory), so the socket is observed:
 * while a thread is inside an SSL call, the socket sends and receives of its
 * read/write-like syscalls name the socket and the fd. The last socket seen
 * per SSL object is kept, for the calls that are served from data OpenSSL had
 * already buffered and make no syscall.
 * Handshake calls are watched too (without emitting) so that even the first
 * read of a connection knows its socket. */
#include "sockfd.bpf.h"
#include "tls_probes.bpf.h"

/* A socket send or receive: only acts when the thread is inside an SSL call,
 * so every other one costs one hash lookup. The fd is the syscall's first
 * argument, read from the saved user registers. */
static __always_inline int on_sock_call(void *ctx, struct sock *sk)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct tls_call *c = bpf_map_lookup_elem(&calls, &tid);
	if (!c || c->have_sock)
		return 0;
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	if (regs->cs != USER_CS_64)
		return 0;
	switch (regs->orig_ax) {
	case NR_READ: case NR_WRITE: case NR_RECVFROM: case NR_SENDTO: case NR_RECVMSG:
	case NR_SENDMSG: case NR_READV: case NR_WRITEV:
		break;
	default:
		return 0;
	}
	__u64 sk_addr;
	if (!user_inet_sock(sk, ctx, &sk_addr))
		return 0;
	struct sock_info *si = &c->sock;
	si->sock_id = sk_addr ^ sock_id_key;
	si->fd = regs->di;
	FILL_TUPLE_BTF(si, sk);
	c->have_sock = 1;
	if (c->ssl && bpf_map_update_elem(&ssl_socks, &c->ssl, si, BPF_ANY))
		count_drop(UE_DROP_MAP_FULL);
	return 0;
}

/* Where socket data moves (the socket tracer's tracepoints): they fire only
 * on socket calls, so no program runs on every system call of every process
 * (the earlier tp_btf/sys_enter cost its dispatch on each, ~74 ns). They fire
 * whatever the outcome: an SSL_read whose read() found no data yet still
 * learns its socket. */
SEC("tp_btf/sock_send_length")
int BPF_PROG(ue_tls_sock_send, struct sock *sk, int ret, int flags)
{
	return on_sock_call(ctx, sk);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(ue_tls_sock_recv, struct sock *sk, int ret, int flags)
{
	return on_sock_call(ctx, sk);
}
