/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * syscall.bpf.h: the machinery every syscall event shares.
 *
 * sys_enter_X keeps the arguments per thread; sys_exit_X starts a
 * kt_sys_event from them with the result (failures are events too), fills
 * string slots, and sends only the bytes used. Paths are made absolute in the
 * kernel: an fd's path or the cwd is rebuilt by walking dentries up to the
 * root, across mounts (bpf_d_path is not allowed from tracepoints).
 */
#ifndef KT_SYSCALL_BPF_H
#define KT_SYSCALL_BPF_H

#include "common.bpf.h"

#define KT_AT_FDCWD -100
#define KT_NAME_MAX 256      /* a path component, NUL included */
#define KT_PATH_DEPTH 64     /* components walked before a path counts as cut */
#define KT_DATA_SIZE (KT_SYS_STRS * KT_STR_MAX)

/* Bit N set: event type N is enabled. Several types share a syscall (openat
 * gives open and create), so the exit decides, after classifying. */
const volatile __u64 kt_enabled_mask = ~0ULL;
/* The sensor's own process: its syscalls (attaching programs, reading /proc)
 * would otherwise describe the sensor to itself on every start. */
const volatile __u32 kt_self_tgid = 0;

/* Processes whose syscall events are never sent (the configuration's
 * ignore.pids/uids/comms). Privilege escalation is reported regardless. */
const volatile bool kt_ignore_enabled = false;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} kt_ignore_pid SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} kt_ignore_uid SEC(".maps");

struct kt_comm_key {
	char comm[KT_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct kt_comm_key);
	__type(value, __u8);
} kt_ignore_comm SEC(".maps");

static __always_inline bool ignored_task(void)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 uid = (__u32)bpf_get_current_uid_gid();
	struct kt_comm_key k = {};

	if (!kt_ignore_enabled)
		return false;
	if (bpf_map_lookup_elem(&kt_ignore_pid, &tgid) || bpf_map_lookup_elem(&kt_ignore_uid, &uid))
		return true;
	bpf_get_current_comm(&k.comm, sizeof(k.comm));
	return bpf_map_lookup_elem(&kt_ignore_comm, &k) != NULL;
}

struct sys_args {
	__u64 args[6];
	__u32 euid;   /* at entry, for the privilege-escalation check */
	__u32 _pad;   /* raw-syscall marker (kernel.bpf.c) */
	__u32 valid;  /* set at entry, cleared at exit */
	__u32 _pad2;
};

/* Task-local storage: found from the task in O(1) with no lock, and freed
 * with the task, so a thread that dies inside a syscall leaks nothing. A
 * hash map keyed by tid costs ~300 ns per update here. */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sys_args);
} kt_sys_args SEC(".maps");

static __always_inline struct sys_args *args_slot(bool create)
{
	return bpf_task_storage_get(&kt_sys_args, bpf_get_current_task_btf(), 0,
				    create ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

static __always_inline __u32 current_euid(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, cred, euid.val);
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kt_sys_event);
} kt_sys_scratch SEC(".maps");

static __always_inline struct kt_sys_event *sys_scratch(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&kt_sys_scratch, &zero);
}

/* Keeps the first `n` arguments for the exit. `n` is a constant per
 * program: each sys_enter_X tracepoint has as many as X takes. */
static __always_inline int sys_save(const unsigned long *args, const int n)
{
	struct sys_args *a = args_slot(true);

	if (!a)
		return 0;
	if (n > 0)
		a->args[0] = args[0];
	if (n > 1)
		a->args[1] = args[1];
	if (n > 2)
		a->args[2] = args[2];
	if (n > 3)
		a->args[3] = args[3];
	if (n > 4)
		a->args[4] = args[4];
	if (n > 5)
		a->args[5] = args[5];
	a->euid = current_euid();
	a->_pad = 0;
	a->valid = 1;
	return 0;
}

/* The arguments of a syscall from its sys_enter_X tracepoint. Copied out
 * one by one: the verifier refuses loads through a ctx pointer moved to
 * ctx->args, and any read past the tracepoint's own fields. */
