"""Python's view of bpf/ktrail.h, the kernel/userspace contract.

Each record layout is a numpy structured dtype so whole batches decode in one
call; the event and syscall ids come from the registry (ktrail.events).
tests/unit/test_contract.py checks every size, offset and enum value here
against the BTF of the compiled object.
"""

from __future__ import annotations

import enum

import numpy as np

from ktrail.events.registry import KINDS, EventType

COMM_LEN = 16
ARGS_MAX = 4096
PATH_MAX = 4096
TYPE_SLOTS = 64
SYS_STRS = 4
STR_MAX = 4096


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

# struct kt_stats, one per CPU.
STATS = np.dtype(
    [("seq", "<u8"), ("dropped", "<u8", (TYPE_SLOTS,)), ("forced_wakeups", "<u8")]
)

# Per event type with records of its own: the dtype of its fixed part, and
# the C struct it mirrors (from the registry).
_DTYPES = {"kt_exec_event": EXEC, "kt_fork_event": FORK, "kt_exit_event": EXIT,
           "kt_sys_event": SYS}
RECORDS: dict[EventType, tuple[np.dtype, str]] = {
    EventType(k.id): (_DTYPES[k.record], k.record) for k in KINDS if k.record is not None
}
# Types carried by struct kt_sys_event.
SYSCALL_TYPES = frozenset(t for t, (_, c) in RECORDS.items() if c == "kt_sys_event")

# The dtypes above flatten the embedded header and rename clashing fields;
# this maps back to the C member path for the contract test.
C_FIELD_NAMES = {"flags_exec": "flags", "flags_fork": "flags", "flags_sys": "flags"}
