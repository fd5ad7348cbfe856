// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * kernel.bpf.c: kernel and isolation events. Part of the ktrail.bpf.c unit.
 *
 * Canonical arguments and string slots per event type (decoded by
 * src/ktrail/decode/syscalls.py):
 *   module_load  fd, flags, image length            slots file or name, params
 *   bpf          cmd, prog type, insn count, attach type, target fd, prog fd
 *                                                   slots program name
 *   mount        flags                              slots source, fstype, target, base
 *   umount       flags                              slots target, base
 *   namespace    clone flags (unshare) or nstype (setns), fd, namespace inode
 */
#include "syscall.bpf.h"

#define KT_BPF_PROG_LOAD 5
#define KT_BPF_PROG_ATTACH 8
#define KT_BPF_RAW_TRACEPOINT_OPEN 17
#define KT_BPF_LINK_CREATE 28

SYSCALL(init_module, 3)
{
	__u64 len = e->args[1], off;

	off = put_user_str(e, 1, 0, ARG(2, const char *));
	e->args[0] = (__u64)-1;
	e->args[1] = 0;
	e->args[2] = len;
	sys_submit(e, KT_EVENT_MODULE_LOAD, off);
	return 0;
}

SYSCALL(finit_module, 3)
{
	long fd = e->args[0];
	__u64 off;

	off = put_fd_path(e, 0, 0, fd);
	off = put_user_str(e, 1, off, ARG(1, const char *));
	e->args[1] = e->args[2];
	e->args[2] = 0;
	sys_submit(e, KT_EVENT_MODULE_LOAD, off);
	return 0;
}

SYSCALL(delete_module, 2)
{
	__u64 off = put_user_str(e, 0, 0, ARG(0, const char *));

	e->args[0] = (__u64)-1;
	sys_submit(e, KT_EVENT_MODULE_LOAD, off);
	return 0;
}

/* Program loads and attachments only; map and object commands are routine.
 * Decided at entry. */
static __always_inline bool bpf_reported(long cmd)
{
	return cmd == KT_BPF_PROG_LOAD || cmd == KT_BPF_PROG_ATTACH ||
	       cmd == KT_BPF_RAW_TRACEPOINT_OPEN || cmd == KT_BPF_LINK_CREATE;
}

SYS_ENTER_FN(bpf, 3)
{
	if (!bpf_reported(args[0]))
		return 0;
	return sys_save(args, 3);
}

SYS_EXIT(bpf)
{
	long cmd = e->args[0];
	void *attr = ARG(1, void *);
	__u32 w[3] = {};
	__u64 off = 0;

	e->args[1] = e->args[2] = e->args[3] = e->args[4] = e->args[5] = 0;
	if (cmd == KT_BPF_PROG_LOAD) {
		/* union bpf_attr: prog_type @0, insn_cnt @4, prog_name @48,
		 * expected_attach_type @68 (UAPI, stable). */
		bpf_probe_read_user(w, 8, attr);
		e->args[1] = w[0];
		e->args[2] = w[1];
		bpf_probe_read_user(&w[2], 4, attr + 68);
		e->args[3] = w[2];
		if (off <= KT_DATA_SIZE - KT_STR_MAX) {
			long n = bpf_probe_read_user_str(&e->data[0], 16, attr + 48);

			if (n > 1) {
				slot_set(e, 0, n, KT_STR_USER);
				off = n;
			}
		}
	} else if (cmd == KT_BPF_RAW_TRACEPOINT_OPEN) {
		__u64 name = 0;

		bpf_probe_read_user(&name, 8, attr);
		bpf_probe_read_user(&w[0], 4, attr + 8);
		e->args[5] = w[0];
		off = put_user_str(e, 0, 0, (const char *)name);
	} else {
		/* PROG_ATTACH: target_fd, attach_bpf_fd, attach_type;
		 * LINK_CREATE: prog_fd, target_fd, attach_type. */
		bpf_probe_read_user(w, 12, attr);
		e->args[3] = w[2];
		e->args[4] = cmd == KT_BPF_LINK_CREATE ? w[1] : w[0];
		e->args[5] = cmd == KT_BPF_LINK_CREATE ? w[0] : w[1];
	}
	sys_submit(e, KT_EVENT_BPF, off);
	return 0;
}

