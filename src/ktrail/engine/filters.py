"""Output filters (--pid, --comm, --uid).

They apply after enrichment: the process table still sees every event, so the
ancestry of what passes stays complete.
"""

from __future__ import annotations

from dataclasses import dataclass

from ktrail.engine.enrich import Event
from ktrail.loader.ignore import Ignore


@dataclass(frozen=True)
class EventFilter:
    pids: frozenset[int] = frozenset()
    comms: frozenset[str] = frozenset()
    uids: frozenset[int] = frozenset()

    @property
    def active(self) -> bool:
        return bool(self.pids or self.comms or self.uids)

    def match(self, e: Event) -> bool:
        p = e["proc"]
        if self.pids and p["pid"] not in self.pids:
            return False
        if self.comms and p["comm"] not in self.comms:
            return False
        return not (self.uids and p["uid"] not in self.uids)

    def apply(self, events: list[Event]) -> list[Event]:
        return [e for e in events if self.match(e)] if self.active else events


# Reported whatever the ignore lists say.
NEVER_IGNORED = frozenset({"privilege_escalation", "stats"})
_PATH_FIELDS = ("path", "new_path")


@dataclass(frozen=True)
class IgnoreFilter:
    """The configuration's `ignore`: syscall events were already dropped in the
    kernel; this drops the lifecycle events (which the process table needs, so
    the kernel sends them) and file events whose path is under an ignored
    prefix (the kernel only filters opens by directory)."""

    ignore: Ignore

    def match(self, e: Event) -> bool:
        """True when the event is to be dropped."""
        if e["evt"]["type"] in NEVER_IGNORED:
            return False
        ig, p = self.ignore, e["proc"]
        if p["pid"] in ig.pids or p["uid"] in ig.uids or p["comm"] in ig.comms:
            return True
        f = e.get("file")
        if f and ig.paths:
            for name in _PATH_FIELDS:
                path = f.get(name)
                if path and any(path == pre or path.startswith(pre.rstrip("/") + "/")
                                for pre in ig.paths):
                    return True
        return False

    def apply(self, events: list[Event]) -> list[Event]:
        if not self.ignore.active:
            return events
        return [e for e in events if not self.match(e)]
