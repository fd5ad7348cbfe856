// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * net.bpf.c: network events. Part of the ktrail.bpf.c unit.
 *
 * Canonical arguments and string slots per event type (decoded by
 * src/ktrail/decode/syscalls.py):
 *   connect  args fd             slots sockaddr asked, socket tuple
 *   accept   args fd, flags      slots -, tuple of the accepted socket (the peer)
 *   bind     args fd             slots sockaddr asked, socket tuple
 *   listen   args fd, backlog    slots -, socket tuple
 *   dns      args fd, message    slots destination sockaddr, socket tuple, payload
 * The tuple is read from the kernel's socket after the call, so it has the
 * port the kernel chose and the peer it connected to.
 */
#include "syscall.bpf.h"

#define KT_AF_INET 2
#define KT_AF_INET6 10
#define KT_S_IFMT 00170000
#define KT_S_IFSOCK 0140000
#define KT_DNS_PORT 53
#define KT_DNS_CAPTURE 512
#define KT_SOCKADDR_MAX 128

static __always_inline struct sock *fd_sock(long fd)
{
	struct file *f = fd_file(fd);
	struct socket *sock;

	if (!f || (BPF_CORE_READ(f, f_inode, i_mode) & KT_S_IFMT) != KT_S_IFSOCK)
		return NULL;
	sock = BPF_CORE_READ(f, private_data);
	return sock ? BPF_CORE_READ(sock, sk) : NULL;
}

/* The socket behind `fd` as a kt_sock_tuple in `slot`. */
static __always_inline __u64 put_sock(struct kt_sys_event *e, int slot, __u64 off, long fd)
{
	struct sock *sk = fd_sock(fd);
	struct kt_sock_tuple *t;

	if (!sk || off > KT_DATA_SIZE - sizeof(*t))
		return off;
	t = (struct kt_sock_tuple *)&e->data[off];
	__builtin_memset(t, 0, sizeof(*t));
	t->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	t->type = BPF_CORE_READ(sk, sk_type);
	t->protocol = BPF_CORE_READ(sk, sk_protocol);
	t->sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	t->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	/* Read into typed locals: a byte-array destination would make the
	 * CO-RE read macros copy sizeof(u8). */
	if (t->family == KT_AF_INET) {
		__u32 s4 = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 d4 = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		__builtin_memcpy(t->saddr, &s4, 4);
		__builtin_memcpy(t->daddr, &d4, 4);
	} else if (t->family == KT_AF_INET6) {
		struct in6_addr s6 = BPF_CORE_READ(sk, __sk_common.skc_v6_rcv_saddr);
		struct in6_addr d6 = BPF_CORE_READ(sk, __sk_common.skc_v6_daddr);

		__builtin_memcpy(t->saddr, &s6, 16);
		__builtin_memcpy(t->daddr, &d6, 16);
	}
	slot_set(e, slot, sizeof(*t), KT_STR_BYTES);
	return off + sizeof(*t);
}

static __always_inline __u64 put_sockaddr(struct kt_sys_event *e, int slot, __u64 off,
					  const void *addr, __u64 len)
{
	if (len > KT_SOCKADDR_MAX)
		len = KT_SOCKADDR_MAX;
	return put_user_bytes(e, slot, off, addr, len);
}

/* --- connect, bind, listen, accept --- */

SYSCALL(connect, 3)
{
	const void *addr = ARG(1, const void *);
	__u64 len = e->args[2], off;

	e->args[1] = e->args[2] = 0;
	off = put_sockaddr(e, 0, 0, addr, len);
	off = put_sock(e, 1, off, e->args[0]);
	sys_submit(e, KT_EVENT_CONNECT, off);
	return 0;
}

SYSCALL(bind, 3)
{
	const void *addr = ARG(1, const void *);
	__u64 len = e->args[2], off;

	e->args[1] = e->args[2] = 0;
	off = put_sockaddr(e, 0, 0, addr, len);
	off = put_sock(e, 1, off, e->args[0]);
	sys_submit(e, KT_EVENT_BIND, off);
	return 0;
}

SYSCALL(listen, 2)
{
	sys_submit(e, KT_EVENT_LISTEN, put_sock(e, 1, 0, e->args[0]));
	return 0;
}

/* The peer comes from the accepted socket, so it is known even when the
 * caller passed no address buffer (most servers do). */
static __always_inline int on_accept(struct kt_sys_event *e, long ret, __u64 flags)
{
	e->args[1] = flags;
	e->args[2] = 0;
	sys_submit(e, KT_EVENT_ACCEPT, put_sock(e, 1, 0, ret >= 0 ? ret : (long)e->args[0]));
	return 0;
}

SYSCALL(accept, 3)
{
	return on_accept(e, ret, 0);
}