SYSCALL(mount, 5)
{
	__u64 off;

	off = put_user_str(e, 0, 0, ARG(0, const char *));
	off = put_user_str(e, 1, off, ARG(2, const char *));
	off = put_path_at(e, 2, off, KT_AT_FDCWD, ARG(1, const char *));
	e->args[0] = e->args[3];
	e->args[1] = e->args[2] = e->args[3] = e->args[4] = 0;
	sys_submit(e, KT_EVENT_MOUNT, off);
	return 0;
}

SYSCALL(umount, 2)
{
	__u64 off = put_path_at(e, 0, 0, KT_AT_FDCWD, ARG(0, const char *));

	e->args[0] = e->args[1];
	e->args[1] = 0;
	sys_submit(e, KT_EVENT_UMOUNT, off);
	return 0;
}

SYSCALL(unshare, 1)
{
	e->args[1] = (__u64)-1;
	sys_submit(e, KT_EVENT_NAMESPACE, 0);
	return 0;
}

/* setns(fd, nstype): the fd is a /proc/PID/ns/X file (its inode number is
 * the namespace id, what `ls -l /proc/PID/ns` shows) or a pidfd. */
SYSCALL(setns, 2)
{
	long fd = e->args[0];
	struct file *f = fd_file(fd);

	e->args[0] = e->args[1];
	e->args[1] = fd;
	e->args[2] = f ? BPF_CORE_READ(f, f_inode, i_ino) : 0;
	sys_submit(e, KT_EVENT_NAMESPACE, 0);
	return 0;
}

/* --- syscalls with no tracepoint on this kernel ---
 *
 * A syscall compiled out (init_module without CONFIG_MODULES is
 * sys_ni_syscall) has no syscalls:sys_enter_X, yet calling it is worth
 * reporting. The raw syscall hooks see every syscall, so they cost every
 * syscall on the machine: the loader attaches them only when asked (full
 * profile) and lists the numbers to keep in kt_raw_nr.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);    /* syscall number on this architecture */
	__type(value, __u32);  /* enum kt_syscall */
} kt_raw_nr SEC(".maps");

#define KT_RAW_MARK 0x52415700 /* sys_args._pad: "RAW", plus the kt_syscall id */

SEC("raw_tp/sys_enter")
int kt_raw_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 nr = ctx->args[1];
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	__u32 *sc = bpf_map_lookup_elem(&kt_raw_nr, &nr);
	struct sys_args *a;

	if (!sc)
		return 0;
	a = args_slot(true);
	if (!a)
		return 0;
	a->args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	a->args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	a->args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	a->args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
	a->args[4] = PT_REGS_PARM5_CORE_SYSCALL(regs);
	a->args[5] = 0;
	a->euid = current_euid();
	a->_pad = KT_RAW_MARK | (*sc & 0xff);
	a->valid = 1;
	return 0;
}

SEC("raw_tp/sys_exit")
int kt_raw_sys_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct sys_args *a = args_slot(false);
	long ret = ctx->args[1];
	struct kt_sys_event *e;
	__u32 sc;

	/* Entries made by per-syscall tracepoints belong to their own exits. */
	if (!a || !a->valid || (a->_pad & 0xffffff00) != KT_RAW_MARK)
		return 0;
	sc = a->_pad & 0xff;
	e = sys_begin(ret, sc);
	if (!e)
		return 0;
	switch (sc) {
	case KT_SC_init_module:
		return exit_init_module(e, ret);
	case KT_SC_finit_module:
		return exit_finit_module(e, ret);
	case KT_SC_delete_module:
		return exit_delete_module(e, ret);
	}
	return 0;
}
