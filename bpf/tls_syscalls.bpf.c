// SPDX-License-Identifier: GPL-2.0
/* TLS tracer: uprobes on libssl's SSL_read/SSL_write and their _ex variants
 * record the plaintext a program hands to or gets from OpenSSL.
 *
 * libssl does not tell which socket an SSL object uses (its BIO may be a
 * socket, a custom BIO over send/recv, or memory), so the socket is observed:
 * while a thread is inside an SSL call, the read/write-like syscalls it makes
 * name the fd. The last socket seen per SSL object is kept, for the calls that
 * are served from data OpenSSL had already buffered and make no syscall.
 * Handshake calls are watched too (without emitting) so that even the first
 * read of a connection knows its socket.
 *
 * This object is for kernels without the socket tracepoints tls.bpf.c learns
 * the socket from (capture/socket_hooks.py): here a tp_btf/sys_enter program on
 * every system call names the fd. Same records. */
#include "sockfd_walk.bpf.h"
#include "tls_probes.bpf.h"

/* A read/write-like syscall: only acts when the thread is inside an SSL call,
 * so every other syscall costs one hash lookup. */
static __always_inline int on_syscall(int fd)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct tls_call *c = bpf_map_lookup_elem(&calls, &tid);
	if (!c || c->have_sock)
		return 0;
	struct sock *sk = fd_to_sock(fd);
	if (!sk)
		return 0;
	struct sock_info *si = &c->sock;
	si->sock_id = (__u64)sk ^ sock_id_key;
	si->fd = fd;
	FILL_TUPLE(si, sk);
	c->have_sock = 1;
	if (c->ssl && bpf_map_update_elem(&ssl_socks, &c->ssl, si, BPF_ANY))
		count_drop(UE_DROP_MAP_FULL);
	return 0;
}

/* The read/write-like calls (the socket tracer's raw tracepoint, not eight
 * per-call perf tracepoints: those cost ~107 ns on every read or write of every
 * process even when no SSL call is in progress; this costs the dispatch and a
 * switch, and the hash lookup only on the calls below). */
SEC("tp_btf/sys_enter")
int BPF_PROG(ue_tls_sys_enter, struct pt_regs *regs, long nr)
{
	switch (nr) {
	case NR_READ: case NR_WRITE: case NR_RECVFROM: case NR_SENDTO: case NR_RECVMSG:
	case NR_SENDMSG: case NR_READV: case NR_WRITEV:
		break;
	default:
		return 0;
	}
	if (regs->cs != USER_CS_64)
		return 0;
	return on_syscall((int)regs->di);
}
