/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * ktrail.h: the one kernel/userspace contract.
 *
 * Every record ktrail's BPF programs put in the ring buffer is defined here and
 * nowhere else. The Python decoder (src/ktrail/decode/schema.py) mirrors these
 * layouts; tests/integration/test_contract.py checks the mirror against the BTF
 * of the compiled object, so the two cannot drift.
 *
 * Rules for changing it: append, never reorder or resize an existing field;
 * new event types take the next enum value; keep every struct 8-byte aligned
 * with explicit padding (the decoder reads packed numpy dtypes).
 */
#ifndef KTRAIL_H
#define KTRAIL_H

#define KT_COMM_LEN 16
/* Bytes of argv captured per exec (NUL separated). Longer argv sets
 * KT_EXEC_ARGS_TRUNCATED; argc still carries the true count. */
#define KT_ARGS_MAX 4096
/* Bytes of the exec'd filename captured, NUL included. */
#define KT_PATH_MAX 4096
/* argv pointers scanned for a failed exec (the only case where argv is read
 * from the caller's pointer array rather than the new image). */
#define KT_ARGV_SCAN_MAX 1024
/* Slots in per-type counter arrays: room for every future event type so the
 * stats layout never changes when one is added. */
#define KT_TYPE_SLOTS 64
/* String slots in a syscall record, and the bytes each may use. */
#define KT_SYS_STRS 4
#define KT_STR_MAX 4096

enum kt_event_type {
	KT_EVENT_EXEC = 1,
	KT_EVENT_FORK = 2,
	KT_EVENT_EXIT = 3,
	/* Syscall events: all carried by struct kt_sys_event. */
	KT_EVENT_OPEN = 10,
	KT_EVENT_CREATE = 11,
	KT_EVENT_UNLINK = 12,
	KT_EVENT_RMDIR = 13,
	KT_EVENT_RENAME = 14,
	KT_EVENT_LINK = 15,
	KT_EVENT_SYMLINK = 16,
	KT_EVENT_CHMOD = 17,
	KT_EVENT_CHOWN = 18,
	KT_EVENT_UTIMES = 19,
	KT_EVENT_TRUNCATE = 20,
	KT_EVENT_CONNECT = 21,
	KT_EVENT_ACCEPT = 22,
	KT_EVENT_BIND = 23,
	KT_EVENT_LISTEN = 24,
	KT_EVENT_DNS = 25,
	KT_EVENT_SETSID = 26,
	KT_EVENT_PRCTL = 27,
	KT_EVENT_KILL = 28,
	KT_EVENT_PTRACE = 29,
	KT_EVENT_MEMFD_CREATE = 30,
	KT_EVENT_EXEC_MEMORY = 31,
	KT_EVENT_SETUID = 32,
	KT_EVENT_PRIVILEGE_ESCALATION = 33,
	KT_EVENT_MODULE_LOAD = 34,
	KT_EVENT_BPF = 35,
	KT_EVENT_MOUNT = 36,
	KT_EVENT_UMOUNT = 37,
	KT_EVENT_NAMESPACE = 38,
	KT_EVENT_USERMODE_HELPER = 39,
	KT_EVENT_IO_URING = 40,
	/* No BPF record: device events come from the kernel's uevent netlink
	 * broadcast. Numbered here so both sides share one list of types. */
	KT_EVENT_DEVICE = 41,
	KT_EVENT_PROCESS_VM = 42,
};

/* The syscall behind a kt_sys_event, independent of the architecture's
 * numbering. Names are the syscall names (the loader pastes them). */
