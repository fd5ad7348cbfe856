"""The output stream: stdout or a rotated file, as JSON lines or text.

The --pid/--comm/--uid filters and --alerts-only are the reader's view:
they apply here only; the rules and the store see every event.

Writing happens in a thread behind a bounded queue (output/writer.py): a
full disk, a pipe nobody reads or a closed stdout never stops or slows the
run loop, and what the output could not take is counted in stats.output.
"""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass
from typing import Any, TextIO

from ktrail.output.formats import Format, JsonLines
from ktrail.output.target import Target
from ktrail.output.writer import MAX_QUEUED_BYTES, QueuedWriter
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
                 alerts_only: bool = False, sole: bool = False,
                 max_queued_bytes: int = MAX_QUEUED_BYTES, warn: TextIO | None = None,
                 **writer_options: Any) -> None:
        """`sole`: nothing else keeps the trail (no store), so an output that
        fails for good ends the run instead of tracing for nobody."""
        self.fmt = fmt
        self.target = target
        self.filter = flt or EventFilter()
        self.alerts_only = alerts_only
        self.sole = sole
        self.written = 0       # events handed to the output (alerts and records apart)
        self.error: str | None = None
        self._json = isinstance(fmt, JsonLines)
        self._closed = False
        still = ("the rules still run" if sole else
                 "events still go to the store and rules")
        final = "nothing else keeps the trail (the store is off): stopping" if sole else ""
        self.writer = QueuedWriter(target, max_queued_bytes, warn if warn is not None
                                   else sys.stderr, still=still, final=final,
                                   **writer_options)

    @property
    def reader_gone(self) -> bool:
        """The output failed for good because its reader went away (`| head`)."""
        f = self.writer.failing
        return self.writer.gone and f is not None and f.errno in (errno.EPIPE, errno.ENXIO)

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
            self.writer.submit(data, n, len(batch.alerts))

    def tick(self) -> None:
        w = self.writer
        if self.sole and w.gone and self.error is None and w.failing is not None:
            self.error = f"{w.name}: {w.last_error}"

    def stats(self) -> dict[str, Any] | None:
        return self.writer.stats()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()
