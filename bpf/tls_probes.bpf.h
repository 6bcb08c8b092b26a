/* SPDX-License-Identifier: GPL-2.0 */
/* The TLS tracer's maps, uprobes and records, shared by the object on the
 * socket tracepoints (tls.bpf.c) and the one on every system call for kernels
 * without them (tls_syscalls.bpf.c). Each includes its socket header first and
 * defines the programs that learn an SSL call's socket. */
#ifndef UETRACE_TLS_PROBES_BPF_H
#define UETRACE_TLS_PROBES_BPF_H

#include "tls.h"

char LICENSE[] SEC("license") = "GPL";

const volatile __u32 snaplen = 512;
const volatile __u64 sock_id_key = 0; /* the socket tracer's key: sock_id values match */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24); /* resized by the loader */
} events SEC(".maps");

#define FN_HANDSHAKE 0 /* SSL_do_handshake/connect/accept: learn the socket, emit nothing */

/* The socket fields of a record, as seen by a syscall inside an SSL call. */
struct sock_info {
	__u64 sock_id;
	__s32 fd;
	__u16 family;
	__u16 protocol;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u32 _pad;
};

/* An SSL call between its entry and its return, per thread. */
struct tls_call {
	__u64 ts;
	__u64 ssl;
	__u64 buf;
	__u64 nbytes_ptr;  /* _ex variants: where the byte count is written */
	__u32 fn;          /* enum ue_tls_fn, or FN_HANDSHAKE */
	__u32 have_sock;   /* a syscall inside this call filled `sock` */
	struct sock_info sock;
};

/* LRU: a thread that dies inside an SSL call never returns from it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct tls_call);
} calls SEC(".maps");

/* SSL* -> the socket it last used. LRU: SSL_free is watched, but a process
 * that exits without freeing its SSL objects would otherwise leak entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct sock_info);
} ssl_socks SEC(".maps");

/* The record plus room for the payload; twice the largest snaplen so that
 * the verifier can bound the copy's length with one mask. */
struct scratch {
	__u8 buf[sizeof(struct ue_tls_data) + 2 * TLS_MAX_SNAPLEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* Keep the record struct in BTF for the Python decoder. */
struct ue_tls_data *unused_tls_data __attribute__((unused));

static __always_inline int call_enter(__u64 ssl, __u64 buf, __u64 nbytes_ptr, __u32 fn)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!wanted(id >> 32))
		return 0;
	__u32 tid = (__u32)id;
	/* OpenSSL does not nest these calls, except SSL_connect/SSL_accept calling
	 * SSL_do_handshake: both are handshakes, so the inner one may replace the outer. */
	struct tls_call c = {.ts = bpf_ktime_get_ns(), .ssl = ssl, .buf = buf, .nbytes_ptr = nbytes_ptr, .fn = fn};
	if (bpf_map_update_elem(&calls, &tid, &c, BPF_ANY))
		count_drop(UE_DROP_MAP_FULL);
	return 0;
}

