// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * file.bpf.c: file events. Part of the ktrail.bpf.c unit.
 *
 * Canonical arguments and string slots per event type (decoded by
 * src/ktrail/decode/syscalls.py):
 *   open, create  args dirfd, flags, mode          slots path, base
 *                 /proc/PID/mem (KT_SYS_PROC_MEM): args[3] its process's
 *                 tgid, args[4] that process's start_boottime
 *   open (open_by_handle_at)  args mount fd, flags, 0, handle type, handle
 *                 bytes declared        slots path, -, handle bytes, mount fd's path
 *   unlink, rmdir args dirfd, flags                slots path, base
 *   rename, link  args olddirfd, newdirfd, flags   slots old, old base, new, new base
 *   symlink       args newdirfd                    slots target, -, link, link base
 *   chmod         args dirfd, mode, flags          slots path, base
 *   chown         args dirfd, uid, gid, flags      slots path, base
 *   utimes        args dirfd, atime s, ns, mtime s, ns, flags   slots path, base
 *   truncate      args dirfd, length               slots path, base
 * A "path" slot is the kernel's absolute path when the call gives a file
 * descriptor (or returned one); otherwise the string as passed, with its
 * base directory (dirfd or cwd, absent for an absolute path) in the next slot.
 */
#include "syscall.bpf.h"

#define KT_O_ACCMODE 03
#define KT_O_CREAT 0100
#define KT_O_TRUNC 01000
#define KT_FMODE_CREATED 0x100000
#define KT_AT_REMOVEDIR 0x200
#define KT_UTIME_NOW ((1l << 30) - 1l)

/* Inodes whose read-only opens are reported too (sensitive files and the
 * directories they live in), keyed by device and inode so relative paths,
 * symlinks and hard links cannot get around them. Filled by the loader. */
struct kt_watch_key {
	__u32 dev;
	__u32 _pad;
	__u64 ino;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct kt_watch_key);
	/* 1: this file is watched; 2: a watched directory (anything in it);
	 * 4: an ignored directory (opens in it are never reported) */
	__type(value, __u32);
} kt_watch SEC(".maps");

const volatile bool kt_ignore_paths = false;

const volatile bool kt_watch_enabled = false;
/* Report every open for writing (the `full` profile), not only watched paths. */
const volatile bool kt_open_writes = false;

static __always_inline bool watch_hit(struct dentry *d, __u32 dev, __u32 want)
{
	struct kt_watch_key k = { .dev = dev };
	__u32 *v;

	k.ino = BPF_CORE_READ(d, d_inode, i_ino);
	v = bpf_map_lookup_elem(&kt_watch, &k);
	return v && (*v & want);
}

/* The file itself, or its directory. Userspace lists every directory below a
 * watched one (bounded), so two lookups cover any depth: an open that is not
 * watched, the common case, costs exactly two. */
static __always_inline bool watched(struct file *f)
{
	struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
	__u32 dev = BPF_CORE_READ(f, f_inode, i_sb, s_dev);

	return watch_hit(d, dev, 1 | 2) || watch_hit(BPF_CORE_READ(d, d_parent), dev, 2);
}

#define KT_PROC_SUPER_MAGIC 0x9fa0
#define KT_MAX_HANDLE_SZ 128

/* /proc/PID/mem or /proc/PID/task/TID/mem: a file named "mem" on procfs
 * whose inode names a process. The process is the one procfs keeps in the
 * inode, so /proc/self/mem, a relative path or a dirfd on /proc/PID all come
 * to the same. Its tgid (0 when it has exited) and start time go to *tgid,
 * *start. Costs one superblock read for an open elsewhere. */
static __always_inline bool proc_mem(struct file *f, __u32 *tgid, __u64 *start)
{
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	struct dentry *d;
	struct proc_inode *pi;
	struct hlist_node *first;
	struct task_struct *t;
	struct pid *pid;
	char name[4] = {};

	if (BPF_CORE_READ(inode, i_sb, s_magic) != KT_PROC_SUPER_MAGIC)
		return false;
	d = BPF_CORE_READ(f, f_path.dentry);
	if (BPF_CORE_READ(d, d_name.len) != 3)
		return false;
	bpf_probe_read_kernel(name, 3, BPF_CORE_READ(d, d_name.name));
	if (name[0] != 'm' || name[1] != 'e' || name[2] != 'm')
		return false;
	pi = (struct proc_inode *)((void *)inode - bpf_core_field_offset(struct proc_inode,
									  vfs_inode));
	pid = BPF_CORE_READ(pi, pid);
	if (!pid)
		return false; /* not a process's file */
	*tgid = 0;
	*start = 0;
	first = BPF_CORE_READ(pid, tasks[0].first); /* PIDTYPE_PID */
	if (first) {
		t = (struct task_struct *)((void *)first -
					   bpf_core_field_offset(struct task_struct, pid_links));
		*tgid = BPF_CORE_READ(t, tgid);
		*start = BPF_CORE_READ(t, group_leader, start_boottime);
	}
	return true;
}

