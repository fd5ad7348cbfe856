"""The sink interface and the batch every sink is handed.

A batch is what one drain produced: the events (after the ignore lists),
the alerts the rules raised on them, and the sensor's own records (stats).
Its JSON is made once, on first use, and every sink that needs JSON shares
those bytes: one encoding per event whatever the number of sinks.
"""

from __future__ import annotations

from typing import Any, Protocol

from ktrail.output.formats import join, json_lines

__all__ = ["Batch", "Event", "Sink", "join"]

Event = dict[str, Any]


class Batch:
    __slots__ = ("_alert_lines", "_lines", "alerts", "events", "records")

    def __init__(self, events: list[Event], alerts: list[Event] | None = None,
                 records: list[Event] | None = None) -> None:
        self.events = events
        self.alerts = alerts or []
        self.records = records or []
        self._lines: list[bytes] | None = None
        self._alert_lines: list[bytes] | None = None

    def __len__(self) -> int:
        return len(self.events) + len(self.alerts) + len(self.records)

    def lines(self) -> list[bytes]:
        """Each event's JSON line (without the newline), encoded once."""
        if self._lines is None:
            self._lines = json_lines(self.events)
        return self._lines

    def alert_lines(self) -> list[bytes]:
        if self._alert_lines is None:
            self._alert_lines = json_lines(self.alerts)
        return self._alert_lines


class Sink(Protocol):
    """A destination for batches. None of its methods may block the run loop
    for long: a sink that cannot keep up sheds and counts what it sheds."""

    name: str
    records: bool  # takes the sensor's own records (stats): closed after the final one
    error: str | None  # set when the sink broke for good (its process died): the run stops

    def submit(self, batch: Batch) -> None: ...

    def tick(self) -> None:
        """Called after every drain: flush buffers, time-based work."""

    def stats(self) -> dict[str, Any] | None:
        """Its counters, reported under this sink's name in the stats record."""

    def close(self) -> None:
        """Deliver what was submitted (within the sink's own time bound), then release."""
