/* SPDX-License-Identifier: GPL-2.0 */
/* From a file descriptor of the current task to its INET socket and 5-tuple,
 * for the system-call objects (sock_syscalls.bpf.c, tls_syscalls.bpf.c) that
 * kernels without the socket tracepoints load instead (capture/socket_hooks.py). */
#ifndef UETRACE_SOCKFD_WALK_BPF_H
#define UETRACE_SOCKFD_WALK_BPF_H

#include "sockfd.bpf.h"

#define NR_ACCEPT 43
#define NR_ACCEPT4 288
#define S_IFMT 00170000
#define S_IFSOCK 0140000

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
 * helper version: ~8% of a traced nginx worker's time in probe reads).
 * *addr: the struct sock's address as a number (for sock_id): the verifier
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
