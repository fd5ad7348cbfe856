"""What the peer tools are told to watch: the default profile, translated.

Both the auditd rules and the bpftrace script are generated from ktrail's
own catalog (the syscalls behind each event type of the `default` profile),
so the three configurations watch the same syscalls and a change to the
profile changes the peers with it. Where ktrail filters in the kernel and
the peer can too, the peer gets the same filter:

- opens: only with O_CREAT (auditd `-F a1&0100`/`a2&0100`, a bpftrace
  predicate on the saved flags), plus the sensitive files ktrail watches
  (auditd `-w PATH -p r`; bpftrace compares the opened path);
- prctl: PR_SET_NAME only; ptrace: POKETEXT, POKEDATA, ATTACH and SEIZE.

Neither peer can parse a DNS query in the kernel, so both record every
sendto/sendmsg/sendmmsg; none of the workloads sends datagrams, so this
costs them nothing in the tables.
"""

from __future__ import annotations

import glob
from pathlib import Path

from ktrail.loader.catalog import CATALOG
from ktrail.loader.profiles import PROFILES
from ktrail.loader.watch import DEFAULT_WATCH

O_CREAT = 0o100
PR_SET_NAME = 15
PTRACE_INJECTION = (4, 5, 16, 0x4206)  # POKETEXT, POKEDATA, ATTACH, SEIZE
# Process lifecycle: ktrail uses sched tracepoints; auditd sees the syscalls.
LIFECYCLE_SYSCALLS = ("clone", "clone3", "fork", "vfork", "exit_group")
TRACEFS = Path("/sys/kernel/tracing/events/syscalls")
# Which argument holds the open flags.
OPEN_FLAGS_ARG = {"open": 1, "openat": 2}


def default_syscalls() -> list[str]:
    names: set[str] = set()
    for ev in PROFILES["default"].events:
        names.update(getattr(CATALOG[ev], "syscalls", ()) or ())
    return sorted(names)


def watched_files() -> list[str]:
    out: list[str] = []
    for pattern in DEFAULT_WATCH:
        out.extend(p for p in glob.glob(pattern) if Path(p).exists())
    return sorted(set(out))


# auditd ---------------------------------------------------------------------

def audit_rules(known: set[str]) -> list[list[str]]:
    """auditctl argument lists; `known` are the syscall names auditctl accepts."""
    plain: list[str] = []
    rules: list[list[str]] = []
    for sc in default_syscalls():
        if sc not in known:
            continue
        if sc in OPEN_FLAGS_ARG:
            rules.append(["-a", "always,exit", "-F", "arch=b64", "-S", sc,
                          "-F", f"a{OPEN_FLAGS_ARG[sc]}&{O_CREAT}", "-k", "ktrail-bench"])
        elif sc == "prctl":
            rules.append(["-a", "always,exit", "-F", "arch=b64", "-S", sc,
                          "-F", f"a0={PR_SET_NAME}", "-k", "ktrail-bench"])
        elif sc == "ptrace":
            rules.extend(["-a", "always,exit", "-F", "arch=b64", "-S", sc,
                          "-F", f"a0={req}", "-k", "ktrail-bench"] for req in PTRACE_INJECTION)
        else:
            plain.append(sc)
    plain += [sc for sc in LIFECYCLE_SYSCALLS if sc in known]
    # One rule for all unfiltered syscalls: auditd checks a syscall bitmap
    # per rule, so this is the cheapest way to say the same thing.
    args = ["-a", "always,exit", "-F", "arch=b64"]
    for sc in plain:
        args += ["-S", sc]
    rules.append([*args, "-k", "ktrail-bench"])
    rules.extend(["-w", path, "-p", "r", "-k", "ktrail-bench"] for path in watched_files())
    return rules


# bpftrace -------------------------------------------------------------------

def _has_tp(sc: str) -> bool:
    return (TRACEFS / f"sys_enter_{sc}").is_dir()


def bpftrace_script() -> str:
    """One printf per event the default profile would record."""
    lines = [
        "tracepoint:sched:sched_process_exec "
        '{ printf("exec %d %d %s %s\\n", pid, uid, comm, str(args->filename)); }',
        "tracepoint:sched:sched_process_fork "
        '{ printf("fork %d %d %s\\n", args->parent_pid, args->child_pid, comm); }',
        "tracepoint:sched:sched_process_exit "
        '{ printf("exit %d %s\\n", pid, comm); }',
    ]
    watched = watched_files()
    for sc in default_syscalls():
        if not _has_tp(sc):
            continue
        enter, exit_ = f"tracepoint:syscalls:sys_enter_{sc}", f"tracepoint:syscalls:sys_exit_{sc}"
        if sc in ("open", "openat"):
            # Flags and path at entry; the event once the open succeeded.
            match = " || ".join(f'str(uptr(@path[tid])) == "{p}"' for p in watched) or "0"
            lines += [
                f"{enter} {{ @flags[tid] = args->flags; @path[tid] = args->filename; }}",
                f"{exit_} /@path[tid] != 0/ {{ if (args->ret >= 0 && "
                f"((@flags[tid] & {O_CREAT}) || {match})) {{ "
                f'printf("{sc} %d %s %s %d\\n", pid, comm, str(uptr(@path[tid])), args->ret); }} '
                "delete(@flags[tid]); delete(@path[tid]); }",
            ]
        elif sc in ("execve", "execveat"):
            # Successful execs come from sched_process_exec; failures here.
            lines.append(f'{exit_} /args->ret < 0/ {{ printf("exec-failed %d %s %d\\n", '
                         "pid, comm, args->ret); }")
        elif sc == "prctl":
            lines.append(f"{enter} /args->option == {PR_SET_NAME}/ "
                         '{ printf("prctl %d %s %s\\n", pid, comm, str(args->arg2)); }')
        elif sc == "ptrace":
            cond = " || ".join(f"args->request == {r}" for r in PTRACE_INJECTION)
            lines.append(f"{enter} /{cond}/ "
                         '{ printf("ptrace %d %s %d\\n", pid, comm, args->pid); }')
        else:
            # The result matters (a denied attempt is an event too): report at exit.
            lines.append(f'{exit_} {{ printf("{sc} %d %d %s %d\\n", pid, uid, comm, '
                         "args->ret); }")
    return "\n".join(lines) + "\n"
