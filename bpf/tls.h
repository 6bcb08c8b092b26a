/* SPDX-License-Identifier: GPL-2.0 */
/* Record layout of the TLS tracer. The Python decoder reads this struct from
 * the object's BTF, so this file is its only definition. */
#ifndef UETRACE_TLS_H
#define UETRACE_TLS_H

#define TLS_MAX_SNAPLEN 4096

/* Which libssl function moved the bytes (the `syscall` column). Values start
 * at 21 so that they never collide with enum ue_sock_syscall. */
enum ue_tls_fn {
	TLS_SSL_READ = 21, TLS_SSL_WRITE = 22, TLS_SSL_READ_EX = 23, TLS_SSL_WRITE_EX = 24,
};

/* One SSL_read/SSL_write(_ex) call that moved plaintext.
 *
 * The body is a copy of struct ue_sock_data (sock.h), field for field, so that
 * the `tls_data` table has the columns of `sock_data` and the HTTP analyzer
 * reads both alike. tests/test_tls_capture.py checks that the two structs
 * match in the objects' BTF: change both or neither. The meaning differs only
 * where noted. */
struct ue_tls_data {
	__u32 kind;          /* UE_KIND_TLS_DATA */
	__u32 cpu;
	__u64 ts_enter;      /* CLOCK_MONOTONIC ns at the SSL call's entry */
	__u64 ts_exit;       /* CLOCK_MONOTONIC ns at its return */
	__u64 sock_id;       /* as sock_data's for the same socket; 0: socket unknown */
	__u32 pid;           /* tgid */
	__u32 tid;
	__s32 fd;            /* socket fd the SSL object used; -1: unknown (e.g. memory BIOs) */
	__u16 syscall;       /* enum ue_tls_fn */
	__u8 direction;      /* 0: SSL_write (egress), 1: SSL_read (ingress) */
	__u8 _pad0;
	__s64 bytes;         /* plaintext bytes the call returned */
	__u32 captured;      /* payload bytes that follow (<= snaplen) */
	__u16 family;        /* AF_INET / AF_INET6; 0 when the socket is unknown */
	__u16 protocol;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;         /* host byte order */
	__u16 rport;
	__u32 _pad1;
	__u8 payload[];      /* first `captured` plaintext bytes */
};

_Static_assert(sizeof(struct ue_tls_data) == 104, "ue_tls_data layout changed: update the schema history");

/* Keep these enums in the object's BTF (clang drops types nothing uses): the capture
 * writes every enum of the object into schema/<kind>.json, where analysis looks values up. */
enum ue_tls_fn unused_ue_tls_fn __attribute__((unused));

#endif
