"""Python's view of bpf/ktrail.h, the kernel/userspace contract.

Each record layout is a numpy structured dtype so whole batches decode in one
call. tests/integration/test_contract.py checks every size, offset and enum
value here against the BTF of the compiled object.
"""

from __future__ import annotations

import enum

import numpy as np

COMM_LEN = 16
ARGS_MAX = 4096
PATH_MAX = 4096
TYPE_SLOTS = 64
SYS_STRS = 4
STR_MAX = 4096


class EventType(enum.IntEnum):
    EXEC = 1
    FORK = 2
    EXIT = 3
    OPEN = 10
    CREATE = 11
    UNLINK = 12
    RMDIR = 13
    RENAME = 14
    LINK = 15
    SYMLINK = 16
    CHMOD = 17
    CHOWN = 18
    UTIMES = 19
    TRUNCATE = 20
    CONNECT = 21
    ACCEPT = 22
    BIND = 23
    LISTEN = 24
    DNS = 25
    SETSID = 26
    PRCTL = 27
    KILL = 28
    PTRACE = 29
    MEMFD_CREATE = 30
    EXEC_MEMORY = 31
    SETUID = 32
    PRIVILEGE_ESCALATION = 33
    MODULE_LOAD = 34
    BPF = 35
    MOUNT = 36
    UMOUNT = 37
    NAMESPACE = 38
    USERMODE_HELPER = 39
    IO_URING = 40
    DEVICE = 41  # kernel uevents (netlink), not a BPF record


class StrKind(enum.IntEnum):
    NONE = 0
    USER = 1
    DPATH = 2
    BYTES = 3


class SysFlags(enum.IntFlag):
    TRUNCATED = 1       # << slot
    PATH_ROOTED = 16    # << slot
    CREATED = 256
    WATCHED = 512


# enum kt_syscall: the C names are the syscall names (KT_SC_<name>).
Syscall = enum.IntEnum(
    "Syscall",
    [(name, i + 1) for i, name in enumerate((
        "open", "openat", "openat2", "creat", "unlink", "unlinkat", "rmdir", "rename",
        "renameat", "renameat2", "link", "linkat", "symlink", "symlinkat", "chmod", "fchmod",
        "fchmodat", "fchmodat2", "chown", "lchown", "fchown", "fchownat", "utime", "utimes",
        "utimensat", "futimesat", "truncate", "ftruncate", "connect", "accept", "accept4",
        "bind", "listen", "sendto", "sendmsg", "sendmmsg", "setsid", "prctl", "kill", "tkill",
        "tgkill", "ptrace", "memfd_create", "mmap", "mprotect", "setuid", "setgid", "setreuid",
        "setregid", "setresuid", "setresgid", "setfsuid", "setfsgid", "capset", "init_module",
        "finit_module", "delete_module", "bpf", "mount", "umount", "unshare", "setns",
    ))],
)


class ExecFlags(enum.IntFlag):
    ARGS_TRUNCATED = 1
    FILENAME_TRUNCATED = 2
    ARGS_UNREADABLE = 4
    KERNEL_SPAWNED = 8


class ForkFlags(enum.IntFlag):
    THREAD = 1


# Names are the C field names, so the contract test can match them one to one.
HEADER_FIELDS: list[tuple[str, str | tuple[str, int]]] = [
    ("type", "<u2"),
    ("flags", "<u2"),
    ("size", "<u4"),
    ("ts_ns", "<u8"),
    ("seq", "<u8"),
    ("start_ns", "<u8"),
    ("cpu", "<u4"),
    ("pid", "<u4"),
    ("tid", "<u4"),
    ("ppid", "<u4"),
    ("uid", "<u4"),
    ("gid", "<u4"),
    ("comm", ("S", COMM_LEN)),
]


def _dtype(fields: list[tuple[str, str | tuple[str, int]]]) -> np.dtype:
    spec = [(n, f"S{t[1]}" if isinstance(t, tuple) else t) for n, t in fields]
    return np.dtype(spec)


HEADER = _dtype(HEADER_FIELDS)

# Fixed part of struct kt_exec_event; data[] (argv then filename) follows.
EXEC = _dtype(
    [
        *HEADER_FIELDS,
        ("retval", "<i4"),
        ("argc", "<u4"),
        ("args_len", "<u4"),
        ("filename_len", "<u4"),
        ("flags_exec", "<u4"),
        ("auid", "<u4"),
        ("euid", "<u4"),
        ("egid", "<u4"),
    ]
)
EXEC_DATA_MAX = ARGS_MAX + PATH_MAX

FORK = _dtype(
    [
        *HEADER_FIELDS,
        ("child_start_ns", "<u8"),
        ("child_pid", "<u4"),
        ("child_tid", "<u4"),
        ("flags_fork", "<u4"),
        ("_pad", "<u4"),
    ]
)

EXIT = _dtype([*HEADER_FIELDS, ("exit_code", "<u4"), ("_pad", "<u4")])

# Fixed part of struct kt_sys_event; the string slots follow.
SYS = np.dtype(
    [
        *[(n, f"S{t[1]}" if isinstance(t, tuple) else t) for n, t in HEADER_FIELDS],
        ("retval", "<i8"),
        ("args", "<u8", (6,)),
        ("syscall", "<u2"),
        ("str_len", "<u2", (SYS_STRS,)),
        ("str_kind", "u1", (SYS_STRS,)),
        ("_pad", "<u2"),
        ("flags_sys", "<u4"),
        ("_pad2", "<u4"),
    ]
)
SYS_DATA_MAX = SYS_STRS * STR_MAX

# Types carried by struct kt_sys_event. usermode_helper is derived from an
# exec record (its KERNEL_SPAWNED flag), not a record of its own.
SYSCALL_TYPES = frozenset(
    t for t in EventType if t >= 10 and t not in (EventType.USERMODE_HELPER, EventType.DEVICE)
)

# struct kt_stats, one per CPU.
STATS = np.dtype(
    [("seq", "<u8"), ("dropped", "<u8", (TYPE_SLOTS,)), ("forced_wakeups", "<u8")]
)

# Per event type: the dtype of its fixed part, and the C struct it mirrors.
RECORDS: dict[EventType, tuple[np.dtype, str]] = {
    EventType.EXEC: (EXEC, "kt_exec_event"),
    EventType.FORK: (FORK, "kt_fork_event"),
    EventType.EXIT: (EXIT, "kt_exit_event"),
    **{t: (SYS, "kt_sys_event") for t in SYSCALL_TYPES},
}

# The dtypes above flatten the embedded header and rename clashing fields;
# this maps back to the C member path for the contract test.
C_FIELD_NAMES = {"flags_exec": "flags", "flags_fork": "flags", "flags_sys": "flags"}
