// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * process.bpf.c: exec, fork, exit. Part of the ktrail.bpf.c unit.
 *
 * Each hook exists in two flavours, tp_btf (typed, preferred) and raw_tp
 * (older kernels); the loader autoloads one flavour per event type, and only
 * for event types that are enabled. Both share the same body, which reads
 * kernel memory through CO-RE so the object runs on any BTF kernel.
 */
#include "common.bpf.h"

/* Exec records are variable length: built here, then only the used bytes go
 * to the ring. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kt_exec_event);
} kt_exec_scratch SEC(".maps");

/* execve(at) arguments kept from syscall entry to exit, keyed by thread, so a
 * failed exec can be reported with what was asked. LRU: a thread that dies
 * inside execve can never leak an entry. */
struct exec_args {
	const char *filename;
	const char *const *argv;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, struct exec_args);
} kt_exec_args SEC(".maps");

static __always_inline __u32 login_uid(struct task_struct *task)
{
	if (bpf_core_field_exists(task->loginuid))
		return BPF_CORE_READ(task, loginuid.val);
	return (__u32)-1;
}

static __always_inline struct kt_exec_event *exec_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kt_exec_scratch, &zero);
}

static __always_inline void exec_fill_ids(struct kt_exec_event *e, struct task_struct *task)
{
	e->auid = login_uid(task);
	e->euid = BPF_CORE_READ(task, cred, euid.val);
	e->egid = BPF_CORE_READ(task, cred, egid.val);
}

/* Sends the used part of a built exec record. */
static __always_inline void exec_submit(struct kt_exec_event *e, struct task_struct *task, __u64 seq)
{
	__u64 size = offsetof(struct kt_exec_event, data) + e->args_len + e->filename_len;

	if (size > sizeof(*e))
		size = sizeof(*e);
	fill_header(&e->hdr, KT_EVENT_EXEC, size, seq, task);
	if (bpf_ringbuf_output(&kt_events, e, size, submit_flags()))
		count_drop(KT_EVENT_EXEC);
}

/* Appends the filename after argv. */
static __always_inline void exec_put_filename(struct kt_exec_event *e, const char *name, bool user)
{
	__u64 off = e->args_len;
	long n;

	if (off > KT_ARGS_MAX)
		off = KT_ARGS_MAX;
	if (user)
		n = bpf_probe_read_user_str(&e->data[off], KT_PATH_MAX, name);
	else
		n = bpf_probe_read_kernel_str(&e->data[off], KT_PATH_MAX, name);
	if (n <= 0) {
		e->data[off] = 0;
		n = 1;
	}
	if (n >= KT_PATH_MAX)
		e->flags |= KT_EXEC_FILENAME_TRUNCATED;
	e->filename_len = n;
}

static __always_inline int on_exec(struct task_struct *task, struct linux_binprm *bprm)
{
	__u64 seq = next_seq();
	struct kt_exec_event *e = exec_scratch();
	struct mm_struct *mm;
	unsigned long start, end;
	__u64 len;

	if (!e)
		return 0;
	e->retval = 0;
	e->flags = 0;
	e->argc = BPF_CORE_READ(bprm, argc);
	exec_fill_ids(e, task);

	/* argv as the new image sees it: the kernel just copied it to the new
	 * stack, so it is resident and complete. */
	mm = BPF_CORE_READ(task, mm);
	start = BPF_CORE_READ(mm, arg_start);
	end = BPF_CORE_READ(mm, arg_end);
	len = end - start;
	if (len > KT_ARGS_MAX) {
		len = KT_ARGS_MAX;
		e->flags |= KT_EXEC_ARGS_TRUNCATED;
	}
	e->args_len = 0;
	if (len > 0) {
		if (bpf_probe_read_user(e->data, len, (void *)start) == 0)
			e->args_len = len;
		else
			e->flags |= KT_EXEC_ARGS_UNREADABLE;
	}
	exec_put_filename(e, BPF_CORE_READ(bprm, filename), false);
	/* A process the kernel started itself (core_pattern pipe, modprobe,
	 * hotplug helpers): its parent is a kernel thread. */
	if (BPF_CORE_READ(task, real_parent, flags) & 0x00200000 /* PF_KTHREAD */)
		e->flags |= KT_EXEC_KERNEL_SPAWNED;
	exec_submit(e, task, seq);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(kt_exec_btf, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm);
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(kt_exec_raw, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec(p, bprm);
}

/* --- failed execs: syscall entry keeps the arguments, exit reports errors --- */

static __always_inline int exec_enter(const char *filename, const char *const *argv)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct exec_args a = { .filename = filename, .argv = argv };

	bpf_map_update_elem(&kt_exec_args, &tid, &a, BPF_ANY);
	return 0;
}

struct argv_walk {
	const char *const *argv;
	__u64 off;
};

/* One argv entry per call; bpf_loop lets the verifier check this body once
 * instead of once per iteration of an unrolled loop. */
static long argv_step(__u32 i, void *ctx)
{
	struct argv_walk *w = ctx;
	struct kt_exec_event *e = exec_scratch();
	const char *arg;
	__u64 off = w->off;
	long n;

	if (!e)
		return 1;
	if (bpf_probe_read_user(&arg, sizeof(arg), &w->argv[i]) || !arg)
		return 1;
	e->argc++;
	if (off >= KT_ARGS_MAX) {
		e->flags |= KT_EXEC_ARGS_TRUNCATED;
		return 0;
	}
	n = bpf_probe_read_user_str(&e->data[off], KT_ARGS_MAX - off, arg);
	if (n <= 0)
		return 0;
	off += n;
	/* The string filled all the space left: it may have been cut. */
	if (off >= KT_ARGS_MAX)
		e->flags |= KT_EXEC_ARGS_TRUNCATED;
	w->off = off;
	return 0;
}