/* Opens: a file created is `create`; an open of a watched file is `open`, and
 * so is any open for writing when kt_open_writes is set. A failed attempt to
 * create (or, with kt_open_writes, to write) is reported too. */
static __always_inline int on_open(struct kt_sys_event *e, long ret, long dirfd,
				   const char *path, __u64 flags, __u64 mode)
{
	bool write = (flags & KT_O_ACCMODE) || (flags & (KT_O_CREAT | KT_O_TRUNC));
	__u16 type = KT_EVENT_OPEN;
	struct file *f;
	__u64 off, start;
	__u32 tgid;

	e->args[0] = dirfd;
	e->args[1] = flags;
	e->args[2] = mode;
	e->args[3] = e->args[4] = e->args[5] = 0;
	if (ret < 0) {
		if (!(flags & KT_O_CREAT) && !(write && kt_open_writes))
			return 0;
		off = put_path_at(e, 0, 0, dirfd, path);
		sys_submit(e, (flags & KT_O_CREAT) ? KT_EVENT_CREATE : KT_EVENT_OPEN, off);
		return 0;
	}
	f = fd_file(ret);
	if (!f)
		return 0;
	if (kt_ignore_paths &&
	    watch_hit(BPF_CORE_READ(f, f_path.dentry, d_parent), BPF_CORE_READ(f, f_inode, i_sb,
	    s_dev), 4))
		return 0;
	if (BPF_CORE_READ(f, f_mode) & KT_FMODE_CREATED) {
		e->flags |= KT_SYS_CREATED;
		type = KT_EVENT_CREATE;
	} else if (kt_watch_enabled && watched(f)) {
		e->flags |= KT_SYS_WATCHED;
	} else if (proc_mem(f, &tgid, &start) &&
		   (write || tgid != bpf_get_current_pid_tgid() >> 32)) {
		/* Another process's memory, or any write to one: injection, or
		 * credential dumping. Reading one's own is not reported. */
		e->flags |= KT_SYS_PROC_MEM;
		e->args[3] = tgid;
		e->args[4] = start;
	} else if (!(write && kt_open_writes)) {
		return 0;
	}
	off = put_file_path(e, 0, 0, f);
	sys_submit(e, type, off);
	return 0;
}

SYSCALL(openat, 4)
{
	return on_open(e, ret, e->args[0], ARG(1, const char *), e->args[2], e->args[3]);
}

SYSCALL(open, 3)
{
	return on_open(e, ret, KT_AT_FDCWD, ARG(0, const char *), e->args[1], e->args[2]);
}

SYSCALL(creat, 2)
{
	return on_open(e, ret, KT_AT_FDCWD, ARG(0, const char *),
		       KT_O_CREAT | KT_O_TRUNC | 01 /* O_WRONLY */, e->args[1]);
}

SYSCALL(openat2, 4)
{
	struct open_how how = {};

	bpf_probe_read_user(&how, sizeof(how), ARG(2, void *));
	return on_open(e, ret, e->args[0], ARG(1, const char *), how.flags, how.mode);
}

/* open_by_handle_at: a file opened from a handle, not a path (Shocker
 * escapes a container with it). Every call is an `open`: it is rare, and
 * needs CAP_DAC_READ_SEARCH. The kernel's path of the file opened, the
 * handle's bytes as given and the mount fd's path. */
SYSCALL(open_by_handle_at, 3)
{
	struct { __u32 bytes; __s32 type; } h = {};
	void *uh = ARG(1, void *);
	long mfd = e->args[0];
	__u64 off = 0, n;
	struct file *f;

	bpf_probe_read_user(&h, sizeof(h), uh);
	e->args[1] = e->args[2]; /* flags */
	e->args[2] = 0;
	e->args[3] = h.type;
	e->args[4] = h.bytes;
	e->args[5] = 0;
	f = ret >= 0 ? fd_file(ret) : NULL;
	if (f) {
		if (kt_watch_enabled && watched(f))
			e->flags |= KT_SYS_WATCHED;
		off = put_file_path(e, 0, 0, f);
	}
	n = h.bytes > KT_MAX_HANDLE_SZ ? KT_MAX_HANDLE_SZ : h.bytes;
	if (uh)
		off = put_user_bytes(e, 2, off, uh + 8, n);
	if ((int)mfd == KT_AT_FDCWD)
		off = put_cwd(e, 3, off);
	else
		off = put_fd_path(e, 3, off, mfd);
	sys_submit(e, KT_EVENT_OPEN, off);
	return 0;
}

