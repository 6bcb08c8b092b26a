/* SPDX-License-Identifier: GPL-2.0 */
/* Record layouts of the socket tracer. The Python decoder reads these structs
 * from the object's BTF, so this file is their only definition. Fields are
 * fixed width with explicit padding: ring memory is not zeroed. */
#ifndef UETRACE_SOCK_H
#define UETRACE_SOCK_H

#define SOCK_MAX_SNAPLEN 4096

enum ue_sock_syscall {
	SYS_READ = 1, SYS_WRITE = 2, SYS_RECVFROM = 3, SYS_SENDTO = 4, SYS_READV = 5,
	SYS_WRITEV = 6, SYS_RECVMSG = 7, SYS_SENDMSG = 8, SYS_ACCEPT = 9, SYS_ACCEPT4 = 10,
	SYS_CONNECT = 11, SYS_CLOSE = 12, SYS_SENDFILE = 13, /* 21-24: tls.h */
};

enum ue_sock_direction { DIR_EGRESS = 0, DIR_INGRESS = 1 };

/* One read- or write-like syscall on a TCP/UDP socket that moved bytes (a
 * sendfile(2) to a socket: one record per chunk the kernel pushed). */
struct ue_sock_data {
	__u32 kind;          /* UE_KIND_SOCK_DATA */
	__u32 cpu;
	__u64 ts_enter;      /* CLOCK_MONOTONIC ns: a TCP send's start (before its first byte is queued);
	                      * = ts_exit for receives and UDP sends (no hook marks their start) */
	__u64 ts_exit;       /* CLOCK_MONOTONIC ns when the bytes had moved, just before the syscall returns */
	__u64 sock_id;       /* struct sock address xor a per-capture key: identity within a capture */
	__u32 pid;           /* tgid */
	__u32 tid;
	__s32 fd;
	__u16 syscall;       /* enum ue_sock_syscall */
	__u8 direction;      /* enum ue_sock_direction */
	__u8 _pad0;
	__s64 bytes;         /* syscall return value: bytes moved */
	__u32 captured;      /* payload bytes that follow (<= snaplen) */
	__u16 family;        /* AF_INET / AF_INET6 */
	__u16 protocol;      /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 laddr[16];      /* local address (IPv4 in the first 4 bytes) */
	__u8 raddr[16];      /* remote address */
	__u16 lport;         /* host byte order */
	__u16 rport;         /* host byte order */
	__u32 _pad1;
	__u8 payload[];      /* first `captured` bytes the syscall moved */
};

enum ue_sock_conn_op { CONN_ACCEPT = 1, CONN_CONNECT = 2, CONN_CLOSE = 3 };

/* A TCP socket's life: accepted, connected or closed (with its 5-tuple).
 * ts: connect: its start; close: the first state change the close() makes (a
 * close() that does not release the socket, e.g. of a dup'ed fd, has none);
 * accept: the accepted socket's first data call or close in the process. */
struct ue_sock_conn {
	__u32 kind;          /* UE_KIND_SOCK_CONN */
	__u32 cpu;
	__u64 ts;
	__u64 sock_id;
	__u32 pid;
	__u32 tid;
	__s32 fd;
	__s32 ret;           /* connect: 0, or -EINPROGRESS on a non-blocking socket; accept: the fd */
	__u16 op;            /* enum ue_sock_conn_op */
	__u16 family;
	__u16 protocol;
	__u16 _pad0;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u32 _pad1;
};

/* Keep these enums in the object's BTF (clang drops types nothing uses): the capture
 * writes every enum of the object into schema/<kind>.json, where analysis looks values up. */
enum ue_sock_syscall unused_ue_sock_syscall __attribute__((unused));
enum ue_sock_direction unused_ue_sock_direction __attribute__((unused));
enum ue_sock_conn_op unused_ue_sock_conn_op __attribute__((unused));

#endif