static __always_inline int exec_exit(long ret)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct exec_args *a = bpf_map_lookup_elem(&kt_exec_args, &tid);
	struct argv_walk w = {};
	struct kt_exec_event *e;
	__u64 seq;
	long n;

	if (!a)
		return 0;
	/* Success was already reported, with the new image, by sched_process_exec. */
	if (ret == 0)
		goto out;
	seq = next_seq();
	e = exec_scratch();
	if (!e)
		goto out;
	e->retval = ret;
	e->flags = 0;
	e->argc = 0;
	exec_fill_ids(e, task);

	w.argv = a->argv;
	n = bpf_loop(KT_ARGV_SCAN_MAX, argv_step, &w, 0);
	if (n >= KT_ARGV_SCAN_MAX)
		e->flags |= KT_EXEC_ARGS_TRUNCATED;
	e->args_len = w.off > KT_ARGS_MAX ? KT_ARGS_MAX : w.off;
	exec_put_filename(e, a->filename, true);
	exec_submit(e, task, seq);
out:
	bpf_map_delete_elem(&kt_exec_args, &tid);
	return 0;
}

/* Failed execs: the syscall's entry keeps filename and argv, its exit
 * reports a failure. Tracepoints, or fentry/fexit where the kernel allows
 * (see SYS_ENTER_FN in syscall.bpf.h for why). */
SEC("tracepoint/syscalls/sys_enter_execve")
int kt_enter_execve(struct trace_event_raw_sys_enter *ctx)
{
	return exec_enter((const char *)ctx->args[0], (const char *const *)ctx->args[1]);
}

SEC("tracepoint/syscalls/sys_exit_execve")
int kt_exit_execve(struct trace_event_raw_sys_exit *ctx)
{
	return exec_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_execveat")
int kt_enter_execveat(struct trace_event_raw_sys_enter *ctx)
{
	return exec_enter((const char *)ctx->args[1], (const char *const *)ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_execveat")
int kt_exit_execveat(struct trace_event_raw_sys_exit *ctx)
{
	return exec_exit(ctx->ret);
}

SEC("fentry/" KT_SYS_FN "execve")
int BPF_PROG(kt_fentry_execve, struct pt_regs *regs)
{
	return exec_enter((const char *)PT_REGS_PARM1_CORE_SYSCALL(regs),
			  (const char *const *)PT_REGS_PARM2_CORE_SYSCALL(regs));
}

SEC("fexit/" KT_SYS_FN "execve")
int BPF_PROG(kt_fexit_execve, struct pt_regs *regs, long ret)
{
	return exec_exit(ret);
}

SEC("fentry/" KT_SYS_FN "execveat")
int BPF_PROG(kt_fentry_execveat, struct pt_regs *regs)
{
	return exec_enter((const char *)PT_REGS_PARM2_CORE_SYSCALL(regs),
			  (const char *const *)PT_REGS_PARM3_CORE_SYSCALL(regs));
}

SEC("fexit/" KT_SYS_FN "execveat")
int BPF_PROG(kt_fexit_execveat, struct pt_regs *regs, long ret)
{
	return exec_exit(ret);
}

/* --- fork --- */

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	struct kt_fork_event *e;
	bool thread = BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid);
	__u64 seq;

	/* Threads are dropped here, before any record is built, unless asked for. */
	if (thread && !kt_trace_threads)
		return 0;
	seq = next_seq();
	e = bpf_ringbuf_reserve(&kt_events, sizeof(*e), 0);
	if (!e) {
		count_drop(KT_EVENT_FORK);
		return 0;
	}
	fill_header(&e->hdr, KT_EVENT_FORK, sizeof(*e), seq, parent);
	e->child_start_ns = BPF_CORE_READ(child, start_boottime);
	e->child_pid = BPF_CORE_READ(child, tgid);
	e->child_tid = BPF_CORE_READ(child, pid);
	e->flags = thread ? KT_FORK_THREAD : 0;
	e->_pad = 0;
	bpf_ringbuf_submit(e, submit_flags());
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(kt_fork_btf, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(kt_fork_raw, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

/* --- exit --- */

static __always_inline int on_exit(struct task_struct *task)
{
	struct kt_exit_event *e;
	__u64 seq;

	/* sched_process_exit fires for every thread; do_exit has already
	 * decremented signal->live, so 0 means this was the last one. This works
	 * whether or not the kernel's tracepoint passes group_dead (6.16+). */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	seq = next_seq();
	e = bpf_ringbuf_reserve(&kt_events, sizeof(*e), 0);
	if (!e) {
		count_drop(KT_EVENT_EXIT);
		return 0;
	}
	fill_header(&e->hdr, KT_EVENT_EXIT, sizeof(*e), seq, task);
	/* A group exit (exit_group, fatal signal) leaves the status in signal. */
	e->exit_code = BPF_CORE_READ(task, exit_code);
	if (BPF_CORE_READ(task, signal, flags) & 0x4 /* SIGNAL_GROUP_EXIT */)
		e->exit_code = BPF_CORE_READ(task, signal, group_exit_code);
	e->_pad = 0;
	bpf_ringbuf_submit(e, submit_flags());
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(kt_exit_btf, struct task_struct *p)
{
	return on_exit(p);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(kt_exit_raw, struct task_struct *p)
{
	return on_exit(p);
}
