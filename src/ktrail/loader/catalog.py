"""Which BPF programs implement each event type, best hook first.

The sensor attaches programs only for enabled event types, and for each one
picks the first hook whose mechanism this kernel supports.
"""

from __future__ import annotations

from dataclasses import dataclass

from ktrail.decode.schema import EventType


@dataclass(frozen=True)
class Hook:
    mechanism: str           # a name from features.MECHANISMS
    programs: tuple[str, ...]
    target: str              # what it attaches to, for reports


@dataclass(frozen=True)
class EventSpec:
    name: str
    type: EventType
    choices: tuple[Hook, ...]        # alternatives, best first: exactly one is used
    always: tuple[Hook, ...] = ()    # needed in addition, whichever choice wins
    description: str = ""


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