static __always_inline void tp_args(struct trace_event_raw_sys_enter *ctx, unsigned long *args,
				    const int n)
{
	if (n > 0)
		args[0] = ctx->args[0];
	if (n > 1)
		args[1] = ctx->args[1];
	if (n > 2)
		args[2] = ctx->args[2];
	if (n > 3)
		args[3] = ctx->args[3];
	if (n > 4)
		args[4] = ctx->args[4];
	if (n > 5)
		args[5] = ctx->args[5];
}

/* libbpf 1.1 has no PT_REGS_PARM6_CORE_SYSCALL. */
#if defined(__TARGET_ARCH_x86)
#define KT_SYSCALL_PARM6(regs) BPF_CORE_READ(regs, r9)
#elif defined(__TARGET_ARCH_arm64)
#define KT_SYSCALL_PARM6(regs) BPF_CORE_READ(regs, regs[5])
#endif

/* The arguments of a syscall from the user registers its entry function
 * gets (fentry/fexit hooks). */
static __always_inline void regs_args(struct pt_regs *regs, unsigned long *args, const int n)
{
	if (n > 0)
		args[0] = PT_REGS_PARM1_CORE_SYSCALL(regs);
	if (n > 1)
		args[1] = PT_REGS_PARM2_CORE_SYSCALL(regs);
	if (n > 2)
		args[2] = PT_REGS_PARM3_CORE_SYSCALL(regs);
	if (n > 3)
		args[3] = PT_REGS_PARM4_CORE_SYSCALL(regs);
	if (n > 4)
		args[4] = PT_REGS_PARM5_CORE_SYSCALL(regs);
	if (n > 5)
		args[5] = KT_SYSCALL_PARM6(regs);
}

/* Everything of a record but its header and arguments: result, syscall, and
 * empty string slots. The scratch record is reused, so nothing may be left. */
static __always_inline void sys_reset(struct kt_sys_event *e, __u16 syscall, long ret)
{
	int i;

	e->retval = ret;
	e->syscall = syscall;
	for (i = 0; i < KT_SYS_STRS; i++) {
		e->str_len[i] = 0;
		e->str_kind[i] = KT_STR_NONE;
	}
	e->_pad = 0;
	e->flags = 0;
	e->_pad2 = 0;
}

/* Emitted when a traced syscall returns with euid 0 to a caller that entered
 * it with another euid (Elkeid's update_cred check, on tracepoints): the
 * shape of a kernel privilege-escalation exploit, or of a setuid-root program
 * taking back its privileges. args: euid at entry, uid, euid, suid now. */
static __always_inline void check_escalation(__u32 euid_before, __u16 syscall, long ret)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 size = offsetof(struct kt_sys_event, data);
	struct kt_sys_event *e;
	__u64 seq;

	if (euid_before == 0 || BPF_CORE_READ(task, cred, euid.val) != 0)
		return;
	if (!(kt_enabled_mask & (1ULL << KT_EVENT_PRIVILEGE_ESCALATION)))
		return;
	seq = next_seq();
	e = bpf_ringbuf_reserve(&kt_events, offsetof(struct kt_sys_event, data), 0);
	if (!e) {
		count_drop(KT_EVENT_PRIVILEGE_ESCALATION);
		return;
	}
	fill_header(&e->hdr, KT_EVENT_PRIVILEGE_ESCALATION, size, seq, task);
	e->args[0] = euid_before;
	e->args[1] = BPF_CORE_READ(task, cred, uid.val);
	e->args[2] = BPF_CORE_READ(task, cred, euid.val);
	e->args[3] = BPF_CORE_READ(task, cred, suid.val);
	e->args[4] = e->args[5] = 0;
	sys_reset(e, syscall, ret);
	bpf_ringbuf_submit(e, submit_flags());
}

/* The record for this thread's syscall exit, or NULL when its entry was not
 * seen (the sensor attached mid-call). */
