"""The configuration's ignore lists, applied to enriched events before the
rules and the sinks (the output's own --pid/--comm/--uid filters are in
sinks/output.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ktrail.engine.enrich import Event
from ktrail.loader.ignore import Ignore

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
