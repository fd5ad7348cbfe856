"""Profiles: which event types a run records, and how verbosely.

`default` is the set worth keeping on every host: process lifecycle, the
file changes attackers make (create, rename, link, permission and timestamp
changes), `open` only for watched sensitive paths, network connections,
listeners and DNS queries, and the process, privilege and kernel operations
attackers rely on (ptrace injection, memfd, prctl renames, setuid, privilege
escalation, module and BPF loads, mounts, namespaces, usermode helpers).
`full` adds every open for writing, unlink, rmdir, truncate, kill, every
ptrace request and executable memory mappings. `full` is everything,
including every open for writing, unlink, rmdir and truncate.
"""

from __future__ import annotations

from dataclasses import dataclass

from ktrail.events.registry import BY_NAME, DEFAULT_EVENTS


@dataclass(frozen=True)
class Profile:
    name: str
    events: frozenset[str]
    open_writes: bool  # `open` for every write, not only watched paths
    description: str
    ptrace_all: bool = False  # every ptrace request, not only injection ones
    raw_fallback: bool = False  # raw syscall hooks for syscalls without tracepoints
    uring_all: bool = False  # every io_uring opcode, not only the security-relevant ones


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "default",
            DEFAULT_EVENTS,  # each type's `default` in the registry
            open_writes=False,
            description="always-on audit set: low volume, high value",
        ),
        Profile("full", frozenset(BY_NAME), open_writes=True, ptrace_all=True,
                raw_fallback=True, uring_all=True,
                description="every event type, every open for writing, every ptrace "
                            "request"),
    )
}
