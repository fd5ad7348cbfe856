"""The output stream: stdout or a rotated file, as JSON lines or text.

The --pid/--comm/--uid filters and --alerts-only are the reader's view:
they apply here only; the rules and the store see every event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ktrail.output.formats import Format, JsonLines
from ktrail.output.target import Target
from ktrail.sinks.base import Batch, Event, join


@dataclass(frozen=True)
class EventFilter:
    """--pid, --comm, --uid: applied after enrichment, so the process table
    still sees every event and the ancestry of what passes stays complete."""

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


class OutputSink:
    name = "output"
    records = True  # writes the sensor's own records (stats)
    error: str | None = None

    def __init__(self, fmt: Format, target: Target, flt: EventFilter | None = None,
                 alerts_only: bool = False) -> None:
        self.fmt = fmt
        self.target = target
        self.filter = flt or EventFilter()
        self.alerts_only = alerts_only
        self.written = 0       # events written (alerts and records apart)
        self._json = isinstance(fmt, JsonLines)
        self._closed = False

    def submit(self, batch: Batch) -> None:
        events = batch.events
        if self.alerts_only:
            keep: list[int] | None = []
        elif self.filter.active:
            match = self.filter.match
            keep = [i for i, e in enumerate(events) if match(e)]
        else:
            keep = None  # all of them
        n = len(events) if keep is None else len(keep)
        self.written += n
        if self._json:
            lines = batch.lines() if n else []
            if keep is not None:
                lines = [lines[i] for i in keep]
            if batch.alerts:
                lines = lines + batch.alert_lines()
            data = join(lines)
            if batch.records:
                data += self.fmt.encode(batch.records)
        else:
            chosen = events if keep is None else [events[i] for i in keep]
            data = self.fmt.encode([*chosen, *batch.alerts, *batch.records])
        if data:
            self.target.write(data)

    def tick(self) -> None:
        self.target.flush()

    def stats(self) -> dict[str, Any] | None:
        return None  # its count is the stats record's output_events

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.target.flush()
            self.target.close()
