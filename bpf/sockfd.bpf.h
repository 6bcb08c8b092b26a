/* SPDX-License-Identifier: GPL-2.0 */
/* The socket and the syscall behind a socket tracepoint (sock_send_length,
 * sock_recv_length, inet_sock_set_state): which INET socket, its identity and
 * 5-tuple, and the fd from the task's saved registers. Shared by the socket
 * tracer (sock.bpf.c) and the TLS tracer (tls.bpf.c), so that both name a
 * connection the same way. */
#ifndef UETRACE_SOCKFD_BPF_H
#define UETRACE_SOCKFD_BPF_H

#include "common.bpf.h"
#include <bpf/bpf_endian.h>

#ifndef __TARGET_ARCH_x86
#error "the system call numbers below are x86_64's"
#endif

/* x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl) of the
 * socket calls the sock and tls tracers act on (read from the task's saved
 * registers), and the code segment of a 64-bit task (a 32-bit task's numbers
 * mean other calls). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_CLOSE 3
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_CONNECT 42
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define USER_CS_64 0x33

#define AF_INET 2
#define AF_INET6 10

/* Typed loads through a pointer the verifier knows only as memory. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* Whether a socket that a BTF tracepoint names is an INET socket a process
 * holds as a file (not a kernel socket: NFS, kTLS internals, MPTCP subflows).
 * *addr: its address as a number, for sock_id (the same value the earlier
 * fd -> file -> socket -> sk walk read), taken from the tracepoint's first
 * argument in the context: the verifier allows no arithmetic on the pointer. */
static __always_inline bool user_inet_sock(struct sock *sk, const void *ctx_arg0, __u64 *addr)
{
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return false;
	struct socket *sock = sk->sk_socket;
	if (!sock || !sock->file)
		return false;
	return !bpf_probe_read_kernel(addr, sizeof(*addr), ctx_arg0);
}

/* Fill family, protocol, addresses and ports from a BTF-typed struct sock with
 * plain loads; every record kind that names a socket uses the same field
 * names, so one macro serves them all. */
#define FILL_TUPLE_BTF(ev, sk)                                                          \
	do {                                                                            \
		(ev)->family = (sk)->__sk_common.skc_family;                            \
		(ev)->protocol = (sk)->sk_protocol;                                     \
		(ev)->lport = (sk)->__sk_common.skc_num;                                \
		(ev)->rport = bpf_ntohs((sk)->__sk_common.skc_dport);                   \
		if ((ev)->family == AF_INET) {                                          \
			*(__u32 *)(ev)->laddr = (sk)->__sk_common.skc_rcv_saddr;        \
			*(__u32 *)(ev)->raddr = (sk)->__sk_common.skc_daddr;            \
			__builtin_memset((ev)->laddr + 4, 0, 12);                       \
			__builtin_memset((ev)->raddr + 4, 0, 12);                       \
		} else {                                                                \
			__builtin_memcpy((ev)->laddr, &(sk)->__sk_common.skc_v6_rcv_saddr, 16); \
			__builtin_memcpy((ev)->raddr, &(sk)->__sk_common.skc_v6_daddr, 16); \
		}                                                                       \
	} while (0)

#endif
