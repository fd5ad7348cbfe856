"""Process lifecycle: exec, fork, exit, and programs the kernel starts itself.

Their records are built by the enricher, which keeps the process table in
ring order (engine/enrich.py); this module says what they are.
"""

from __future__ import annotations

import shlex

from ktrail.events.model import Event, EventKind, Field, Hook

EXEC_FIELDS = (
    Field("exec.filename", "string", "path passed to `execve`/`execveat` (for scripts, the "
          "script)"),
    Field("exec.args", "list of strings", "argv: read from the new image on success, from the "
          "caller's memory on failure"),
    Field("exec.argc", "int", "the true argument count, even when `exec.args` was truncated"),
    Field("exec.args_truncated", "bool", "argv exceeded 4096 bytes and was cut"),
    Field("exec.filename_truncated", "bool", "filename exceeded 4096 bytes"),
    Field("exec.retval", "int", "0, or the negative errno of a failed exec"),
    Field("exec.kernel_spawned", "bool", "the parent is a kernel thread (see "
          "`usermode_helper`)"),
    Field("exec.error", "string or null", "errno name of a failure (`ENOENT`, `EACCES`, "
          "`ENOEXEC`...)"),
    Field("user.euid", "int", "effective uid after the exec (a setuid program shows here)"),
    Field("user.egid", "int", "effective gid after the exec"),
    Field("user.auid", "int or null", "login (audit) uid: who logged in, kept across "
          "`sudo`/`su`; null when unset"),
)


def _argv(args: list[str] | None, fallback: str | None) -> str:
    return shlex.join(args) if args else (fallback or "")


def exec_summary(e: Event) -> str:
    x = e["exec"]
    detail = _argv(x.get("args"), x.get("filename"))
    if x.get("args_truncated"):
        detail += f" ...[{x.get('argc')} args, truncated]"
    if x.get("error"):
        detail = f"{x.get('filename')} FAILED {x['error']}: {detail}"
    return detail


def fork_summary(e: Event) -> str:
    f = e["fork"]
    return f"-> {'thread' if f.get('thread') else 'child'} {f['child'].get('pid')}"


def exit_summary(e: Event) -> str:
    x = e["exit"]
    detail = f"signal {x['signal']}" if x.get("signal") else f"code {x.get('code')}"
    return detail + (" (core dumped)" if x.get("core_dumped") else "")


def _exec_hooks(tp: str) -> tuple[Hook, ...]:
    return (Hook("tp_btf", ("kt_exec_btf",), tp), Hook("raw_tp", ("kt_exec_raw",), tp))


KINDS = (
    EventKind(
        "exec", 1, "process", "program execution, including failed attempts",
        record="kt_exec_event",
        choices=_exec_hooks("sched_process_exec"),
        syscalls=("execve", "execveat"),  # failed attempts
        fields=EXEC_FIELDS, summary=exec_summary, path="exec.filename",
        falco=("execve", "execveat"),
    ),
    EventKind(
        "fork", 2, "process", "process creation (threads on request)",
        record="kt_fork_event",
        choices=(Hook("tp_btf", ("kt_fork_btf",), "sched_process_fork"),
                 Hook("raw_tp", ("kt_fork_raw",), "sched_process_fork")),
        fields=(
            Field("fork.child.pid", "int", "the new process (or, for a thread, its process)"),
            Field("fork.child.tid", "int", "the new task"),
            Field("fork.child.exec_id", "string", "identity of the new process"),
            Field("fork.thread", "bool", "a thread, not a process (only with `--threads`)"),
        ),
        summary=fork_summary, falco=("clone", "clone3", "fork", "vfork"),
    ),
    EventKind(
        "exit", 3, "process", "process exit with its code or signal",
        record="kt_exit_event",
        choices=(Hook("tp_btf", ("kt_exit_btf",), "sched_process_exit"),
                 Hook("raw_tp", ("kt_exit_raw",), "sched_process_exit")),
        fields=(
            Field("exit.code", "int or null", "exit code (0-255) when the process exited; null "
                  "when killed"),
            Field("exit.signal", "string or null", "signal that killed it (`SIGKILL`...)"),
            Field("exit.signo", "int", "signal number, 0 when it exited normally"),
            Field("exit.core_dumped", "bool", "a core dump was written"),
            Field("exit.status", "int", "raw wait status, as `waitpid` reports it"),
            Field("exit.duration_ns", "int or null", "process lifetime in nanoseconds (null "
                  "if the record's times contradict each other)"),
        ),
        summary=exit_summary, falco=("procexit",),
    ),
    # Derived from exec records (their KERNEL_SPAWNED flag): needs the exec programs.
    EventKind(
        "usermode_helper", 39, "task",
        "a program the kernel started itself (its parent is a kernel thread: core_pattern "
        "pipes, modprobe, hotplug helpers)",
        record=None,
        choices=_exec_hooks("sched_process_exec"),
        fields=(
            Field("usermode_helper.exe", "string", "the program the kernel started"),
            Field("usermode_helper.args", "list of strings", "its argv"),
        ),
        summary=lambda e: _argv(e["usermode_helper"].get("args"),
                                e["usermode_helper"].get("exe")),
        falco=(),
    ),
)