static __always_inline struct kt_sys_event *sys_begin(long ret, __u16 syscall)
{
	struct sys_args *a = args_slot(false);
	struct kt_sys_event *e;
	__u32 euid;
	int i;

	if (!a || !a->valid)
		return NULL;
	a->valid = 0;
	euid = a->euid;
	e = sys_scratch();
	if (e) {
		for (i = 0; i < 6; i++)
			e->args[i] = a->args[i];
		sys_reset(e, syscall, ret);
	}
	check_escalation(euid, syscall, ret);
	return e;
}

static __always_inline void sys_submit(struct kt_sys_event *e, __u16 type, __u64 used)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 seq, size;

	if (type >= 64 || !(kt_enabled_mask & (1ULL << type)))
		return;
	if (kt_self_tgid && (bpf_get_current_pid_tgid() >> 32) == kt_self_tgid)
		return;
	if (ignored_task())
		return;
	seq = next_seq();
	if (used > KT_DATA_SIZE)
		used = KT_DATA_SIZE;
	size = offsetof(struct kt_sys_event, data) + used;
	fill_header(&e->hdr, type, size, seq, task);
	if (bpf_ringbuf_output(&kt_events, e, size, submit_flags()))
		count_drop(type);
}

static __always_inline void slot_set(struct kt_sys_event *e, int slot, __u64 len, __u8 kind)
{
	if (slot < 0 || slot >= KT_SYS_STRS)
		return;
	e->str_len[slot] = len;
	e->str_kind[slot] = len ? kind : KT_STR_NONE;
}

/* A string into `slot` at data offset `off`, from the caller's memory or the
 * kernel's; returns the next offset. */
static __always_inline __u64 put_str(struct kt_sys_event *e, int slot, __u64 off,
				     const char *ptr, bool user)
{
	long n;

	if (!ptr || off > KT_DATA_SIZE - KT_STR_MAX)
		return off;
	if (user)
		n = bpf_probe_read_user_str(&e->data[off], KT_STR_MAX, ptr);
	else
		n = bpf_probe_read_kernel_str(&e->data[off], KT_STR_MAX, ptr);
	if (n <= 0)
		return off;
	if (n >= KT_STR_MAX)
		e->flags |= KT_SYS_TRUNCATED << slot;
	slot_set(e, slot, n, KT_STR_USER);
	return off + n;
}

static __always_inline __u64 put_user_str(struct kt_sys_event *e, int slot, __u64 off,
					  const char *ptr)
{
	return put_str(e, slot, off, ptr, true);
}

/* Raw bytes (a sockaddr, a payload) into `slot`; callers clamp `len` to
 * what the type needs. */
static __always_inline __u64 put_user_bytes(struct kt_sys_event *e, int slot, __u64 off,
					    const void *ptr, __u64 len)
{
	if (!ptr || off > KT_DATA_SIZE - KT_STR_MAX)
		return off;
	if (len > KT_STR_MAX - 1)
		len = KT_STR_MAX - 1;
	len &= KT_STR_MAX - 1; /* a bound the verifier keeps, whatever clang emits */
	if (len == 0 || bpf_probe_read_user(&e->data[off], len, ptr))
		return off;
	slot_set(e, slot, len, KT_STR_BYTES);
	return off + len;
}

struct path_walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	__u64 start;     /* slot start in data[] */
	__u64 pos;       /* next write position */
	__u32 rooted;
	__u32 cut;
};

/* Walk state lives in a map value, not on the stack: the verifier sees map
 * contents as unknown, so every bpf_loop iteration looks the same to it and
 * the callback is verified once instead of once per reachable position. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct path_walk);
} kt_walk SEC(".maps");

static __always_inline struct mount *real_mount(struct vfsmount *m)
{
	return (struct mount *)((void *)m - bpf_core_field_offset(struct mount, mnt));
}

/* One step up the tree: cross to the parent mount at a mount root, else
 * record this component and go to the parent dentry. */
