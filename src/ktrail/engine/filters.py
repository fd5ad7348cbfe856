"""Output filters (--pid, --comm, --uid).

They apply after enrichment: the process table still sees every event, so the
ancestry of what passes stays complete.
"""

from __future__ import annotations

from dataclasses import dataclass

from ktrail.engine.enrich import Event


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
