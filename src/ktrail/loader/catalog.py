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
    # "category/name" of a tracepoint that must exist for this hook: names
    # change between kernel versions.
    tracepoint: str = ""


@dataclass(frozen=True)
class EventSpec:
    name: str
    type: EventType
    choices: tuple[Hook, ...] = ()   # alternatives, best first: exactly one is used
    description: str = ""
    # The syscalls whose entry and exit produce it (or, for exec, its
    # failures). Each is hooked by fentry/fexit on its entry function where
    # the kernel allows, else by its syscalls:sys_{enter,exit}_X tracepoints.
    syscalls: tuple[str, ...] = ()


# Syscalls that may have no tracepoint (compiled out of the kernel) and can
# then be traced through the raw syscall hooks, by number (bpf/kernel.bpf.c).
RAW_FALLBACK: dict[str, dict[str, int]] = {
    "init_module": {"x86_64": 175, "aarch64": 105},
    "delete_module": {"x86_64": 176, "aarch64": 106},
    "finit_module": {"x86_64": 313, "aarch64": 273},
}
RAW_PROGRAMS = ("kt_raw_sys_enter", "kt_raw_sys_exit")


def syscall_programs(name: str, mechanism: str = "tracepoint") -> tuple[str, str]:
    """The enter and exit programs of a syscall (see bpf/syscall.bpf.h)."""
    if mechanism == "fentry":
        return f"kt_fentry_{name}", f"kt_fexit_{name}"
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
    EventType.SETSID: ("setsid",),
    EventType.PRCTL: ("prctl",),
    EventType.KILL: ("kill", "tkill", "tgkill"),
    EventType.PTRACE: ("ptrace",),
    EventType.MEMFD_CREATE: ("memfd_create",),
    EventType.EXEC_MEMORY: ("mmap", "mprotect"),
    EventType.SETUID: ("setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
                       "setfsuid", "setfsgid", "capset"),
    # Checked at the exit of every traced syscall; these make sure the
    # calls that legitimately change credentials are traced too.
    EventType.PRIVILEGE_ESCALATION: ("setuid", "setreuid", "setresuid", "setfsuid", "capset"),
    EventType.MODULE_LOAD: ("init_module", "finit_module", "delete_module"),
    EventType.BPF: ("bpf",),
    EventType.MOUNT: ("mount",),
    EventType.UMOUNT: ("umount",),  # umount2(2): its tracepoint is sys_enter_umount
    EventType.NAMESPACE: ("unshare", "setns"),
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
            syscalls=("execve", "execveat"),  # failed attempts
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
        EventSpec(
            "io_uring",
            EventType.IO_URING,
            choices=(
                Hook("tp_btf", ("kt_uring_submit",), "io_uring:io_uring_submit_req",
                     tracepoint="io_uring/io_uring_submit_req"),
                # Its name before Linux 6.4 (Debian 12's 6.1).
                Hook("tp_btf", ("kt_uring_submit_sqe",), "io_uring:io_uring_submit_sqe",
                     tracepoint="io_uring/io_uring_submit_sqe"),
            ),
            description=SPECS[EventType.IO_URING].description,
        ),
        # Not a BPF hook: the kernel's uevent netlink broadcast.
        EventSpec(
            "device",
            EventType.DEVICE,
            choices=(Hook("netlink", (), "NETLINK_KOBJECT_UEVENT"),),
            description="devices added, removed, bound or changed (USB, disks, network "
                        "interfaces), from the kernel's uevents",
        ),
        # Derived from exec records: needs the exec programs.
        EventSpec(
            "usermode_helper",
            EventType.USERMODE_HELPER,
            choices=(
                Hook("tp_btf", ("kt_exec_btf",), "sched_process_exec"),
                Hook("raw_tp", ("kt_exec_raw",), "sched_process_exec"),
            ),
            description="a program the kernel started itself (its parent is a kernel "
                        "thread: core_pattern pipes, modprobe, hotplug helpers)",
        ),
    )
}



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