static long path_step(__u32 i, void *ctx)
{
	__u32 zero = 0;
	struct path_walk *w = bpf_map_lookup_elem(&kt_walk, &zero);
	struct kt_sys_event *e = sys_scratch();
	struct dentry *d, *parent;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	const unsigned char *name;
	__u64 pos, start;
	long n;

	if (!e || !w)
		return 1;
	/* Locals, not w->...: CO-RE must relocate kernel types only. */
	d = w->dentry;
	vfsmnt = w->vfsmnt;
	mnt = w->mnt;
	if (d == BPF_CORE_READ(vfsmnt, mnt_root)) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt) {
			w->rooted = 1;
			return 1;
		}
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		w->vfsmnt = (struct vfsmount *)((void *)up + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	parent = BPF_CORE_READ(d, d_parent);
	if (parent == d) {
		/* The root of a filesystem that is not mounted here (a detached
		 * mount, an internal one such as pipefs): as far as it goes. */
		w->rooted = 1;
		return 1;
	}
	pos = w->pos;
	start = w->start;
	if (pos < start || pos - start > KT_STR_MAX - KT_NAME_MAX ||
	    pos > KT_DATA_SIZE - KT_NAME_MAX) {
		w->cut = 1;
		return 1;
	}
	name = BPF_CORE_READ(d, d_name.name);
	n = bpf_probe_read_kernel_str(&e->data[pos], KT_NAME_MAX, name);
	if (n <= 0) {
		w->cut = 1;
		return 1;
	}
	w->pos = pos + n;
	w->dentry = parent;
	return 0;
}

/* An absolute kernel path into `slot`, as NUL-terminated components, leaf
 * first (the reader reverses them). The root itself is an empty slot with
 * the ROOTED flag. */
static __always_inline __u64 put_dpath(struct kt_sys_event *e, int slot, __u64 off,
				       struct dentry *dentry, struct vfsmount *vfsmnt)
{
	__u32 zero = 0;
	struct path_walk *w = bpf_map_lookup_elem(&kt_walk, &zero);
	__u64 end;

	if (!w || !dentry || !vfsmnt || off > KT_DATA_SIZE - KT_STR_MAX)
		return off;
	w->dentry = dentry;
	w->vfsmnt = vfsmnt;
	w->mnt = real_mount(vfsmnt);
	w->start = off;
	w->pos = off;
	w->rooted = 0;
	w->cut = 0;
	bpf_loop(KT_PATH_DEPTH, path_step, NULL, 0);
	end = w->pos;
	if (end < off || end > off + KT_STR_MAX)
		end = off;
	if (!w->rooted)
		e->flags |= KT_SYS_TRUNCATED << slot;
	else
		e->flags |= KT_SYS_PATH_ROOTED << slot;
	if (slot >= 0 && slot < KT_SYS_STRS) {
		e->str_len[slot] = end - off;
		e->str_kind[slot] = KT_STR_DPATH; /* even when empty: that is "/" */
	}
	return end;
}

