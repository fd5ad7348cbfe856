"""Which BPF programs implement each event type, best hook first.

The sensor attaches programs only for enabled event types, and for each one
picks the first hook whose mechanism this kernel supports.
"""

from __future__ import annotations

from dataclasses import dataclass

from ktrail.decode.schema import EventType
from ktrail.decode.syscalls import SPECS


@dataclass(frozen=True)
class Hook:
    mechanism: str           # a name from features.MECHANISMS
    programs: tuple[str, ...]
    target: str              # what it attaches to, for reports


@dataclass(frozen=True)
class EventSpec:
    name: str
    type: EventType
    choices: tuple[Hook, ...] = ()   # alternatives, best first: exactly one is used
    always: tuple[Hook, ...] = ()    # needed in addition, whichever choice wins
    description: str = ""
    # Syscall events: the syscalls whose enter/exit tracepoints produce it.
    # Each is attached when this kernel has its tracepoint.
    syscalls: tuple[str, ...] = ()


def syscall_programs(name: str) -> tuple[str, str]:
    """The enter and exit programs of a syscall (see bpf/syscall.bpf.h)."""
    return f"kt_enter_{name}", f"kt_exit_{name}"


# Event type -> the syscalls that produce it (bpf/file.bpf.c).
SYSCALLS: dict[EventType, tuple[str, ...]] = {
    EventType.OPEN: ("open", "openat", "openat2", "creat"),
    EventType.CREATE: ("open", "openat", "openat2", "creat"),
    EventType.UNLINK: ("unlink", "unlinkat"),
    EventType.RMDIR: ("rmdir", "unlinkat"),
    EventType.RENAME: ("rename", "renameat", "renameat2"),
    EventType.LINK: ("link", "linkat"),
    EventType.SYMLINK: ("symlink", "symlinkat"),
    EventType.CHMOD: ("chmod", "fchmod", "fchmodat", "fchmodat2"),
    EventType.CHOWN: ("chown", "lchown", "fchown", "fchownat"),
    EventType.UTIMES: ("utime", "utimes", "utimensat", "futimesat"),
    EventType.TRUNCATE: ("truncate", "ftruncate"),
    EventType.CONNECT: ("connect",),
    EventType.ACCEPT: ("accept", "accept4"),
    EventType.BIND: ("bind",),
    EventType.LISTEN: ("listen",),
    EventType.DNS: ("sendto", "sendmsg", "sendmmsg"),
}


CATALOG: dict[str, EventSpec] = {
    spec.name: spec
    for spec in (
        EventSpec(
            "exec",
            EventType.EXEC,
            choices=(
                Hook("tp_btf", ("kt_exec_btf",), "sched_process_exec"),
                Hook("raw_tp", ("kt_exec_raw",), "sched_process_exec"),
            ),
            always=(
                Hook(
                    "tracepoint",
                    ("kt_execve_enter", "kt_execve_exit", "kt_execveat_enter", "kt_execveat_exit"),
                    "syscalls:sys_{enter,exit}_execve{,at} (failed execs)",
                ),
            ),
            description="program execution, including failed attempts",
        ),
        EventSpec(
            "fork",
            EventType.FORK,
            choices=(
                Hook("tp_btf", ("kt_fork_btf",), "sched_process_fork"),
                Hook("raw_tp", ("kt_fork_raw",), "sched_process_fork"),
            ),
            description="process creation (threads on request)",
        ),
        EventSpec(
            "exit",
            EventType.EXIT,
            choices=(
                Hook("tp_btf", ("kt_exit_btf",), "sched_process_exit"),
                Hook("raw_tp", ("kt_exit_raw",), "sched_process_exit"),
            ),
            description="process exit with its code or signal",
        ),
        *(
            EventSpec(SPECS[t].name, t, description=SPECS[t].description, syscalls=scs)
            for t, scs in SYSCALLS.items()
        ),
    )
}

BY_TYPE: dict[EventType, EventSpec] = {s.type: s for s in CATALOG.values()}


class UnknownEvent(ValueError):
    pass


def parse_events(text: str) -> frozenset[str]:
    """'exec,exit' -> {'exec', 'exit'}; 'all' -> every type. Names are checked."""
    names = {n.strip() for n in text.split(",") if n.strip()}
    if names == {"all"}:
        return frozenset(CATALOG)
    unknown = sorted(names - set(CATALOG))
    if unknown or not names:
        raise UnknownEvent(
            f"unknown event type(s): {', '.join(unknown) or '(none given)'}; "
            f"known: {', '.join(CATALOG)}"
        )
    return frozenset(names)
