"""The trail store as a sink, in this process (a writer thread) or in a
process of its own, so that building rows and SQLite's work run on the other
core instead of sharing this one's interpreter lock with the run loop.

Either way it takes the batch's shared JSON lines, so events are not encoded
a second time, and it never blocks the run loop: a batch that does not fit
its bounded queue is shed and counted.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterable
from typing import Any, TextIO

from ktrail.memory import Trimmer
from ktrail.process import Process
from ktrail.sinks.base import Batch, join
from ktrail.store.retention import Retention
from ktrail.store.schema import StoreError
from ktrail.store.writer import StoreWriter


class StoreSink:
    """The store's writer thread, in this process."""

    name = "store"
    records = False  # stats records are not part of the trail
    error: str | None = None

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.path = writer.path
        self.retention = writer.retention

    def start(self, seed: Iterable[Process] = ()) -> None:
        self.writer.start(seed)

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


# Messages from the store process: ("ready",), ("error", text, disk_full),
# ("stats", dict), ("final", dict). To it: ("seed", processes), (lines, alert
# lines) per batch, and None to finish.
_STATS_EVERY_S = 0.5
_CLOSE_TIMEOUT_S = 90.0


class StoreProcess:
    """The store's writer in a child process named `ktrail-store`.

    Batches cross as their JSON lines (bytes: no pickling of events); the
    child decodes them again, which costs it, not the run loop. Made before
    the kernel is touched, so the child holds none of the sensor's programs.
    """

    name = "store"
    records = False

    def __init__(self, path: str, retention: Retention | None = None,
                 max_bytes: int = 64 << 20, warn: TextIO = sys.stderr,
                 **writer_options: Any) -> None:
        self.path = path
        self.retention = retention or Retention()
        self.warn = warn
        self.error: str | None = None   # set when the process died: the run stops
        self.shed = 0
        self.shed_alerts = 0
        self.failed = 0                 # events submitted after it died
        self.submitted = 0              # events handed to the child
        self.unconfirmed = 0            # handed over, not reported written when it died
        self._latest: dict[str, Any] | None = None
        self._final = False
        self._closed = False
        self._warned = False
        # Plain pipes and a thread, no multiprocessing.Queue: its semaphores
        # need /dev/shm, which minimal systems and initramfs do not mount.
        mp = multiprocessing.get_context("fork")
        # The bound is on the JSON waiting to be sent, not on batches, whose
        # size follows the event rate.
        self.max_bytes = max_bytes
        self._queued_bytes = 0
        self._lock = threading.Lock()
        self._work: queue.Queue[Any] = queue.Queue()
        work_end, self._to_child = mp.Pipe(duplex=False)
        self._results, result_end = mp.Pipe(duplex=False)
        self._proc = mp.Process(target=_child, name="ktrail-store", daemon=True,
                                args=(path, self.retention, writer_options, work_end,
                                      result_end, os.getpid()))
        self._proc.start()
        work_end.close()
        result_end.close()
        # Writes to the pipe may block while the child is busy: only this
        # thread ever waits on them, never the run loop.
        self._feeder = threading.Thread(target=self._feed, name="ktrail-store-feed",
                                        daemon=True)
        self._feeder.start()
        msg = self._receive(timeout=60.0)
        if msg is None or msg[0] != "ready":
            self._proc.join(5)
            self._work.put(None)  # the feeder ends
            self._to_child.close()
            self._results.close()
            if msg is not None and msg[0] == "error":
                raise StoreError(msg[1], disk_full=msg[2])
            raise StoreError(f"store {path}: the store process did not start "
                             f"(exit code {self._proc.exitcode})")

    @property
    def pid(self) -> int | None:
        return self._proc.pid

    def start(self, seed: Iterable[Process] = ()) -> None:
        self._work.put(("seed", list(seed)))

    def queued(self) -> int:
        """Bytes of JSON handed over and not yet sent to the child."""
        return self._queued_bytes

    def _feed(self) -> None:
        while True:
            item = self._work.get()
            try:
                self._to_child.send(item)
            except (OSError, ValueError):
                return  # the child is gone: tick() reports it
            if item is None:
                return
            if item[0] != "seed":
                with self._lock:
                    self._queued_bytes -= len(item[0]) + len(item[1])

    def submit(self, batch: Batch) -> None:
        if not (batch.events or batch.alerts):
            return
        if self.error is not None:
            self.failed += len(batch.events)
            return
        item = (join(batch.lines()) if batch.events else b"",
                join(batch.alert_lines()) if batch.alerts else b"")
        size = len(item[0]) + len(item[1])
        with self._lock:
            # One batch always fits an empty queue: the bound is on what piles up.
            room = self._queued_bytes == 0 or self._queued_bytes + size <= self.max_bytes
            if room:
                self._queued_bytes += size
        if room:
            self._work.put_nowait(item)
            self.submitted += len(batch.events)
        else:
            self.shed += len(batch.events)
            self.shed_alerts += len(batch.alerts)
            if not self._warned:
                self._warned = True
                print("ktrail: warning: the store is falling behind; whole batches are not "
                      "stored (shed), counted in stats.store.shed. The output stream is "
                      "complete.", file=self.warn, flush=True)

    def tick(self) -> None:
        self._poll()
        if self.error is None and not self._proc.is_alive():
            self.error = (f"the store process (pid {self._proc.pid}) exited with code "
                          f"{self._proc.exitcode}")
            # What it had not reported written, shed or failed is counted as
            # not stored (some of it may have been committed after its last report).
            last = self._latest or {}
            self.unconfirmed = max(0, self.submitted - last.get("written", 0)
                                   - last.get("shed", 0) - last.get("failed", 0)
                                   - last.get("deleted", 0))
            print(f"ktrail: error: {self.error}; stopping", file=self.warn, flush=True)

    def stats(self) -> dict[str, Any] | None:
        self._poll()
        st = dict(self._latest or {
            "path": self.path, "written": 0, "alerts": 0, "shed": 0, "shed_alerts": 0,
            "failed": 0, "deleted": 0, "deleted_alerts": 0, "tamper": 0, "reopened": 0,
            "errors": 0, "last_error": None, "batches": 0, "pending": 0})
        st["shed"] += self.shed
        st["shed_alerts"] += self.shed_alerts
        st["failed"] += self.failed + self.unconfirmed
        st["process"] = {"pid": self._proc.pid, "alive": self._proc.is_alive(),
                         "queued_bytes": self._queued_bytes}
        return st

    def close(self) -> None:
        """Lets the child write what is queued and finish; its last counts
        arrive with it. Idempotent; bounded in time."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + _CLOSE_TIMEOUT_S
        if self._proc.is_alive():
            self._work.put(None)
            while not self._final and time.monotonic() < deadline:
                if self._receive(timeout=min(1.0, deadline - time.monotonic())) is None \
                        and not self._proc.is_alive():
                    break
        self._proc.join(max(0.0, deadline - time.monotonic()) or 1.0)
        if self._proc.is_alive():
            print(f"ktrail: warning: store {self.path}: still writing after "
                  f"{_CLOSE_TIMEOUT_S:g} s; stopped, queued events are not stored",
                  file=self.warn, flush=True)
            self._proc.kill()
            self._proc.join()
        self._to_child.close()  # a feeder still blocked on it gets an error and ends
        self._results.close()

    def _poll(self) -> None:
        if self._closed:
            return
        while self._receive(timeout=0) is not None:
            pass

    def _receive(self, timeout: float) -> tuple | None:
        try:
            if not self._results.poll(timeout):
                return None
            msg = self._results.recv()
        except (EOFError, OSError):
            return None
        if msg[0] in ("stats", "final"):
            self._latest = msg[1]
            self._final = msg[0] == "final"
        return msg


def _child(path: str, retention: Retention, options: dict[str, Any], work: Any,
           results: Any, parent: int) -> None:
    # The run loop decides when to stop: a Ctrl-C to the process group or a
    # SIGTERM must not cut the store short (the parent sends None at its end).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(15, b"ktrail-store", 0, 0, 0)  # PR_SET_NAME: `ps` tells it
    try:
        writer = StoreWriter(path, retention, **options)
    except StoreError as e:
        results.send(("error", str(e), e.disk_full))
        return
    results.send(("ready",))
    memory = Trimmer()
    last = time.monotonic()
    while True:
        try:
            item = work.recv() if work.poll(_STATS_EVERY_S) else False
        except (EOFError, OSError):
            item = None  # the sensor closed its end: keep what arrived
        if item is None:
            break
        if item is False:
            if os.getppid() != parent:
                break  # the sensor is gone without a word: keep what arrived
        elif item[0] == "seed":
            writer.start(item[1])
        else:
            lines, alert_lines = item
            # Wait for room here: the bounded queue that sheds is the sensor's,
            # which never waits.
            n = lines.count(b"\n") + alert_lines.count(b"\n")
            while not writer.has_room(n) and writer.broken is None:
                time.sleep(0.001)
            writer.submit_lines(lines, alert_lines)
        memory.tick()
        if time.monotonic() - last >= _STATS_EVERY_S:
            last = time.monotonic()
            results.send(("stats", {**writer.stats(), "memory": memory.stats()}))
    writer.close()
    results.send(("final", {**writer.stats(), "memory": memory.stats()}))