static __always_inline struct file *fd_file(long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *f = NULL;

	if (fd < 0 || !fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline __u64 put_file_path(struct kt_sys_event *e, int slot, __u64 off,
					   struct file *f)
{
	if (!f)
		return off;
	return put_dpath(e, slot, off, BPF_CORE_READ(f, f_path.dentry),
			 BPF_CORE_READ(f, f_path.mnt));
}

static __always_inline __u64 put_fd_path(struct kt_sys_event *e, int slot, __u64 off, long fd)
{
	return put_file_path(e, slot, off, fd_file(fd));
}

static __always_inline __u64 put_cwd(struct kt_sys_event *e, int slot, __u64 off)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return put_dpath(e, slot, off, BPF_CORE_READ(task, fs, pwd.dentry),
			 BPF_CORE_READ(task, fs, pwd.mnt));
}

/* The directory a relative `path` is resolved against (dirfd or the cwd),
 * into `slot`; nothing for an absolute path. */
static __always_inline __u64 put_base(struct kt_sys_event *e, int slot, __u64 off, long dirfd,
				      const char *path)
{
	char c = 0;

	if (path && bpf_probe_read_user(&c, 1, path) == 0 && c == '/')
		return off;
	if ((int)dirfd == KT_AT_FDCWD)
		return put_cwd(e, slot, off);
	return put_fd_path(e, slot, off, dirfd);
}

/* A path argument as given (slot) and its base directory (slot + 1). */
static __always_inline __u64 put_path_at(struct kt_sys_event *e, int slot, __u64 off, long dirfd,
					 const char *path)
{
	off = put_user_str(e, slot, off, path);
	return put_base(e, slot + 1, off, dirfd, path);
}

/*
 * Every traced syscall gets two pairs of programs; the loader attaches one:
 *   kt_enter_X/kt_exit_X    the syscalls:sys_{enter,exit}_X tracepoints;
 *   kt_fentry_X/kt_fexit_X  fentry/fexit on the syscall's entry function.
 * Enabling any syscall tracepoint puts every syscall of every task on the
 * kernel's slow entry path (tens of ns each, watched or not); a BPF
 * trampoline costs only the function it is attached to. So fentry is used
 * where the kernel allows it, and the tracepoints are the fallback.
 */
/* Defines the entry programs of syscall `name` (taking `nargs` arguments);
 * the body that follows gets `args` and returns sys_save(args, n) to keep
 * them, or 0 to let the call go untraced (filters decided at entry). */
#define SYS_ENTER_FN(name, nargs)                                                        \
	static __always_inline int enter_##name(const unsigned long *args);                      \
	SEC("tracepoint/syscalls/sys_enter_" #name)                                      \
	int kt_enter_##name(struct trace_event_raw_sys_enter *ctx)                       \
	{                                                                                \
		unsigned long args[6] = {};                                              \
		tp_args(ctx, args, nargs);                                               \
		return enter_##name(args);                                               \
	}                                                                                \
	SEC("fentry/" KT_SYS_FN #name)                                                   \
	int BPF_PROG(kt_fentry_##name, struct pt_regs *regs)                             \
	{                                                                                \
		unsigned long args[6] = {};                                              \
		regs_args(regs, args, nargs);                                            \
		return enter_##name(args);                                               \
	}                                                                                \
	static __always_inline int enter_##name(const unsigned long *args)

/* Entry programs that keep the arguments unconditionally. */
#define SYS_ENTER(name, nargs)                                                           \
	SYS_ENTER_FN(name, nargs)                                                        \
	{                                                                                \
		return sys_save(args, nargs);                                            \
	}

/* Defines the exit programs of syscall `name`; the body that follows gets
 * `e` (arguments as passed, in e->args, and e->syscall set) and `ret`, and
 * returns after submitting or not. */
#define SYS_EXIT(name)                                                                   \
	static __always_inline int exit_##name(struct kt_sys_event *e, long ret);       \
	static __always_inline int exit_begin_##name(long ret)                           \
	{                                                                                \
		struct kt_sys_event *e = sys_begin(ret, KT_SC_##name);                   \
		if (!e)                                                                  \
			return 0;                                                        \
		return exit_##name(e, ret);                                              \
	}                                                                                \
	SEC("tracepoint/syscalls/sys_exit_" #name)                                       \
	int kt_exit_##name(struct trace_event_raw_sys_exit *ctx)                         \
	{                                                                                \
		return exit_begin_##name(ctx->ret);                                      \
	}                                                                                \
	SEC("fexit/" KT_SYS_FN #name)                                                    \
	int BPF_PROG(kt_fexit_##name, struct pt_regs *regs, long ret)                    \
	{                                                                                \
		return exit_begin_##name(ret);                                           \
	}                                                                                \
	static __always_inline int exit_##name(struct kt_sys_event *e, long ret)

/* Both programs of a syscall taking `nargs` arguments; its exit body follows. */
#define SYSCALL(name, nargs) SYS_ENTER(name, nargs) SYS_EXIT(name)

#define ARG(i, type) ((type)e->args[i])

#endif /* KT_SYSCALL_BPF_H */
