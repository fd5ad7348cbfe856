"""Which BPF programs implement each event type, best hook first.

The sensor attaches programs only for enabled event types, and for each one
picks the first hook whose mechanism this kernel supports. The hooks are
declared with each type in the registry (ktrail.events); this module adds
what the loader alone needs.
"""

from __future__ import annotations

from ktrail.events.model import EventKind, Hook
from ktrail.events.registry import BY_NAME

__all__ = ["CATALOG", "RAW_FALLBACK", "RAW_PROGRAMS", "Hook", "UnknownEvent", "parse_events",
           "syscall_programs"]

CATALOG: dict[str, EventKind] = BY_NAME

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
