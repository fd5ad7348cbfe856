// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * task.bpf.c: process and privilege events. Part of the ktrail.bpf.c unit.
 *
 * Canonical arguments and string slots per event type (decoded by
 * src/ktrail/decode/syscalls.py):
 *   setsid          -                                      (retval: the new session)
 *   prctl           option                                 slots new name, old name
 *   kill            target pid, signal, target tid
 *   ptrace          request, target pid, addr, data
 *   memfd_create    flags                                  slots name
 *   exec_memory     addr, len, prot, flags, fd
 *   setuid          real, effective, saved asked (-1 = unchanged); real,
 *                   effective, saved after (uids, or gids for the gid calls)
 *   process_vm      target pid, local iovcnt, remote iovcnt, remote bytes
 *                   (first 4 iovecs), flags, first remote address
 *   (privilege_escalation is emitted by syscall.bpf.h on any traced syscall)
 */
#include "syscall.bpf.h"

#define KT_PR_SET_NAME 15
#define KT_PROT_EXEC 0x4
#define KT_MAP_ANONYMOUS 0x20
#define KT_PTRACE_POKETEXT 4
#define KT_PTRACE_POKEDATA 5
#define KT_PTRACE_ATTACH 16
#define KT_PTRACE_SEIZE 0x4206

/* Report every ptrace request (verbose), not only the injection ones. */
const volatile bool kt_ptrace_all = false;

SYSCALL(setsid, 0)
{
	sys_submit(e, KT_EVENT_SETSID, 0);
	return 0;
}

/* prctl: only PR_SET_NAME (process name masquerading) keeps state; the old
 * name is taken at entry, since at exit the task already has the new one. */
SYS_ENTER_FN(prctl, 2)
{
	struct sys_args *a;

	if (args[0] != KT_PR_SET_NAME)
		return 0;
	a = args_slot(true);
	if (!a)
		return 0;
	a->args[0] = KT_PR_SET_NAME;
	a->args[1] = args[1];
	bpf_get_current_comm(&a->args[2], 16); /* args[2..3]: the old name */
	a->args[4] = a->args[5] = 0;
	a->euid = current_euid();
	a->_pad = 0;
	a->valid = 1;
	return 0;
}

SYS_EXIT(prctl)
{
	char old[16];
	__u64 off;

	__builtin_memcpy(old, &e->args[2], 16);
	off = put_user_str(e, 0, 0, ARG(1, const char *));
	if (off <= KT_DATA_SIZE - KT_STR_MAX) {
		__builtin_memcpy(&e->data[off], old, 16);
		e->data[off + 15] = 0;
		slot_set(e, 1, 16, KT_STR_USER);
		off += 16;
	}
	e->args[1] = e->args[2] = e->args[3] = 0;
	sys_submit(e, KT_EVENT_PRCTL, off);
	return 0;
}

static __always_inline int on_kill(struct kt_sys_event *e, long pid, long sig, long tid)
{
	e->args[0] = pid;
	e->args[1] = sig;
	e->args[2] = tid;
	sys_submit(e, KT_EVENT_KILL, 0);
	return 0;
}

SYSCALL(kill, 2)
{
	return on_kill(e, e->args[0], e->args[1], 0);
}

SYSCALL(tkill, 2)
{
	return on_kill(e, 0, e->args[1], e->args[0]);
}

SYSCALL(tgkill, 3)
{
	return on_kill(e, e->args[0], e->args[2], e->args[1]);
}

static __always_inline bool ptrace_reported(long request)
{
	return kt_ptrace_all || request == KT_PTRACE_POKETEXT || request == KT_PTRACE_POKEDATA ||
	       request == KT_PTRACE_ATTACH || request == KT_PTRACE_SEIZE;
}

/* Filtered at entry: debuggers issue PEEKs by the thousand. */
SYS_ENTER_FN(ptrace, 4)
{
	if (!ptrace_reported(args[0]))
		return 0;
	return sys_save(args, 4);
}

SYS_EXIT(ptrace)
{
	sys_submit(e, KT_EVENT_PTRACE, 0);
	return 0;
}

SYSCALL(memfd_create, 2)
{
	__u64 off = put_user_str(e, 0, 0, ARG(0, const char *));

	e->args[0] = e->args[1];
	e->args[1] = 0;
	sys_submit(e, KT_EVENT_MEMFD_CREATE, off);
	return 0;
}

/* Executable anonymous memory: what shellcode loaders and fileless payloads
 * need (and JIT compilers do, hence verbose only). */
SYS_ENTER_FN(mmap, 6)
{
	if (!(args[2] & KT_PROT_EXEC) || !(args[3] & KT_MAP_ANONYMOUS))
		return 0;
	return sys_save(args, 6);
}

SYS_EXIT(mmap)
{
	/* canonical: addr (the mapping made), len, prot, flags, fd */
	e->args[0] = ret;
	e->args[5] = 0;
	sys_submit(e, KT_EVENT_EXEC_MEMORY, 0);
	return 0;
}

