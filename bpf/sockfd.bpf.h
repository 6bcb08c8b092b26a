/* SPDX-License-Identifier: GPL-2.0 */
/* From a file descriptor of the current task to its INET socket and 5-tuple.
 * Shared by the socket tracer (sock.bpf.c) and the TLS tracer (tls.bpf.c), so
 * that both name a connection the same way. */
#ifndef UETRACE_SOCKFD_BPF_H
#define UETRACE_SOCKFD_BPF_H

#include "common.bpf.h"
#include <bpf/bpf_endian.h>

#ifndef __TARGET_ARCH_x86
#error "the system call numbers below are x86_64's"
#endif

/* x86_64 system call numbers (arch/x86/entry/syscalls/syscall_64.tbl) of the
 * socket calls the sock and tls tracers act on at the raw sys_enter/sys_exit
 * tracepoints, and the code segment of a 64-bit task (a 32-bit task's numbers
 * mean other calls). */
#define NR_READ 0
#define NR_WRITE 1
#define NR_CLOSE 3
#define NR_READV 19
#define NR_WRITEV 20
#define NR_SENDFILE 40
#define NR_CONNECT 42
#define NR_ACCEPT 43
#define NR_SENDTO 44
#define NR_RECVFROM 45
#define NR_SENDMSG 46
#define NR_RECVMSG 47
#define NR_ACCEPT4 288
#define USER_CS_64 0x33

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define AF_INET 2
#define AF_INET6 10

static __always_inline struct sock *fd_to_sock(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *f = NULL;

	if (fd < 0 || !fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return NULL;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	return sk;
}

/* The same walk for BTF-typed programs (tp_btf): one helper call for the fd
 * array slot, then plain loads through read-only casts, which the JIT turns into
 * guarded loads instead of one bpf_probe_read_kernel call each (measured with the
 * helper version: ~8% of a traced nginx worker's time in probe reads). */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/* *addr: the struct sock's address as a number (for sock_id): the verifier
 * allows no arithmetic on the pointer itself. */
static __always_inline struct sock *fd_to_sock_btf(int fd, __u64 *addr)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *f = NULL;

	if (fd < 0 || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]) || !f)
		return NULL;
	f = bpf_rdonly_cast(f, bpf_core_type_id_kernel(struct file));
	if ((f->f_inode->i_mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = bpf_rdonly_cast(f->private_data, bpf_core_type_id_kernel(struct socket));
	struct sock *sk = sock->sk;
	if (!sk)
		return NULL;
	__u16 family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (bpf_probe_read_kernel(addr, sizeof(*addr), &sock->sk))
		return NULL;
	return sk;
}

/* FILL_TUPLE for a struct sock reached by fd_to_sock_btf(): plain loads. */
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

/* Fill family, protocol, addresses and ports; every record kind that names a
 * socket uses the same field names, so one macro serves them all. */
#define FILL_TUPLE(ev, sk)                                                              \
	do {                                                                            \
		(ev)->family = BPF_CORE_READ(sk, __sk_common.skc_family);               \
		(ev)->protocol = BPF_CORE_READ(sk, sk_protocol);                        \
		(ev)->lport = BPF_CORE_READ(sk, __sk_common.skc_num);                   \
		(ev)->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));      \
		__builtin_memset((ev)->laddr, 0, 16);                                   \
		__builtin_memset((ev)->raddr, 0, 16);                                   \
		if ((ev)->family == AF_INET) {                                          \
			bpf_core_read((ev)->laddr, 4, &(sk)->__sk_common.skc_rcv_saddr); \
			bpf_core_read((ev)->raddr, 4, &(sk)->__sk_common.skc_daddr);    \
		} else {                                                                \
			bpf_core_read((ev)->laddr, 16, &(sk)->__sk_common.skc_v6_rcv_saddr); \
			bpf_core_read((ev)->raddr, 16, &(sk)->__sk_common.skc_v6_daddr); \
		}                                                                       \
	} while (0)

#endif