enum kt_syscall {
	KT_SC_open = 1,
	KT_SC_openat = 2,
	KT_SC_openat2 = 3,
	KT_SC_creat = 4,
	KT_SC_unlink = 5,
	KT_SC_unlinkat = 6,
	KT_SC_rmdir = 7,
	KT_SC_rename = 8,
	KT_SC_renameat = 9,
	KT_SC_renameat2 = 10,
	KT_SC_link = 11,
	KT_SC_linkat = 12,
	KT_SC_symlink = 13,
	KT_SC_symlinkat = 14,
	KT_SC_chmod = 15,
	KT_SC_fchmod = 16,
	KT_SC_fchmodat = 17,
	KT_SC_fchmodat2 = 18,
	KT_SC_chown = 19,
	KT_SC_lchown = 20,
	KT_SC_fchown = 21,
	KT_SC_fchownat = 22,
	KT_SC_utime = 23,
	KT_SC_utimes = 24,
	KT_SC_utimensat = 25,
	KT_SC_futimesat = 26,
	KT_SC_truncate = 27,
	KT_SC_ftruncate = 28,
	KT_SC_connect = 29,
	KT_SC_accept = 30,
	KT_SC_accept4 = 31,
	KT_SC_bind = 32,
	KT_SC_listen = 33,
	KT_SC_sendto = 34,
	KT_SC_sendmsg = 35,
	KT_SC_sendmmsg = 36,
	KT_SC_setsid = 37,
	KT_SC_prctl = 38,
	KT_SC_kill = 39,
	KT_SC_tkill = 40,
	KT_SC_tgkill = 41,
	KT_SC_ptrace = 42,
	KT_SC_memfd_create = 43,
	KT_SC_mmap = 44,
	KT_SC_mprotect = 45,
	KT_SC_setuid = 46,
	KT_SC_setgid = 47,
	KT_SC_setreuid = 48,
	KT_SC_setregid = 49,
	KT_SC_setresuid = 50,
	KT_SC_setresgid = 51,
	KT_SC_setfsuid = 52,
	KT_SC_setfsgid = 53,
	KT_SC_capset = 54,
	KT_SC_init_module = 55,
	KT_SC_finit_module = 56,
	KT_SC_delete_module = 57,
	KT_SC_bpf = 58,
	KT_SC_mount = 59,
	KT_SC_umount = 60,  /* umount2(2); its tracepoint is sys_*_umount */
	KT_SC_unshare = 61,
	KT_SC_setns = 62,
	KT_SC_open_by_handle_at = 63,  /* an `open` event, added after setns */
	KT_SC_process_vm_readv = 64,
	KT_SC_process_vm_writev = 65,
};

/* A socket as the kernel holds it, written into a string slot (KT_STR_BYTES)
 * by network events. Ports in host order; addresses in network order
 * (IPv4 in the first 4 bytes). */
struct kt_sock_tuple {
	__u16 family;    /* AF_INET, AF_INET6, AF_UNIX... */
	__u16 type;      /* SOCK_STREAM, SOCK_DGRAM... */
	__u16 protocol;  /* IPPROTO_TCP, IPPROTO_UDP... */
	__u16 sport;
	__u16 dport;
	__u16 _pad[3];
	__u8 saddr[16];
	__u8 daddr[16];
};

/* How a string slot of kt_sys_event was filled. */
enum kt_str_kind {
	KT_STR_NONE = 0,
	KT_STR_USER = 1,   /* a string as the caller passed it (may be relative) */
	KT_STR_DPATH = 2,  /* a kernel path: NUL-terminated components, leaf first */
	KT_STR_BYTES = 3,  /* raw bytes (a sockaddr, a buffer) */
};

/* kt_sys_event.flags */
enum kt_sys_flags {
	KT_SYS_TRUNCATED = 1,   /* shifted left by slot: that slot was cut */
	KT_SYS_PATH_ROOTED = 16, /* shifted left by slot: a DPATH reached the root */
	KT_SYS_CREATED = 256,   /* open: the call created the file */
	KT_SYS_WATCHED = 512,   /* open: the file is a watched (sensitive) path */
	KT_SYS_SQPOLL = 1024,   /* io_uring: submitted by the ring's kernel thread (SQPOLL) */
	KT_SYS_PROC_MEM = 2048, /* open: /proc/PID/mem; args[3], args[4]: its process */
};

/* kt_exec_event.flags */
enum kt_exec_flags {
	KT_EXEC_ARGS_TRUNCATED = 1,
	KT_EXEC_FILENAME_TRUNCATED = 2,
	KT_EXEC_ARGS_UNREADABLE = 4,
	KT_EXEC_KERNEL_SPAWNED = 8,  /* the parent is a kernel thread: a usermode helper */
};