SYS_ENTER_FN(mprotect, 3)
{
	if (!(args[2] & KT_PROT_EXEC))
		return 0;
	return sys_save(args, 3);
}

SYS_EXIT(mprotect)
{
	e->args[3] = 0;
	e->args[4] = (__u64)-1;
	sys_submit(e, KT_EVENT_EXEC_MEMORY, 0);
	return 0;
}

/* --- setuid family --- */

static __always_inline int on_setid(struct kt_sys_event *e, bool gid, long r, long eff, long s)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	e->args[0] = r;
	e->args[1] = eff;
	e->args[2] = s;
	if (gid) {
		e->args[3] = BPF_CORE_READ(task, cred, gid.val);
		e->args[4] = BPF_CORE_READ(task, cred, egid.val);
		e->args[5] = BPF_CORE_READ(task, cred, sgid.val);
	} else {
		e->args[3] = BPF_CORE_READ(task, cred, uid.val);
		e->args[4] = BPF_CORE_READ(task, cred, euid.val);
		e->args[5] = BPF_CORE_READ(task, cred, suid.val);
	}
	sys_submit(e, KT_EVENT_SETUID, 0);
	return 0;
}

#define UNCHANGED (-1)

SYSCALL(setuid, 1) { return on_setid(e, false, e->args[0], e->args[0], UNCHANGED); }
SYSCALL(setgid, 1) { return on_setid(e, true, e->args[0], e->args[0], UNCHANGED); }
SYSCALL(setreuid, 2) { return on_setid(e, false, e->args[0], e->args[1], UNCHANGED); }
SYSCALL(setregid, 2) { return on_setid(e, true, e->args[0], e->args[1], UNCHANGED); }
SYSCALL(setresuid, 3) { return on_setid(e, false, e->args[0], e->args[1], e->args[2]); }
SYSCALL(setresgid, 3) { return on_setid(e, true, e->args[0], e->args[1], e->args[2]); }
SYSCALL(setfsuid, 1) { return on_setid(e, false, UNCHANGED, e->args[0], UNCHANGED); }
SYSCALL(setfsgid, 1) { return on_setid(e, true, UNCHANGED, e->args[0], UNCHANGED); }

/* capset: the capability sets asked for, as 64-bit masks. */
SYSCALL(capset, 2)
{
	struct __user_cap_data_struct d[2] = {};

	bpf_probe_read_user(d, sizeof(d), ARG(1, void *));
	e->args[0] = d[0].effective | ((__u64)d[1].effective << 32);
	e->args[1] = d[0].permitted | ((__u64)d[1].permitted << 32);
	e->args[2] = d[0].inheritable | ((__u64)d[1].inheritable << 32);
	sys_submit(e, KT_EVENT_SETUID, 0);
	return 0;
}

/* --- process_vm_readv / process_vm_writev: another process's memory --- */

#define KT_IOV_SUMMED 4

/* The caller's tgid as its own pid namespace numbers it: the pid argument
 * of process_vm_* is in that namespace. */
static __always_inline __u32 current_vtgid(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct pid *p = BPF_CORE_READ(task, group_leader, thread_pid);
	unsigned int level = BPF_CORE_READ(p, level);
	struct upid up = {};

	bpf_probe_read_kernel(&up, sizeof(up), &p->numbers[level & 31]);
	return up.nr;
}

/* Filtered at entry: a process reading its own memory this way (a safe
 * probe of a pointer) is not reported. */
static __always_inline int enter_process_vm(const unsigned long *args)
{
	if ((__u32)args[0] == current_vtgid())
		return 0;
	return sys_save(args, 6);
}

static __always_inline int exit_process_vm(struct kt_sys_event *e)
{
	struct { __u64 base, len; } iov;
	void *remote = ARG(3, void *);
	__u64 cnt = e->args[4], total = 0, first = 0;
	int i;

	for (i = 0; i < KT_IOV_SUMMED; i++) {
		if (i >= cnt || bpf_probe_read_user(&iov, sizeof(iov), remote + i * sizeof(iov)))
			break;
		if (i == 0)
			first = iov.base;
		total += iov.len;
	}
	e->args[1] = e->args[2]; /* local iovcnt */
	e->args[2] = cnt;
	e->args[3] = total;
	e->args[4] = e->args[5]; /* flags */
	e->args[5] = first;
	sys_submit(e, KT_EVENT_PROCESS_VM, 0);
	return 0;
}

SYS_ENTER_FN(process_vm_readv, 6)
{
	return enter_process_vm(args);
}

SYS_EXIT(process_vm_readv)
{
	return exit_process_vm(e);
}

SYS_ENTER_FN(process_vm_writev, 6)
{
	return enter_process_vm(args);
}

SYS_EXIT(process_vm_writev)
{
	return exit_process_vm(e);
}
