"""The registry of event types: one `EventKind` per type, and what derives from it.

The kernel ids (enum kt_event_type) and syscall ids (enum kt_syscall) of
bpf/ktrail.h are derived here and checked against the compiled object's BTF
by tests/unit/test_contract.py. Adding a syscall-backed type means its BPF
program, its ids in bpf/ktrail.h, and one entry in a family module.
"""

from __future__ import annotations

import enum

from ktrail.events import device, file, kernel, net, process, task
from ktrail.events.model import Event, EventKind, Field
from ktrail.strings import B64

KINDS: tuple[EventKind, ...] = tuple(sorted(
    (*process.KINDS, *file.KINDS, *net.KINDS, *task.KINDS, *kernel.KINDS, *device.KINDS),
    key=lambda k: k.id))
BY_NAME: dict[str, EventKind] = {k.name: k for k in KINDS}
BY_ID: dict[int, EventKind] = {k.id: k for k in KINDS}

# enum kt_event_type.
EventType = enum.IntEnum("EventType", [(k.name.upper(), k.id) for k in KINDS])

# Syscalls added to a type after types with higher ids had taken the next
# values: each is numbered as if the type with the id given here had it, so
# no existing value moves (bpf/ktrail.h is append-only).
ADDED_SYSCALLS: dict[str, int] = {"open_by_handle_at": 41}

# enum kt_syscall: every syscall of the kt_sys_event types, in registry order
# (new syscalls take the next values), named as in C (KT_SC_<name>).
def _syscall_order() -> list[str]:
    names: list[str] = []
    added = sorted(ADDED_SYSCALLS.items(), key=lambda kv: kv[1])
    for k in (*KINDS, None):
        while added and (k is None or added[0][1] < k.id):
            names.append(added.pop(0)[0])
        if k is not None and k.record == "kt_sys_event":
            names += [s for s in k.syscalls if s not in names and s not in ADDED_SYSCALLS]
    return names


_SYS_NAMES = _syscall_order()
Syscall = enum.IntEnum("Syscall", [(name, i + 1) for i, name in enumerate(_SYS_NAMES)])
SYSCALL_NAMES: dict[int, str] = {int(s): s.name for s in Syscall}

DEFAULT_EVENTS = frozenset(k.name for k in KINDS if k.default)

# Fields every event has.
COMMON: tuple[Field, ...] = (
    Field("evt.type", "string", "the event type (`exec`, `rename`...; see below), or `stats` "
          "for sensor records"),
    Field("evt.time", "string", "when it happened, RFC 3339 in UTC with nanoseconds "
          "(`2026-11-21T21:45:23.481076214Z`); kernel boot-time clock mapped to wall time once "
          "at start"),
    Field("evt.seq", "int", "per-CPU sequence number of the record; with `evt.cpu`, a gap means "
          "a record was lost (and counted)"),
    Field("evt.cpu", "int", "CPU the event happened on"),
    Field("proc.pid", "int", "process id (thread-group id)"),
    Field("proc.tid", "int", "thread that caused the event"),
    Field("proc.ppid", "int", "the kernel's parent pid at the time of the event; changes when a "
          "process is reparented"),
    Field("proc.exec_id", "string", "process identity, see above"),
    Field("proc.start_time", "string", "process start, RFC 3339 with ns"),
    Field("proc.comm", "string", "kernel task name (up to 15 bytes; settable by the process, so "
          "not trustworthy alone)"),
    Field("proc.exe", "string", "path of the executed program as given to `execve`, made "
          "absolute against the cwd; for processes running before ktrail started, "
          "`/proc/<pid>/exe`"),
    Field("proc.name", "string", "basename of `proc.exe` (or `comm` when there is no exe, e.g. "
          "kernel threads)"),
    Field("proc.args", "list of strings", "argv of the current image"),
    Field("proc.args_truncated", "bool", "argv was longer than the capture limit (4096 bytes)"),
    Field("proc.cwd", "string", "working directory, read at exec (inherited from the parent "
          "when the process was already gone)"),
    Field("proc.uid", "int", "real uid at the time of the event"),
    Field("proc.gid", "int", "real gid at the time of the event"),
    Field("proc.source", "string", "where the table learnt this process: `exec`, `fork`, "
          "`procfs` (running before start, or looked up late), `partial` (only what the event "
          "itself carried)"),
    Field("proc.parent", "object or null", "the process that **created** this one, kept after "
          "reparenting: `exec_id`, `pid`, `exe`, `comm`, `args` (`pid`/`exe`/`comm`/`args` are "
          "null when that process left the table)"),
    Field("proc.parent.exec_id", "string", "the creator's identity"),
    Field("proc.parent.pid", "int or null", "the creator's pid"),
    Field("proc.parent.exe", "string or null", "the creator's program"),
    Field("proc.parent.comm", "string or null", "the creator's comm"),
    Field("proc.parent.args", "list of strings or null", "the creator's argv"),
    Field("proc.ancestors", "list of objects", "creator chain, parent first, up to 16 deep: "
          "each `exec_id`, `pid`, `exe`, `comm`"),
    Field("user.uid", "int", "real uid"),
    Field("user.name", "string or null", "user name of the uid on this host"),
    Field("container.id", "string", "container id, 12 hex characters (null object when not in "
          "a container)"),
    Field("container.full_id", "string", "the full 64-hex id, from the cgroup path (docker, "
          "containerd/Kubernetes, cri-o and podman layouts)"),
)
# Fields of every event built from a syscall (kt_sys_event records).
SYSCALL_COMMON: tuple[Field, ...] = (
    Field("evt.syscall", "string or null", "the syscall that produced it (`openat`, "
          "`renameat2`...); for work submitted through io_uring `io_uring_enter`, or null when "
          "the ring's kernel thread submitted it (SQPOLL)"),
    Field("evt.retval", "int or null", "its return value; null when not known (io_uring "
          "work is recorded at submission, before it completes)"),
    Field("evt.error", "string or null", "errno name when it failed (`ENOENT`, `EACCES`...)"),
)


