"""Retention: the store keeps events for a maximum age and a maximum size.

Enforced by the writer thread every `interval_s` seconds, between write
transactions, in chunks of `chunk` rows per transaction so that a large
deletion (the first start after a long pause) never holds up writing for
long: what is left over is taken at the next passes.

- Age: events and alerts older than `max_age_ns`, and processes that ended
  before it, are deleted.
- Size: when the pages in use exceed `max_bytes`, the oldest events are
  deleted until they fall under LOW_WATER of it (then alerts older than the
  oldest event kept, and processes that ended before it). Freed pages are
  reused by new rows, so the file stops growing at about `max_bytes`.
  Pages beyond `max_bytes` (the limit was lowered) or free pages beyond a
  quarter of the file (after an age deletion) are given back to the
  filesystem with `PRAGMA incremental_vacuum`.
Processes that are still running are kept whatever their age: they are the
ancestors of everything newer.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field

from ktrail.store.schema import transaction
from ktrail.units import NS

LOW_WATER = 0.9
SPARE_FREE = 0.25


@dataclass
class Retention:
    max_age_ns: int | None = 7 * 86400 * NS
    max_bytes: int | None = 1 << 30
    interval_s: float = 10.0
    chunk: int = 20000
    max_chunks: int = 10           # per pass
    deleted: dict[str, int] = field(default_factory=lambda: {
        "events": 0, "alerts": 0, "processes": 0, "contexts": 0})
    vacuumed_pages: int = 0
    passes: int = 0

    def describe(self) -> str:
        age = "no age limit" if not self.max_age_ns else f"{self.max_age_ns / NS / 86400:g} days"
        size = "no size limit" if not self.max_bytes else f"{self.max_bytes / (1 << 20):g} MiB"
        return f"{age}, {size}"

    def enforce(self, conn: sqlite3.Connection, now_ns: int | None = None) -> int:
        """One pass; returns the number of events deleted."""
        now = time.time_ns() if now_ns is None else now_ns
        self.passes += 1
        deleted = 0
        budget = self.max_chunks
        if self.max_age_ns:
            cutoff = now - self.max_age_ns
            while budget:
                budget -= 1
                n = self._delete(conn, "SELECT id FROM event_log WHERE time < ? ORDER BY time "
                                 "LIMIT ?", (cutoff, self.chunk), cutoff)
                deleted += n
                if n < self.chunk:
                    break
        if self.max_bytes and self._used_bytes(conn) > self.max_bytes:
            # Pages come back only when wholly empty: aim below the limit, so
            # that deletions come in bursts rather than at every pass.
            target = int(self.max_bytes * LOW_WATER)
            while budget and self._used_bytes(conn) > target:
                budget -= 1
                oldest_kept = conn.execute("SELECT time FROM event_log ORDER BY id LIMIT 1 "
                                           "OFFSET ?", (self.chunk,)).fetchone()
                cutoff = oldest_kept[0] if oldest_kept else now
                n = self._delete(conn, "SELECT id FROM event_log ORDER BY id LIMIT ?",
                                 (self.chunk,), cutoff)
                deleted += n
                if n == 0:
                    break
        if deleted:
            self._drop_contexts(conn)
        self._vacuum(conn)
        return deleted

    def _delete(self, conn: sqlite3.Connection, select_ids: str, params: tuple,
                cutoff: int) -> int:
        with transaction(conn):
            n = conn.execute(f"DELETE FROM event_log WHERE id IN ({select_ids})", params).rowcount
            a = conn.execute("DELETE FROM alerts WHERE time < ?", (cutoff,)).rowcount
            p = conn.execute("DELETE FROM processes WHERE end_time < ?", (cutoff,)).rowcount
        self.deleted["events"] += n
        self.deleted["alerts"] += a
        self.deleted["processes"] += p
        return n

    def _drop_contexts(self, conn: sqlite3.Connection) -> None:
        """Contexts no event refers to any more. The writer forgets its cache of
        contexts after this, so no new event points at a deleted one."""
        oldest = conn.execute("SELECT min(time) FROM event_log").fetchone()[0]
        with transaction(conn):
            n = conn.execute(
                "DELETE FROM contexts WHERE time < ? AND NOT EXISTS "
                "(SELECT 1 FROM event_log WHERE ctx = contexts.id)",
                (oldest if oldest is not None else 2**62,)).rowcount
        self.deleted["contexts"] += n

    @staticmethod
    def _pages(conn: sqlite3.Connection) -> tuple[int, int, int]:
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return count, free, size

    def _used_bytes(self, conn: sqlite3.Connection) -> int:
        count, free, size = self._pages(conn)
        return (count - free) * size

    def _vacuum(self, conn: sqlite3.Connection) -> None:
        count, free, size = self._pages(conn)
        give_back = 0
        if self.max_bytes and count * size > self.max_bytes:
            give_back = count - self.max_bytes // size
        if free > count * SPARE_FREE:
            give_back = max(give_back, free - int(count * SPARE_FREE / 2))
        give_back = min(give_back, free)
        if give_back > 0:
            conn.execute(f"PRAGMA incremental_vacuum({give_back})").fetchall()
            self.vacuumed_pages += give_back

    def stats(self) -> dict[str, int | None]:
        return {
            "max_age_s": None if not self.max_age_ns else self.max_age_ns // NS,
            "max_bytes": self.max_bytes,
            "passes": self.passes,
            "deleted_events": self.deleted["events"],
            "deleted_alerts": self.deleted["alerts"],
            "deleted_processes": self.deleted["processes"],
            "deleted_contexts": self.deleted["contexts"],
            "vacuumed_pages": self.vacuumed_pages,
        }
