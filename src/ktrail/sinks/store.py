"""The trail store as a sink: batches go to the store's bounded queue, which
its writer thread empties into SQLite (store/writer.py). It takes the
batch's shared JSON lines, so events are not encoded a second time."""

from __future__ import annotations

from typing import Any

from ktrail.sinks.base import Batch, join
from ktrail.store.writer import StoreWriter


class StoreSink:
    name = "store"
    records = False  # stats records are not part of the trail

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer

    def submit(self, batch: Batch) -> None:
        if batch.events or batch.alerts:
            lines = join(batch.lines()) if batch.events else None
            self.writer.submit(batch.events, batch.alerts, lines)

    def tick(self) -> None:
        pass  # the writer thread keeps its own time

    def stats(self) -> dict[str, Any] | None:
        return self.writer.stats()

    def close(self) -> None:
        self.writer.close()  # commits what is queued, so its counts are final