/* kt_fork_event.flags */
enum kt_fork_flags {
	KT_FORK_THREAD = 1,
};

/* Fields common to every record. pid/start_ns identify the process the event
 * is about (tgid and the thread-group leader's start time): together they are
 * the process identity; the pid alone never is. */
struct kt_event_header {
	__u16 type;      /* enum kt_event_type */
	__u16 flags;     /* reserved, 0 */
	__u32 size;      /* bytes in this record, header included */
	__u64 ts_ns;     /* bpf_ktime_get_boot_ns() when the event happened */
	__u64 seq;       /* per-CPU sequence number; counts every attempt, so a
	                    gap on one CPU is a record that was not delivered */
	__u64 start_ns;  /* group leader's start_boottime (ns since boot) */
	__u32 cpu;
	__u32 pid;       /* tgid */
	__u32 tid;
	__u32 ppid;      /* real_parent's tgid at the time of the event */
	__u32 uid;       /* real uid */
	__u32 gid;       /* real gid */
	char comm[KT_COMM_LEN];
};

/* exec: emitted on success from sched_process_exec (argv read from the new
 * image) and on failure from sys_exit_execve(at) (argv read from the caller). */
struct kt_exec_event {
	struct kt_event_header hdr;
	__s32 retval;        /* 0, or -errno of a failed exec */
	__u32 argc;          /* true argument count */
	__u32 args_len;      /* bytes of argv in data[], from offset 0 */
	__u32 filename_len;  /* bytes of filename in data[] after argv, NUL included */
	__u32 flags;         /* enum kt_exec_flags */
	__u32 auid;          /* login uid (audit), 4294967295 when unset */
	__u32 euid;
	__u32 egid;
	/* argv (NUL separated) then filename. Only the bytes used are sent:
	 * hdr.size = sizeof fixed part + args_len + filename_len. */
	char data[KT_ARGS_MAX + KT_PATH_MAX];
};

/* fork: a new process (or, when threads are traced, a new thread). The header
 * describes the parent, which is the task that called fork/clone. */
struct kt_fork_event {
	struct kt_event_header hdr;
	__u64 child_start_ns;  /* child's start_boottime */
	__u32 child_pid;       /* child's tgid */
	__u32 child_tid;
	__u32 flags;           /* enum kt_fork_flags */
	__u32 _pad;
};

/* exit: the last thread of a process is gone. */
struct kt_exit_event {
	struct kt_event_header hdr;
	__u32 exit_code;  /* wait status: (code << 8) | termsig, 0x80 = core dumped */
	__u32 _pad;
};

/* Every syscall event: its arguments, the result, and up to KT_SYS_STRS
 * strings. Each event type has one canonical argument order, whichever
 * syscall variant produced it (open, openat and openat2 all give dirfd, path,
 * flags, mode); what each argument and slot means is declared as data on the
 * Python side (src/ktrail/decode/syscalls.py). */
struct kt_sys_event {
	struct kt_event_header hdr;
	__s64 retval;                   /* return value, -errno on failure */
	__u64 args[6];                  /* arguments, in the type's canonical order */
	__u16 syscall;                  /* enum kt_syscall */
	__u16 str_len[KT_SYS_STRS];     /* bytes of each slot in data[], 0 = empty */
	__u8 str_kind[KT_SYS_STRS];     /* enum kt_str_kind */
	__u16 _pad;
	__u32 flags;                    /* enum kt_sys_flags */
	__u32 _pad2;
	/* Slots back to back; only used bytes are sent. */
	char data[KT_SYS_STRS * KT_STR_MAX];
};

/* Per-CPU counters (one array slot per CPU). */
struct kt_stats {
	__u64 seq;                        /* records attempted on this CPU */
	__u64 dropped[KT_TYPE_SLOTS];     /* records that could not be reserved */
	__u64 forced_wakeups;             /* submits that woke the reader early */
};

#endif /* KTRAIL_H */
