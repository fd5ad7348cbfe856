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
 * Canonical arguments and string slots (decoded by src/ktrail/decode/):
 *   io_uring  opcode, fd, user_data, request flags (opens: mode), open flags, dirfd
 *             slots path (open: as given; else the fd's path), base, sockaddr, socket tuple
 */
#include "syscall.bpf.h"

#define KT_IORING_OP_CONNECT 16
#define KT_IORING_OP_OPENAT 18
#define KT_IORING_OP_OPENAT2 28
#define KT_IORING_SETUP_SQPOLL 2

/* Opcodes reported, one bit each (set by the loader). */
const volatile __u64 kt_uring_ops = 0;

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
		const char *name = BPF_CORE_READ(o, filename, name);
		long dfd = BPF_CORE_READ(o, dfd);
		char c = 0;

		e->args[3] = BPF_CORE_READ(o, how.mode);
		e->args[4] = BPF_CORE_READ(o, how.flags);
		e->args[5] = dfd;
		off = put_str(e, 0, off, name, false);
		bpf_probe_read_kernel(&c, 1, name);
		if (c != '/')
			off = (int)dfd == KT_AT_FDCWD ? put_cwd(e, 1, off) : put_fd_path(e, 1, off, dfd);
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