static __always_inline int call_return(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id, zero = 0;
	struct tls_call *cp = bpf_map_lookup_elem(&calls, &tid);
	if (!cp)
		return 0;
	struct tls_call c = *cp;
	bpf_map_delete_elem(&calls, &tid);
	if (c.fn == FN_HANDSHAKE)
		return 0;

	__s64 n = 0;
	if (c.fn == TLS_SSL_READ_EX || c.fn == TLS_SSL_WRITE_EX) {
		/* 1 on success, the count written through the size_t* argument */
		__u64 got = 0;
		if (ret != 1)
			return 0;
		if (bpf_probe_read_user(&got, sizeof(got), (void *)c.nbytes_ptr)) {
			count_drop(UE_DROP_READ_FAULT);
			return 0;
		}
		n = got;
	} else {
		n = (int)ret; /* SSL_read/SSL_write return an int: bytes, or <= 0 on error */
	}
	if (n <= 0)
		return 0;

	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct ue_tls_data *ev = (struct ue_tls_data *)s->buf;
	__u8 *payload = s->buf + sizeof(*ev);
	ev->kind = UE_KIND_TLS_DATA;
	ev->cpu = bpf_get_smp_processor_id();
	ev->ts_enter = c.ts;
	ev->ts_exit = bpf_ktime_get_ns();
	ev->pid = id >> 32;
	ev->tid = tid;
	ev->syscall = c.fn;
	ev->direction = (c.fn == TLS_SSL_READ || c.fn == TLS_SSL_READ_EX) ? 1 : 0;
	ev->_pad0 = 0;
	ev->bytes = n;
	ev->_pad1 = 0;

	/* Written as two branches: a ternary between a stack and a map pointer
	 * lets clang offset the map pointer before its null check (rejected). */
	struct sock_info *si = &c.sock;
	if (!c.have_sock)
		si = bpf_map_lookup_elem(&ssl_socks, &c.ssl);
	if (si) {
		ev->sock_id = si->sock_id;
		ev->fd = si->fd;
		ev->family = si->family;
		ev->protocol = si->protocol;
		__builtin_memcpy(ev->laddr, si->laddr, 16);
		__builtin_memcpy(ev->raddr, si->raddr, 16);
		ev->lport = si->lport;
		ev->rport = si->rport;
	} else {
		ev->sock_id = 0;
		ev->fd = -1;
		ev->family = 0;
		ev->protocol = 0;
		__builtin_memset(ev->laddr, 0, 16);
		__builtin_memset(ev->raddr, 0, 16);
		ev->lport = 0;
		ev->rport = 0;
	}

	__u32 want = snaplen < TLS_MAX_SNAPLEN ? snaplen : TLS_MAX_SNAPLEN;
	if ((__u64)n < want)
		want = n;
	if (want && bpf_probe_read_user(payload, want & (2 * TLS_MAX_SNAPLEN - 1), (void *)c.buf)) {
		count_drop(UE_DROP_READ_FAULT);
		want = 0;
	}
	ev->captured = want;
	__u64 size = sizeof(*ev) + (want & (2 * TLS_MAX_SNAPLEN - 1));
	if (bpf_ringbuf_output(&events, s, size, BPF_RB_NO_WAKEUP))
		count_drop(UE_DROP_RINGBUF);
	return 0;
}

/* BPF_KPROBE reads the arguments from pt_regs, which is what a uprobe gets too.
 * int SSL_read(SSL *s, void *buf, int num), and likewise SSL_write;
 * int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes), and SSL_write_ex. */
SEC("uprobe")
int BPF_KPROBE(ssl_read_enter, void *ssl, void *buf)
{
	return call_enter((__u64)ssl, (__u64)buf, 0, TLS_SSL_READ);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_enter, void *ssl, void *buf)
{
	return call_enter((__u64)ssl, (__u64)buf, 0, TLS_SSL_WRITE);
}

SEC("uprobe")
int BPF_KPROBE(ssl_read_ex_enter, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return call_enter((__u64)ssl, (__u64)buf, (__u64)readbytes, TLS_SSL_READ_EX);
}

SEC("uprobe")
int BPF_KPROBE(ssl_write_ex_enter, void *ssl, void *buf, __u64 num, void *written)
{
	return call_enter((__u64)ssl, (__u64)buf, (__u64)written, TLS_SSL_WRITE_EX);
}

SEC("uprobe")
int BPF_KPROBE(ssl_handshake_enter, void *ssl)
{
	return call_enter((__u64)ssl, 0, 0, FN_HANDSHAKE);
}

SEC("uretprobe")
int BPF_KRETPROBE(ssl_return, long ret)
{
	return call_return(ret);
}

/* A freed SSL object's address may be reused by the next connection's: forget its socket. */
SEC("uprobe")
int BPF_KPROBE(ssl_free_enter, void *ssl)
{
	__u64 key = (__u64)ssl;
	bpf_map_delete_elem(&ssl_socks, &key);
	return 0;
}

#endif