SYSCALL(accept4, 4)
{
	return on_accept(e, ret, e->args[3]);
}

/* --- DNS: queries sent to port 53 --- */

/* Port of a user sockaddr (IPv4 or IPv6), or 0. */
static __always_inline __u16 sockaddr_port(const void *addr)
{
	struct { __u16 family; __u16 port; } sa = {};

	if (!addr || bpf_probe_read_user(&sa, sizeof(sa), addr))
		return 0;
	if (sa.family != KT_AF_INET && sa.family != KT_AF_INET6)
		return 0;
	return bpf_ntohs(sa.port);
}

static __always_inline __u16 sock_dport(long fd)
{
	struct sock *sk = fd_sock(fd);

	return sk ? bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)) : 0;
}

/* A send is a DNS query when it goes to port 53, named in the call or the
 * socket's connected peer. Decided at entry, so other sends (the vast
 * majority) keep no state and cost one check. */
static __always_inline bool dns_send(long fd, const void *addr)
{
	return (addr ? sockaddr_port(addr) : sock_dport(fd)) == KT_DNS_PORT;
}

static __always_inline void dns_submit(struct kt_sys_event *e, long fd, const void *addr,
				       __u64 addrlen, const void *buf, __u64 len)
{
	__u64 off;

	off = put_sockaddr(e, 0, 0, addr, addrlen);
	off = put_sock(e, 1, off, fd);
	if (len > KT_DNS_CAPTURE)
		len = KT_DNS_CAPTURE;
	off = put_user_bytes(e, 2, off, buf, len);
	sys_submit(e, KT_EVENT_DNS, off);
}

SYS_ENTER_FN(sendto, 6)
{
	if (!dns_send(args[0], (const void *)args[4]))
		return 0;
	return sys_save(args, 6);
}

SYS_EXIT(sendto)
{
	long fd = e->args[0];
	void *buf = ARG(1, void *);

	e->args[1] = 0; /* message index, after its argument was read */
	dns_submit(e, fd, ARG(4, void *), e->args[5], ret >= 0 ? buf : NULL, e->args[2]);
	return 0;
}

static __always_inline bool msghdr_dns(long fd, struct user_msghdr *m)
{
	return dns_send(fd, m->msg_name);
}

/* One message of a sendmsg/sendmmsg: its destination and first iovec. */
static __always_inline void dns_msg(struct kt_sys_event *e, long fd, struct user_msghdr *m,
				    __u32 index, bool sent)
{
	struct iovec iov = {};

	e->args[1] = index;
	if (sent && m->msg_iovlen > 0)
		bpf_probe_read_user(&iov, sizeof(iov), m->msg_iov);
	dns_submit(e, fd, m->msg_name, m->msg_namelen, iov.iov_base, iov.iov_len);
}

SYS_ENTER_FN(sendmsg, 3)
{
	struct user_msghdr m = {};

	if (bpf_probe_read_user(&m, sizeof(m), (void *)args[1]) ||
	    !msghdr_dns(args[0], &m))
		return 0;
	return sys_save(args, 3);
}

SYS_EXIT(sendmsg)
{
	struct user_msghdr m = {};

	if (!bpf_probe_read_user(&m, sizeof(m), ARG(1, void *)))
		dns_msg(e, e->args[0], &m, 0, ret >= 0);
	return 0;
}

/* glibc sends the A and AAAA queries of one lookup with a single sendmmsg. */
#define KT_MMSG_MAX 2

struct kt_mmsghdr {
	struct user_msghdr msg_hdr;
	unsigned int msg_len;
};

SYS_ENTER_FN(sendmmsg, 4)
{
	struct user_msghdr m = {};

	if (bpf_probe_read_user(&m, sizeof(m), (void *)args[1]) ||
	    !msghdr_dns(args[0], &m))
		return 0;
	return sys_save(args, 4);
}

SYS_EXIT(sendmmsg)
{
	struct kt_mmsghdr *vec = ARG(1, struct kt_mmsghdr *);
	__u64 vlen = e->args[2];
	struct user_msghdr m;
	long fd = e->args[0];
	__u32 i;

	/* ret: messages sent, or -errno (then the first one is reported). */
	for (i = 0; i < KT_MMSG_MAX; i++) {
		if (i >= vlen || (ret >= 0 && i >= ret) || (ret < 0 && i > 0))
			break;
		__builtin_memset(&m, 0, sizeof(m));
		if (bpf_probe_read_user(&m, sizeof(m), &vec[i].msg_hdr))
			break;
		/* Each record is rebuilt from the saved arguments. */
		e->args[0] = fd;
		e->args[2] = vlen;
		dns_msg(e, fd, &m, i, ret >= 0);
	}
	return 0;
}
