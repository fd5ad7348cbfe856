/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * common.bpf.h: what every ktrail program shares: configuration, the ring
 * buffer, per-CPU counters and the record header.
 */
#ifndef KT_COMMON_BPF_H
#define KT_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "ktrail.h"

/* The prefix of syscall entry functions (fentry/fexit targets). */
#if defined(__TARGET_ARCH_x86)
#define KT_SYS_FN "__x64_sys_"
#elif defined(__TARGET_ARCH_arm64)
#define KT_SYS_FN "__arm64_sys_"
#else
#error "KT_SYS_FN: the prefix of syscall entry functions on this architecture"
#endif

/* Set by the loader before load (libbpf rodata), never by rewriting source. */
const volatile bool kt_trace_threads = false;
/* Force a reader wakeup once this many bytes wait in the ring; below it,
 * records are submitted silently and the reader drains on its timer. */
const volatile __u64 kt_wakeup_bytes = 1 << 20;

/* Anchors so every contract type is present in the object's BTF, which the
 * contract test compares against the Python decoder. */
const volatile enum kt_event_type kt_btf_event_type;
const volatile enum kt_exec_flags kt_btf_exec_flags;
const volatile enum kt_fork_flags kt_btf_fork_flags;
const volatile struct kt_event_header *const kt_btf_header;
const volatile struct kt_exec_event *const kt_btf_exec;
const volatile struct kt_fork_event *const kt_btf_fork;
const volatile struct kt_exit_event *const kt_btf_exit;
const volatile struct kt_sys_event *const kt_btf_sys;
const volatile enum kt_str_kind kt_btf_str_kind;
const volatile enum kt_sys_flags kt_btf_sys_flags;
const volatile enum kt_syscall kt_btf_syscall;
const volatile struct kt_sock_tuple *const kt_btf_sock_tuple;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20); /* resized by the loader */
} kt_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kt_stats);
} kt_stats SEC(".maps");

static __always_inline struct kt_stats *stats(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kt_stats, &zero);
}

static __always_inline __u64 submit_flags(void)
{
	if (bpf_ringbuf_query(&kt_events, BPF_RB_AVAIL_DATA) >= kt_wakeup_bytes) {
		struct kt_stats *s = stats();

		if (s)
			s->forced_wakeups++;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

/* Takes the next per-CPU sequence number. Called once per record attempt, so
 * a record that cannot be reserved leaves a gap the reader can see. */
static __always_inline __u64 next_seq(void)
{
	struct kt_stats *s = stats();

	return s ? ++s->seq : 0;
}

static __always_inline void count_drop(__u16 type)
{
	struct kt_stats *s = stats();

	if (s && type < KT_TYPE_SLOTS)
		s->dropped[type]++;
}

static __always_inline void fill_header(struct kt_event_header *h, __u16 type, __u32 size,
					__u64 seq, struct task_struct *task)
{
	h->type = type;
	h->flags = 0;
	h->size = size;
	h->ts_ns = bpf_ktime_get_boot_ns();
	h->seq = seq;
	h->start_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	h->cpu = bpf_get_smp_processor_id();
	h->pid = BPF_CORE_READ(task, tgid);
	h->tid = BPF_CORE_READ(task, pid);
	h->ppid = BPF_CORE_READ(task, real_parent, tgid);
	h->uid = BPF_CORE_READ(task, cred, uid.val);
	h->gid = BPF_CORE_READ(task, cred, gid.val);
	/* Zeroed first: exec records are built in reused scratch memory, and
	 * bytes past the NUL must not carry another task's name. */
	__builtin_memset(h->comm, 0, sizeof(h->comm));
	BPF_CORE_READ_STR_INTO(&h->comm, task, comm);
}

#endif /* KT_COMMON_BPF_H */
