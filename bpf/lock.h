/* SPDX-License-Identifier: GPL-2.0 */
/* Record layout of the lock tracer (read by the Python decoder from BTF). */
#ifndef UETRACE_LOCK_H
#define UETRACE_LOCK_H

/* What a record says happened. A blocking call gives REQUEST at entry and
 * ACQUIRE at return (ret 0 or EOWNERDEAD: the caller holds the lock); a
 * trylock gives one TRYLOCK record at return, since it never waits.
 * A condition wait releases its mutex and takes it again inside the C library
 * (not through the probed mutex functions): it gives UNLOCK at entry (the mutex
 * argument is released while the thread waits) and ACQUIRE at return (held
 * again; wait_ns is the whole wait), with fn one of the LOCK_FN_COND_*. */
enum ue_lock_op { LOCK_OP_REQUEST = 1, LOCK_OP_ACQUIRE = 2, LOCK_OP_TRYLOCK = 3, LOCK_OP_UNLOCK = 4 };

/* Which C library function was called; for rwlocks it gives the mode (read:
 * shared with other readers, write: exclusive). `mutex` is the pthread_mutex_t
 * or pthread_rwlock_t address (for a condition wait, its mutex argument). */
enum ue_lock_fn {
	LOCK_FN_LOCK = 1, LOCK_FN_TIMEDLOCK = 2, LOCK_FN_TRYLOCK = 3, LOCK_FN_UNLOCK = 4,
	LOCK_FN_COND_WAIT = 5, LOCK_FN_COND_TIMEDWAIT = 6, LOCK_FN_COND_CLOCKWAIT = 7,
	LOCK_FN_RDLOCK = 8, LOCK_FN_WRLOCK = 9, LOCK_FN_TIMEDRDLOCK = 10, LOCK_FN_TIMEDWRLOCK = 11,
	LOCK_FN_TRYRDLOCK = 12, LOCK_FN_TRYWRLOCK = 13, LOCK_FN_RWUNLOCK = 14,
};

struct ue_lock {
	__u32 kind;          /* UE_KIND_LOCK */
	__u32 cpu;
	__u64 ts;            /* CLOCK_MONOTONIC ns: entry for request/unlock, return for acquire/trylock */
	__u64 mutex;         /* pthread_mutex_t or pthread_rwlock_t address in the process */
	__u64 wait_ns;       /* acquire/trylock: ns from the call's entry to its return */
	__u64 caller;        /* return address of the call (read at entry from the stack): the stack
	                      * walk at a function's first instruction starts at the caller's caller
	                      * unless the function begins with push %rbp or endbr64 (glibc's do not) */
	__u32 pid;           /* tgid */
	__u32 tid;
	__s32 ustack_id;     /* user stack at the call (taken at entry); < 0: not available */
	__s32 ret;           /* acquire/trylock: the function's return value (0, EBUSY, ETIMEDOUT...) */
	__u16 op;            /* enum ue_lock_op */
	__u16 fn;            /* enum ue_lock_fn */
	__u32 _pad0;
	__u64 pystack;       /* the calling thread's Python frames: key of py_stackmap (bpf/pystackmap.bpf.h),
			      * 0 when none; the loader writes pystack_id (py_stacks) in its place */
};

_Static_assert(sizeof(struct ue_lock) == 72, "ue_lock layout changed: update the schema history");

/* Keep these enums in the object's BTF (clang drops types nothing uses): the capture
 * writes every enum of the object into schema/<kind>.json, where analysis looks values up. */
enum ue_lock_op unused_ue_lock_op __attribute__((unused));
enum ue_lock_fn unused_ue_lock_fn __attribute__((unused));

#endif
