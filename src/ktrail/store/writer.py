"""The store's writer: batches in from the run loop, transactions out.

The run loop hands over each drained batch (events, alerts, and the events'
JSON when the output already encoded it) with `submit`, which never blocks:
it appends to a bounded queue, or, when the queue is full, drops the whole
batch for the store and counts it (`shed`); the output stream is not
affected. A thread takes everything queued, turns it into rows and inserts
it in one transaction (executemany per table). Between transactions it
enforces retention.

Write errors never reach the run loop: a full disk, an I/O error or a
corrupt page is reported once on stderr, the batch is counted as `failed`,
and the next batches are tried again (a corrupt file stops the store for the
rest of the run). Nothing that was committed is lost by a crash or kill -9.

The file can be deleted or replaced under the writer (rm, mv): SQLite would
go on writing to the unlinked inode, and the trail would vanish at exit.
About once a second the writer compares its open file with what the path
names; when they differ it says so (a tamper signal), counts the events
that went with a deleted file as `deleted` rather than `written`, and opens
a new store at the path, so that the trail goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

import orjson

from ktrail.process import Process
from ktrail.store.retention import Retention
from ktrail.store.rows import (
    INSERT_ALERT,
    INSERT_CONTEXT,
    INSERT_EVENT,
    UPSERT_EXEC,
    UPSERT_EXIT,
    UPSERT_SEEN,
    Event,
    RowBuilder,
    seed_rows,
)
from ktrail.store.schema import StoreError, open_writer, transaction
from ktrail.strings import printable

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# SQLite's page cache (schema.CACHE_KIB, 64 MiB) stays full after a burst.
# Once this many events were written since it was last emptied and a small
# transaction shows the wave has passed, or retention deleted as many, it is
# emptied (PRAGMA shrink_memory): the next transactions read their index
# pages back from the OS's cache.
SHRINK_AFTER_EVENTS = 65536
# (events, alerts, the events' JSON lines, the alerts' JSON lines, event count,
# alert count). Events and alerts are None when only their lines were handed
# over: the writer thread decodes them itself (the store process's case).
Item = tuple[list[Event] | None, list[Event] | None, bytes | None, bytes | None, int, int]


def _error_kind(e: BaseException) -> tuple[str, bool]:
    """-> (what to tell the operator, whether the store can go on)."""
    code = getattr(e, "sqlite_errorcode", None)
    if code == sqlite3.SQLITE_FULL or (isinstance(e, OSError) and e.errno == errno.ENOSPC):
        return "disk full", True
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return f"the file is corrupt ({e})", False
    if code == sqlite3.SQLITE_READONLY:
        return f"read-only ({e})", True
    return str(e) or type(e).__name__, True


class StoreWriter:
    def __init__(self, path: str, retention: Retention | None = None,
                 max_pending: int = 32768, warn: TextIO = sys.stderr,
                 max_transaction: int = 8192, linger_s: float = 0.2,
                 housekeeping_s: float = 1.0, file_check_s: float = 1.0) -> None:
        self.path = path
        self.retention = retention or Retention()
        self.max_pending = max_pending
        self.max_transaction = max_transaction
        self.linger_s = linger_s
        self.housekeeping_s = housekeeping_s
        self.file_check_s = file_check_s
        self.warn = warn
        self._open()
        self._cv = threading.Condition()
        self._queue: deque[Item] = deque()
        self._pending = 0
        self._closing = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="ktrail-store", daemon=True)
        # Counters: events (alerts apart) written, shed when the queue was
        # full, failed on a write error.
        self.written = 0
        self.alerts_written = 0
        self.shed = 0
        self.shed_alerts = 0
        self.failed = 0
        self.errors = 0
        self.transactions = 0
        self.cache_shrinks = 0
        self._since_shrink = 0
        self.rows_s = 0.0  # time spent building rows, and in SQLite
        self.sql_s = 0.0
        self.last_error: str | None = None
        # The file deleted or replaced under the writer: how often, and what
        # was committed to a deleted file (gone with it, not `written`).
        self.tamper = 0
        self.reopened = 0
        self.deleted = 0
        self.deleted_alerts = 0
        self._broken: str | None = None
        self._warned: set[str] = set()
        self._failing = False
        self._next_retention = 0.0
        self._next_file_check = time.monotonic() + file_check_s

    def _open(self) -> None:
        """Opens the store file (creating it and its schema if needed), and
        remembers which file it is."""
        path = self.path
        self.conn, self._lock_fd = open_writer(path)
        try:
            self.boot, self.booted_ns = self._register_boot()
            next_ctx = self.conn.execute(
                "SELECT coalesce(max(id), 0) + 1 FROM contexts").fetchone()[0]
        except sqlite3.Error as e:
            self._close_files()
            what = _error_kind(e)[0]
            raise StoreError(f"store {path}: cannot write: {what}",
                             disk_full=what == "disk full") from None
        st = os.fstat(self._lock_fd)
        self._file = (st.st_dev, st.st_ino)
        self._written_here = 0   # events and alerts committed to this file
        self._alerts_here = 0
        self.rows = RowBuilder(self.boot, next_ctx)

    # ---- the run loop's side ------------------------------------------------

    def start(self, seed: Iterable[Process] = ()) -> None:
        """Records the processes found in /proc, marks those the store thought
        alive but that are gone (they exited while nothing recorded), and starts
        the writer thread."""
        rows = seed_rows(seed, self.boot, self.booted_ns)
        conn = self.conn
        try:
            with transaction(conn):
                conn.executemany(UPSERT_SEEN, rows)
                conn.execute("CREATE TEMP TABLE IF NOT EXISTS live (exec_id TEXT PRIMARY KEY)")
                conn.execute("DELETE FROM temp.live")
                conn.executemany("INSERT OR IGNORE INTO temp.live VALUES (?)",
                                 [(r[1],) for r in rows])
                # Their exit was not seen: end_time is when they were found gone,
                # exit_code and exit_signal stay null.
                conn.execute(
                    "UPDATE processes SET end_time = ? WHERE end_time IS NULL AND "
                    "(boot != ? OR exec_id NOT IN (SELECT exec_id FROM temp.live))",
                    (time.time_ns(), self.boot))
                conn.execute("DROP TABLE temp.live")
        except sqlite3.Error as e:
            self._report(e, 0)  # processes, not events: the trail is not short
        self.rows.seen.update((r[1], None) for r in rows)
        # The writer hands the GIL back and forth for every row it inserts
        # (SQLite runs without it). With the default 5 ms switch interval, a
        # busy run loop would make it wait up to 5 ms each time: measured
        # here, 20k rows took 3 s instead of 25 ms. At 1 ms it is ~50 ms.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
        self._thread.start()

    def submit(self, events: list[Event], alerts: Sequence[Event] = (),
               lines: bytes | None = None) -> bool:
        """Queues a batch for the store; False when it was shed. Never blocks.
        `lines`, when given, are the events' JSON lines as the output wrote
        them: one buffer, newline-separated, in order."""
        return self._enqueue((events, list(alerts), lines, None, len(events), len(alerts)))

    def submit_lines(self, lines: bytes, alert_lines: bytes = b"") -> bool:
        """Queues a batch given as JSON lines only (newline-ended); the writer
        thread decodes them. False when it was shed. Never blocks."""
        return self._enqueue((None, None, lines or None, alert_lines or None,
                              lines.count(b"\n"), alert_lines.count(b"\n")))

    def has_room(self, n: int) -> bool:
        return self._pending == 0 or self._pending + n <= self.max_pending

    def _enqueue(self, item: Item) -> bool:
        n = item[4] + item[5]
        if not n:
            return True
        with self._cv:
            # One batch always fits an empty queue: the bound is on what piles up.
            if self._broken is None and self.has_room(n):
                self._queue.append(item)
                self._pending += n
                self._cv.notify()
                return True
            self.shed += item[4]
            self.shed_alerts += item[5]
        if self._broken is None:
            self._warn_once("shed", "ktrail: warning: the store is falling behind; whole "
                            "batches are not stored (shed), counted in stats.store.shed. "
                            "The output stream is complete.")
        return False

    @property
    def broken(self) -> str | None:
        """Why the store is off for the rest of the run, if it is."""
        return self._broken

    @property
    def pending(self) -> int:
        return self._pending

    def close(self, timeout: float = 60.0) -> None:
        """Writes what is queued, then closes the file. Idempotent."""
        if self._closed:
            return
        with self._cv:
            self._closing = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                print(f"ktrail: warning: store {self.path}: still writing after {timeout:g} s; "
                      f"{self._pending} queued events are not stored", file=self.warn,
                      flush=True)
                return
        if self._broken is None:
            # A deletion in the last second must not be reported as stored.
            self._check_file(reopen=False)
        self._close_files()
        self._closed = True

    def stats(self) -> dict[str, Any]:
        size = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):
                size += os.stat(self.path + suffix).st_size
        return {
            "path": self.path,
            "written": self.written,
            "alerts": self.alerts_written,
            "shed": self.shed,
            "shed_alerts": self.shed_alerts,
            "failed": self.failed,
            "deleted": self.deleted,
            "deleted_alerts": self.deleted_alerts,
            "tamper": self.tamper,
            "reopened": self.reopened,
            "errors": self.errors,
            "last_error": self.last_error,
            "batches": self.transactions,
            "cache_shrinks": self.cache_shrinks,
            "busy_s": {"rows": round(self.rows_s, 3), "sqlite": round(self.sql_s, 3)},
            "pending": self._pending,
            "max_pending": self.max_pending,
            "bytes": size,
            "retention": self.retention.stats(),
        }

    # ---- the writer thread --------------------------------------------------

    def _run(self) -> None:
        while True:
            items: list[Item] = []
            taken = 0
            with self._cv:
                if not self._queue and not self._closing:
                    self._cv.wait(self.housekeeping_s)
                # Gather up to max_transaction events, waiting up to linger_s
                # for more: each commit rewrites every index page it touched,
                # so small transactions cost several times more per event.
                deadline = time.monotonic() + self.linger_s
                while True:
                    while self._queue and taken < self.max_transaction:
                        item = self._queue.popleft()
                        items.append(item)
                        taken += item[4] + item[5]
                    left = deadline - time.monotonic()
                    if (not items or taken >= self.max_transaction or self._closing
                            or left <= 0):
                        break
                    self._cv.wait(left)
                self._pending -= taken
                done = self._closing and not self._queue
            if items:
                self._write(items)
                if taken < self.max_transaction // 8:
                    self._shrink_cache()
            if done:
                break
            self._housekeeping()

    def _write(self, items: list[Item]) -> None:
        n_events = sum(i[4] for i in items)
        n_alerts = sum(i[5] for i in items)
        if self._broken is not None:
            self.failed += n_events
            return
        conn = self.conn
        try:
            event_rows: list[tuple] = []
            contexts: list[tuple] = []
            seen: list[tuple] = []
            execs: list[tuple] = []
            exits: list[tuple] = []
            alert_rows: list[tuple] = []
            t_rows = time.perf_counter()
            now = time.time_ns()
            loads = orjson.loads
            for events, alerts, lines, alert_lines, n, na in items:
                if alerts is None:
                    alerts = ([loads(b) for b in alert_lines.split(b"\n", na)[:na]]
                              if alert_lines else [])
                if events is None:
                    r, cx, s, x, q = self.rows.lines(lines or b"", n)
                else:
                    r, cx, s, x, q = self.rows.events(events, lines)
                event_rows += r
                contexts += cx
                seen += s
                execs += x
                exits += q
                if alerts:
                    alert_rows += self.rows.alerts(alerts, now)
            t_sql = time.perf_counter()
            self.rows_s += t_sql - t_rows
            with transaction(conn):
                if contexts:
                    conn.executemany(INSERT_CONTEXT, contexts)
                conn.executemany(INSERT_EVENT, event_rows)
                if seen:
                    conn.executemany(UPSERT_SEEN, seen)
                if execs:
                    conn.executemany(UPSERT_EXEC, execs)
                if exits:
                    conn.executemany(UPSERT_EXIT, exits)
                if alert_rows:
                    conn.executemany(INSERT_ALERT, alert_rows)
            self.sql_s += time.perf_counter() - t_sql
        except Exception as e:  # whatever it is, the sensor goes on
            self.rows.forget()
            self._report(e, n_events)
            return
        self.rows.compact()
        self._since_shrink += n_events
        self.written += n_events
        self.alerts_written += n_alerts
        self._written_here += n_events
        self._alerts_here += n_alerts
        self.transactions += 1
        if self._failing:
            self._failing = False
            self._warned.discard("error")
            print(f"ktrail: store {self.path}: writing again ({self.failed} events were not "
                  "stored)", file=self.warn, flush=True)

    def _shrink_cache(self) -> None:
        if self._since_shrink < SHRINK_AFTER_EVENTS or self._broken is not None:
            return
        self._since_shrink = 0
        try:
            self.conn.execute("PRAGMA shrink_memory")
            self.cache_shrinks += 1
        except sqlite3.Error as e:
            self._report(e, 0)

    def _housekeeping(self) -> None:
        now = time.monotonic()
        if self._broken is None and now >= self._next_file_check:
            self._next_file_check = now + self.file_check_s
            self._check_file()
        if self._broken is not None or now < self._next_retention:
            return
        self._next_retention = now + self.retention.interval_s
        try:
            before = self.retention.deleted["contexts"]
            events_before = self.retention.deleted["events"]
            self.retention.enforce(self.conn)
            if self.retention.deleted["contexts"] != before:
                self.rows.contexts.clear()  # none may point at a deleted row
            if self.retention.deleted["events"] - events_before >= SHRINK_AFTER_EVENTS:
                # A large deletion filled the page cache with pages of the past.
                self._since_shrink = SHRINK_AFTER_EVENTS
                self._shrink_cache()
        except Exception as e:  # retention rolled its transaction back
            self._report(e, 0)

    def _check_file(self, reopen: bool = True) -> None:
        """Is the path still the file being written? If it was deleted (no
        links left) or the path now names another file, or nothing: warn,
        count, and open a new store at the path (`reopen`)."""
        try:
            mine = os.fstat(self._lock_fd)
        except OSError:
            return
        try:
            st = os.stat(self.path)
            there: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except FileNotFoundError:
            there = None
        except OSError:
            return  # cannot tell (a directory made unreadable): nothing to act on
        if there == self._file and mine.st_nlink > 0:
            return
        self.tamper += 1
        gone = mine.st_nlink == 0
        if gone:
            # Committed to a file no name reaches: gone with it.
            lost, lost_alerts = self._written_here, self._alerts_here
            self.written -= lost
            self.alerts_written -= lost_alerts
            self.deleted += lost
            self.deleted_alerts += lost_alerts
            also = " and the path given to another file" if there else ""
            alerts = f" and {lost_alerts} alerts" if lost_alerts else ""
            what = (f"the file was deleted{also} while the sensor was writing it: the {lost} "
                    f"events{alerts} stored in it are gone")
        else:
            what = ("the file was moved away or renamed (its events are still in it, under "
                    "its new name)" if there is None else
                    "the path was given to another file (the one written so far is still "
                    "linked elsewhere)")
        self.last_error = "store file deleted" if gone else "store file moved or replaced"
        then = "The sensor is stopping"
        if reopen:
            then = self._reopen()
        # Each time, up to a point (the counters say the rest); the store
        # going off is always said.
        if self.tamper <= 10 or self._broken is not None:
            print(f"ktrail: warning: store {self.path}: {what}. This may be tampering. {then}; "
                  "counted in stats.store.tamper and stats.store.deleted.", file=self.warn,
                  flush=True)

    def _reopen(self) -> str:
        """A new store at the path, after the old file went; -> what happened."""
        # Empty the -wal into the old file first: SQLite leaves the WAL of a
        # moved file at the old name, and a new store there would replay it.
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.rows.forget()
        self._close_files()
        try:
            self._open()
        except StoreError as e:
            self._broken = "cannot open a new store file"
            self.last_error = self._broken
            self._warned.add("broken")
            return (f"No new store can be opened there ({e}); the store is off for the rest "
                    "of this run (the output stream goes on)")
        self.reopened += 1
        return "A new store is created at the path and the trail goes on"

    def _report(self, e: BaseException, lost: int) -> None:
        what, can_go_on = _error_kind(e)
        self.errors += 1
        self.failed += lost
        self.last_error = what
        self._failing = True
        if not can_go_on:
            self._broken = what
            self._warn_once("broken", f"ktrail: warning: store {self.path}: {what}; the store "
                            "is off for the rest of this run (the output stream goes on). "
                            "Move the file away; the next start creates a new one.")
            return
        self._warn_once("error", f"ktrail: warning: store {self.path}: {what}: events are "
                        "not being stored, counted in stats.store.failed; the output stream "
                        "goes on")

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(printable(text), file=self.warn, flush=True)  # it may quote a path

    def _register_boot(self) -> tuple[int, int]:
        try:
            with open(BOOT_ID_PATH) as f:
                boot_id = f.read().strip()
        except OSError:
            boot_id = "unknown"
        booted = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        conn = self.conn
        conn.execute("INSERT INTO boots (boot_id, booted) VALUES (?, ?) "
                     "ON CONFLICT (boot_id) DO NOTHING", (boot_id, booted))
        row = conn.execute("SELECT id, booted FROM boots WHERE boot_id = ?",
                           (boot_id,)).fetchone()
        return row[0], row[1]

    def _close_files(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error:
            pass  # a file deleted under it: nothing left to keep
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
