/* SPDX-License-Identifier: GPL-2.0 */
/* Constants shared by the kernel programs and the Python loader
 * (the loader reads both enums from each object's BTF). */
#ifndef UETRACE_COMMON_H
#define UETRACE_COMMON_H

/* Why a record was not delivered; index into the per-CPU `drops` map. */
enum ue_drop {
	UE_DROP_RINGBUF = 0,    /* ring buffer full: reserve/output failed */
	UE_DROP_READ_FAULT = 1, /* bpf_probe_read_* of user or kernel memory failed */
	UE_DROP_MAP_FULL = 2,   /* an in-flight hash map had no room */
	UE_DROP_STACK = 3,      /* stack map collision, EEXIST or ENOMEM */
	UE_DROP_MAX = 8,
};

/* Every record starts with a __u32 `kind` naming its layout (one value per
 * struct, unique across tracers). */
enum ue_kind {
	UE_KIND_SOCK_DATA = 1,
	UE_KIND_SOCK_CONN = 2,
	UE_KIND_TLS_DATA = 3,   /* tls.h: same layout as ue_sock_data, plaintext payload */
	UE_KIND_PROC = 10,
	UE_KIND_NET_PACKET = 20,
	UE_KIND_STACK_SAMPLE = 30,
	UE_KIND_OFFCPU = 31,
	UE_KIND_LOCK = 40,
	UE_KIND_ALLOC = 50,
};

#endif