/* --- unlink, rmdir --- */

static __always_inline int on_unlink(struct kt_sys_event *e, long dirfd, const char *path,
				     __u64 flags)
{
	__u64 off;

	e->args[0] = dirfd;
	e->args[1] = flags;
	off = put_path_at(e, 0, 0, dirfd, path);
	sys_submit(e, (flags & KT_AT_REMOVEDIR) ? KT_EVENT_RMDIR : KT_EVENT_UNLINK, off);
	return 0;
}

SYSCALL(unlinkat, 3)
{
	return on_unlink(e, e->args[0], ARG(1, const char *), e->args[2]);
}

SYSCALL(unlink, 1)
{
	return on_unlink(e, KT_AT_FDCWD, ARG(0, const char *), 0);
}

SYSCALL(rmdir, 1)
{
	return on_unlink(e, KT_AT_FDCWD, ARG(0, const char *), KT_AT_REMOVEDIR);
}

/* --- rename, link: two paths --- */

static __always_inline int on_two_paths(struct kt_sys_event *e, __u16 type, long olddirfd,
					const char *oldpath, long newdirfd, const char *newpath,
					__u64 flags)
{
	__u64 off;

	e->args[0] = olddirfd;
	e->args[1] = newdirfd;
	e->args[2] = flags;
	off = put_path_at(e, 0, 0, olddirfd, oldpath);
	off = put_path_at(e, 2, off, newdirfd, newpath);
	sys_submit(e, type, off);
	return 0;
}

SYSCALL(rename, 2)
{
	return on_two_paths(e, KT_EVENT_RENAME, KT_AT_FDCWD, ARG(0, const char *), KT_AT_FDCWD,
			    ARG(1, const char *), 0);
}

SYSCALL(renameat, 4)
{
	return on_two_paths(e, KT_EVENT_RENAME, e->args[0], ARG(1, const char *), e->args[2],
			    ARG(3, const char *), 0);
}

SYSCALL(renameat2, 5)
{
	return on_two_paths(e, KT_EVENT_RENAME, e->args[0], ARG(1, const char *), e->args[2],
			    ARG(3, const char *), e->args[4]);
}

SYSCALL(link, 2)
{
	return on_two_paths(e, KT_EVENT_LINK, KT_AT_FDCWD, ARG(0, const char *), KT_AT_FDCWD,
			    ARG(1, const char *), 0);
}

SYSCALL(linkat, 5)
{
	return on_two_paths(e, KT_EVENT_LINK, e->args[0], ARG(1, const char *), e->args[2],
			    ARG(3, const char *), e->args[4]);
}

/* --- symlink: the target is stored as given, never resolved --- */

static __always_inline int on_symlink(struct kt_sys_event *e, const char *target, long newdirfd,
				      const char *linkpath)
{
	__u64 off;

	e->args[0] = newdirfd;
	off = put_user_str(e, 0, 0, target);
	off = put_path_at(e, 2, off, newdirfd, linkpath);
	sys_submit(e, KT_EVENT_SYMLINK, off);
	return 0;
}

SYSCALL(symlink, 2)
{
	return on_symlink(e, ARG(0, const char *), KT_AT_FDCWD, ARG(1, const char *));
}

SYSCALL(symlinkat, 3)
{
	return on_symlink(e, ARG(0, const char *), e->args[1], ARG(2, const char *));
}

/* --- attribute changes on a path or an fd --- */

/* Path slot 0 (+ base in 1) for a path call, or the fd's kernel path. */
static __always_inline __u64 put_target(struct kt_sys_event *e, long dirfd, const char *path)
{
	if (!path)
		return put_fd_path(e, 0, 0, dirfd);
	return put_path_at(e, 0, 0, dirfd, path);
}

static __always_inline int on_attr(struct kt_sys_event *e, __u16 type, long dirfd,
				   const char *path, __u64 a1, __u64 a2, __u64 a3)
{
	__u64 off;

	e->args[0] = dirfd;
	e->args[1] = a1;
	e->args[2] = a2;
	e->args[3] = a3;
	e->args[4] = e->args[5] = 0;
	off = put_target(e, dirfd, path);
	sys_submit(e, type, off);
	return 0;
}