# Fields whose text comes from the kernel or /proc as bytes that anyone may
# choose: names, paths, argv. One that is not UTF-8 is written with U+FFFD
# for the undecodable bytes and gets a `<field>_b64` sibling with the exact
# bytes (ktrail.strings; docs/events.md, "Strings that are not UTF-8").
KERNEL_TEXT: tuple[str, ...] = (
    "proc.comm", "proc.exe", "proc.name", "proc.args", "proc.cwd",
    "proc.parent.exe", "proc.parent.comm", "proc.parent.args",
    "exec.filename", "exec.args", "usermode_helper.exe", "usermode_helper.args",
    "file.path", "file.new_path", "file.target", "net.path",
    "prctl.name", "prctl.old_name", "memfd.name",
    "kill.target.exe", "kill.target.comm", "ptrace.target.exe", "ptrace.target.comm",
    "process_vm.target.exe", "process_vm.target.comm", "file.mem_target.exe",
    "file.mem_target.comm",
    "module.file", "module.name", "module.params", "bpf.prog_name", "bpf.tracepoint",
    "mount.source", "mount.fstype", "mount.target", "io_uring.path",
    "device.devpath", "device.subsystem", "device.devname", "device.devtype",
    "device.driver", "device.product",
)


def exact_bytes_field(f: Field) -> Field:
    """The `_b64` sibling of a kernel text field."""
    many = f.type.startswith("list")
    return Field(f.name + B64, "list of strings" if many else "string",
                 f"present when `{f.name}` was not UTF-8: the exact bytes, base64"
                 + (" (one per element)" if many else ""))


def all_fields() -> dict[str, Field]:
    """Every event field by name: the common ones, then each type's, then
    the `_b64` siblings of the kernel's text."""
    out = {f.name: f for f in (*COMMON, *SYSCALL_COMMON)}
    for k in KINDS:
        for f in k.fields:
            out.setdefault(f.name, f)
    for name in KERNEL_TEXT:
        f = exact_bytes_field(out[name])
        out[f.name] = f
    return out


FIELDS: dict[str, Field] = all_fields()


def summary(e: Event) -> str:
    """The telling detail of an event, by its type's summary, with the error
    of a failed syscall: what text output and `ktrail tree` show."""
    kind = BY_NAME.get(e["evt"]["type"])
    try:
        detail = kind.summary(e) if kind is not None else ""
    except (KeyError, TypeError, AttributeError):
        detail = ""  # a record from an older or foreign trail: no detail rather than none
    err = e["evt"].get("error")
    return f"{detail} ({err})" if err else detail
