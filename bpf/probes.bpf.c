// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Feature probes: one tiny program per hook mechanism. The loader loads and
 * attaches each one on its own; a mechanism is "available" only when both
 * succeed on this kernel, which is the only answer worth reporting (a program
 * type can load on a kernel where attaching it is impossible).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tracepoint/syscalls/sys_enter_getppid")
int probe_tracepoint(void *ctx)
{
	return 0;
}

SEC("raw_tp/sched_process_fork")
int probe_raw_tp(void *ctx)
{
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(probe_tp_btf, struct task_struct *parent, struct task_struct *child)
{
	return 0;
}

SEC("kprobe/vfs_read")
int probe_kprobe(struct pt_regs *ctx)
{
	return 0;
}

SEC("fentry/vfs_read")
int BPF_PROG(probe_fentry)
{
	return 0;
}

SEC("lsm/bprm_check_security")
int BPF_PROG(probe_lsm, struct linux_binprm *bprm, int ret)
{
	return ret;
}

/* Attached by the loader to a libc function; the section carries no target. */
SEC("uprobe")
int probe_uprobe(struct pt_regs *ctx)
{
	return 0;
}
