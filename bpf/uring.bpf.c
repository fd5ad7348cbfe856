// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * uring.bpf.c: io_uring submissions. Part of the ktrail.bpf.c unit.
 *
 * File and network work submitted through io_uring makes no syscall of its
 * own, so the syscall hooks never see it. io_uring_submit_req fires for each
 * request (io_uring_submit_sqe before Linux 6.4, with the same request); the
 * request holds its opcode, the fd it targets, and (prepared already) the
 * filename of an open or the address of a connect.
 *
 * Canonical arguments and string slots (decoded by src/ktrail/events/kernel.py):
 *   io_uring  opcode, fd, user_data, request flags (opens, mkdir: mode),
 *             open / rename / link / unlink flags, dirfd
 *             slots path (open, mkdir, unlink, rename, link: as given; symlink: its
 *             target; else the fd's path), base, then sockaddr, socket tuple for
 *             sockets, or the new name (rename, link, symlink) and its base
 */
#include "syscall.bpf.h"

#define KT_IORING_OP_CONNECT 16
#define KT_IORING_OP_OPENAT 18
#define KT_IORING_OP_OPENAT2 28
#define KT_IORING_OP_RENAMEAT 35
#define KT_IORING_OP_UNLINKAT 36
#define KT_IORING_OP_MKDIRAT 37
#define KT_IORING_OP_SYMLINKAT 38
#define KT_IORING_OP_LINKAT 39
#define KT_IORING_SETUP_SQPOLL 2

/* Opcodes reported, one bit each (set by the loader). */
const volatile __u64 kt_uring_ops = 0;

/* A prepared request's filename (kernel memory, as given) in `slot`, and the
 * directory it is relative to in `slot + 1` unless it is absolute. */
static __always_inline __u64 put_kpath_at(struct kt_sys_event *e, int slot, __u64 off,
					  long dfd, struct filename *fn)
{
	const char *name = BPF_CORE_READ(fn, name);
	char c = 0;

	off = put_str(e, slot, off, name, false);
	bpf_probe_read_kernel(&c, 1, name);
	if (c == '/')
		return off;
	return (int)dfd == KT_AT_FDCWD ? put_cwd(e, slot + 1, off) : put_fd_path(e, slot + 1, off, dfd);
}

static __always_inline int uring_submit(struct io_kiocb *req)
{
	__u8 op = BPF_CORE_READ(req, opcode);
	struct kt_sys_event *e;
	__u64 off = 0;
	long fd;

	if (op >= 64 || !(kt_uring_ops & (1ULL << op)))
		return 0;
	e = sys_scratch();
	if (!e)
		return 0;
	fd = BPF_CORE_READ(req, cqe.fd);
	sys_reset(e, 0, 0);
	e->args[0] = op;
	e->args[1] = fd;
	e->args[2] = BPF_CORE_READ(req, cqe.user_data);
	e->args[3] = BPF_CORE_READ(req, flags);
	e->args[4] = e->args[5] = 0;
	/* With SQPOLL the ring's own kernel thread submits: no syscall at all. */
	if (BPF_CORE_READ(req, ctx, flags) & KT_IORING_SETUP_SQPOLL)
		e->flags |= KT_SYS_SQPOLL;

	if (op == KT_IORING_OP_OPENAT || op == KT_IORING_OP_OPENAT2) {
		/* The prepared command sits at the start of the request. */
		struct io_open *o = (struct io_open *)req;
		long dfd = BPF_CORE_READ(o, dfd);

		e->args[3] = BPF_CORE_READ(o, how.mode);
		e->args[4] = BPF_CORE_READ(o, how.flags);
		e->args[5] = dfd;
		off = put_kpath_at(e, 0, off, dfd, BPF_CORE_READ(o, filename));
	} else if (op == KT_IORING_OP_RENAMEAT || op == KT_IORING_OP_LINKAT ||
		   op == KT_IORING_OP_SYMLINKAT) {
		/* io_rename and io_link share their layout. */
		struct io_link *l = (struct io_link *)req;
		long old_dfd = BPF_CORE_READ(l, old_dfd);

		e->args[4] = BPF_CORE_READ(l, flags);
		e->args[5] = old_dfd;
		if (op == KT_IORING_OP_SYMLINKAT)  /* the target is kept as given */
			off = put_str(e, 0, off, BPF_CORE_READ(l, oldpath, name), false);
		else
			off = put_kpath_at(e, 0, off, old_dfd, BPF_CORE_READ(l, oldpath));
		off = put_kpath_at(e, 2, off, BPF_CORE_READ(l, new_dfd), BPF_CORE_READ(l, newpath));
	} else if (op == KT_IORING_OP_UNLINKAT) {
		struct io_unlink *u = (struct io_unlink *)req;
		long dfd = BPF_CORE_READ(u, dfd);

		e->args[4] = BPF_CORE_READ(u, flags);
		e->args[5] = dfd;
		off = put_kpath_at(e, 0, off, dfd, BPF_CORE_READ(u, filename));
	} else if (op == KT_IORING_OP_MKDIRAT) {
		struct io_mkdir *m = (struct io_mkdir *)req;
		long dfd = BPF_CORE_READ(m, dfd);

		e->args[3] = BPF_CORE_READ(m, mode);
		e->args[5] = dfd;
		off = put_kpath_at(e, 0, off, dfd, BPF_CORE_READ(m, filename));
	} else if (op == KT_IORING_OP_CONNECT) {
		struct io_connect *c = (struct io_connect *)req;
		void *addr = BPF_CORE_READ(c, addr);
		__u64 len = BPF_CORE_READ(c, addr_len);

		if (len > 128)
			len = 128;
		off = put_user_bytes(e, 2, off, addr, len);
		off = put_sock(e, 3, off, fd);
	} else if (fd >= 0) {
		struct file *f = fd_file(fd);

		off = put_file_path(e, 0, off, f);
		off = put_sock(e, 3, off, fd);
	}
	sys_submit(e, KT_EVENT_IO_URING, off);
	return 0;
}

SEC("tp_btf/io_uring_submit_req")
int BPF_PROG(kt_uring_submit, struct io_kiocb *req)
{
	return uring_submit(req);
}

/* Linux 6.0-6.3 (Debian 12's 6.1): same request, older name. */
SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(kt_uring_submit_sqe, struct io_kiocb *req, bool force_nonblock)
{
	return uring_submit(req);
}