SYSCALL(chmod, 2)
{
	return on_attr(e, KT_EVENT_CHMOD, KT_AT_FDCWD, ARG(0, const char *), e->args[1], 0, 0);
}

SYSCALL(fchmod, 2)
{
	return on_attr(e, KT_EVENT_CHMOD, e->args[0], NULL, e->args[1], 0, 0);
}

SYSCALL(fchmodat, 3)
{
	return on_attr(e, KT_EVENT_CHMOD, e->args[0], ARG(1, const char *), e->args[2], 0, 0);
}

SYSCALL(fchmodat2, 4)
{
	return on_attr(e, KT_EVENT_CHMOD, e->args[0], ARG(1, const char *), e->args[2],
		       e->args[3], 0);
}

SYSCALL(chown, 3)
{
	return on_attr(e, KT_EVENT_CHOWN, KT_AT_FDCWD, ARG(0, const char *), e->args[1],
		       e->args[2], 0);
}

SYSCALL(lchown, 3)
{
	return on_attr(e, KT_EVENT_CHOWN, KT_AT_FDCWD, ARG(0, const char *), e->args[1],
		       e->args[2], 0x100 /* AT_SYMLINK_NOFOLLOW */);
}

SYSCALL(fchown, 3)
{
	return on_attr(e, KT_EVENT_CHOWN, e->args[0], NULL, e->args[1], e->args[2], 0);
}

SYSCALL(fchownat, 5)
{
	return on_attr(e, KT_EVENT_CHOWN, e->args[0], ARG(1, const char *), e->args[2],
		       e->args[3], e->args[4]);
}

SYSCALL(truncate, 2)
{
	return on_attr(e, KT_EVENT_TRUNCATE, KT_AT_FDCWD, ARG(0, const char *), e->args[1], 0, 0);
}

SYSCALL(ftruncate, 2)
{
	return on_attr(e, KT_EVENT_TRUNCATE, e->args[0], NULL, e->args[1], 0, 0);
}

/* --- utimes: the new timestamps, normalised to seconds + nanoseconds --- */

static __always_inline int on_utimes(struct kt_sys_event *e, long dirfd, const char *path,
				     __s64 as, __s64 ans, __s64 ms, __s64 mns, __u64 flags)
{
	__u64 off;

	e->args[0] = dirfd;
	e->args[1] = as;
	e->args[2] = ans;
	e->args[3] = ms;
	e->args[4] = mns;
	e->args[5] = flags;
	off = put_target(e, dirfd, path);
	sys_submit(e, KT_EVENT_UTIMES, off);
	return 0;
}

SYSCALL(utimensat, 4)
{
	struct { __s64 sec, nsec; } ts[2] = {};
	void *times = ARG(2, void *);

	if (!times || bpf_probe_read_user(ts, sizeof(ts), times)) {
		ts[0].nsec = ts[1].nsec = KT_UTIME_NOW;
		ts[0].sec = ts[1].sec = 0;
	}
	return on_utimes(e, e->args[0], ARG(1, const char *), ts[0].sec, ts[0].nsec, ts[1].sec,
			 ts[1].nsec, e->args[3]);
}

/* utimes/futimesat take struct timeval[2]; utime takes struct utimbuf. */
static __always_inline int on_timeval(struct kt_sys_event *e, long dirfd, const char *path,
				      void *tv)
{
	struct { __s64 sec, usec; } t[2] = {};

	if (!tv || bpf_probe_read_user(t, sizeof(t), tv))
		return on_utimes(e, dirfd, path, 0, KT_UTIME_NOW, 0, KT_UTIME_NOW, 0);
	return on_utimes(e, dirfd, path, t[0].sec, t[0].usec * 1000, t[1].sec, t[1].usec * 1000,
			 0);
}

SYSCALL(utimes, 2)
{
	return on_timeval(e, KT_AT_FDCWD, ARG(0, const char *), ARG(1, void *));
}

SYSCALL(futimesat, 3)
{
	return on_timeval(e, e->args[0], ARG(1, const char *), ARG(2, void *));
}

SYSCALL(utime, 2)
{
	struct { __s64 actime, modtime; } b = {};
	void *buf = ARG(1, void *);

	if (!buf || bpf_probe_read_user(&b, sizeof(b), buf))
		return on_utimes(e, KT_AT_FDCWD, ARG(0, const char *), 0, KT_UTIME_NOW, 0,
				 KT_UTIME_NOW, 0);
	return on_utimes(e, KT_AT_FDCWD, ARG(0, const char *), b.actime, 0, b.modtime, 0, 0);
}
