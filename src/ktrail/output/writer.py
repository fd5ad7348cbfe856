"""The output's writer thread and its bounded queue.

A failing or stuck output must never stop auditing: the run loop only
appends encoded batches to a queue bounded in bytes, and one thread writes
them. When the queue is full (the reader of a pipe is slow, a terminal is
paused) whole batches are dropped and counted; when a write fails the output
is marked failing, said once on stderr, and what it is handed is dropped and
counted. ENOSPC and EDQUOT are often transient (logs rotate, space frees),
so a failing file or stream is tried again every `retry_s` seconds; a
broken pipe, a closed descriptor or any other error is for good.

On shutdown the thread gets `drain_s` to write what is queued; then the
rest is counted as dropped and the thread, if stuck in a write, is left
behind (it is a daemon and holds no lock the interpreter needs).
"""

from __future__ import annotations

import contextlib
import errno
import sys
import threading
import time
from collections import deque
from typing import Any, TextIO

from ktrail.output.target import Cancelled, Target

TRANSIENT = frozenset({errno.ENOSPC, errno.EDQUOT})
MAX_QUEUED_BYTES = 16 << 20
RETRY_S = 10.0
DRAIN_S = 5.0
_WRITE_CHUNK = 1 << 20  # queued batches are joined into writes of up to this


def describe(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__


class QueuedWriter:
    def __init__(self, target: Target, max_bytes: int = MAX_QUEUED_BYTES,
                 warn: TextIO | None = None, retry_s: float = RETRY_S,
                 drain_s: float = DRAIN_S, still: str = "", final: str = "") -> None:
        self.target = target
        self.name = getattr(target, "name", "output")
        self.max_bytes = max_bytes
        self.warn = warn if warn is not None else sys.stderr
        self.retry_s = retry_s
        self.drain_s = drain_s
        # What still records the trail when this output fails, for the warning.
        self.still = still or "events still go to the rules"
        # ... and when it fails for good, if that differs (nothing else: the run ends).
        self.final = final or self.still
        self.written_bytes = 0
        self.dropped_events = 0
        self.dropped_alerts = 0
        self.dropped_bytes = 0
        self.shed_batches = 0      # dropped because the queue was full
        self.errors = 0            # failed writes
        self.last_error: str | None = None
        self.failing: OSError | None = None   # the error it is failing with
        self.gone = False          # failing for good (no retry)
        self.recoveries = 0
        self._retry_at = 0.0
        self._warned: set[str] = set()
        self._queue: deque[tuple[bytes, int, int]] = deque()
        self._queued = 0
        self._inflight: tuple[int, int, int] = (0, 0, 0)
        self._cond = threading.Condition()
        self._closing = False
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="ktrail-output", daemon=True)
        self._thread.start()

    # --- the run loop's side: never waits ---------------------------------------------

    def submit(self, data: bytes, events: int = 0, alerts: int = 0) -> None:
        if not data:
            return
        with self._cond:
            if self.gone or self._closing:
                self._drop(len(data), events, alerts)
                return
            # One batch always fits an empty queue: the bound is on what piles up.
            if self._queued and self._queued + len(data) > self.max_bytes:
                self._drop(len(data), events, alerts)
                self.shed_batches += 1
                behind = self.failing is None
            else:
                self._queue.append((data, events, alerts))
                self._queued += len(data)
                self._cond.notify()
                return
        if behind:
            self._say("behind", f"output {self.name}: not keeping up ({self.max_bytes >> 20} "
                      "MiB queued); whole batches are dropped and counted in stats.output; "
                      f"{self.still}")

    def fail(self, e: OSError) -> None:
        """Marks the output failed for good before anything is written
        (stdout closed at start)."""
        with self._cond:
            self.failing = e
            self.gone = True
            self.last_error = describe(e)
        self._say("failed", f"output {self.name}: {describe(e)}; {self.final}; output "
                  "writes are dropped and counted in stats.output")

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {
                "target": self.name,
                "written_bytes": self.written_bytes,
                "dropped_events": self.dropped_events,
                "dropped_alerts": self.dropped_alerts,
                "dropped_bytes": self.dropped_bytes,
                "shed_batches": self.shed_batches,
                "errors": self.errors,
                "last_error": self.last_error,
                "failing": self.failing is not None,
                "queued_bytes": self._queued,
                "max_queued_bytes": self.max_bytes,
            }

    def close(self) -> None:
        """Lets the thread write what is queued, for drain_s at most; the rest
        is counted as dropped. Idempotent."""
        with self._cond:
            if self._closing:
                return
            self._closing = True
            self._cond.notify()
        self._thread.join(self.drain_s)
        if self._thread.is_alive():
            cancel = getattr(self.target, "cancel", None)
            if cancel is not None:
                cancel.set()  # a poll()ing write gives up within a step
            self._thread.join(1.0)
        if self._thread.is_alive():
            # Stuck in a blocking write (a paused terminal): leave it there.
            with self._cond:
                self._abandoned = True
                n, ev, al = self._inflight
                self._drop(n, ev, al)
                while self._queue:
                    data, ev, al = self._queue.popleft()
                    self._drop(len(data), ev, al)
                self._queued = 0
            self._say("stuck", f"output {self.name}: still not taking data after "
                      f"{self.drain_s:g} s at exit; what it had not taken is counted as "
                      "dropped")
            return
        with contextlib.suppress(OSError):  # written or counted already
            self.target.close()

    # --- the writer thread ------------------------------------------------------------

    def _drop(self, n: int, events: int, alerts: int) -> None:
        self.dropped_bytes += n
        self.dropped_events += events
        self.dropped_alerts += alerts

    def _say(self, key: str, text: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        with contextlib.suppress(OSError, ValueError):  # stderr gone too: stats count it
            print(f"ktrail: warning: {text}", file=self.warn, flush=True)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                parts: list[bytes] = []
                size = events = alerts = 0
                while self._queue and (not parts or size + len(self._queue[0][0])
                                       <= _WRITE_CHUNK):
                    data, ev, al = self._queue.popleft()
                    parts.append(data)
                    size += len(data)
                    events += ev
                    alerts += al
                self._queued -= size
                skip = self.failing is not None and (
                    self.gone or time.monotonic() < self._retry_at)
                if skip:
                    self._drop(size, events, alerts)
                    continue
                self._inflight = (size, events, alerts)
            try:
                self.target.write(parts[0] if len(parts) == 1 else b"".join(parts))
                self.target.flush()
            except Cancelled:
                with self._cond:
                    if not self._abandoned:
                        self._drop(size, events, alerts)
                    self._inflight = (0, 0, 0)
                continue
            except Exception as e:  # any failure: the thread goes on, counting
                with self._cond:
                    self._inflight = (0, 0, 0)
                    if not self._abandoned:
                        self._drop(size, events, alerts)
                self._failed(e if isinstance(e, OSError) else
                             OSError(errno.EIO, f"{type(e).__name__}: {e}"))
                continue
            with self._cond:
                self._inflight = (0, 0, 0)
                self.written_bytes += size
                was = self.failing
                self.failing = None
            if was is not None:
                self.recoveries += 1
                self._say(f"recovered-{was.errno}",
                          f"output {self.name}: writing again; what came meanwhile is "
                          f"counted in stats.output.dropped_events ({self.dropped_events} "
                          "so far)")

    def _failed(self, e: OSError) -> None:
        transient = e.errno in TRANSIENT and not self._closing
        with self._cond:
            self.errors += 1
            self.last_error = describe(e)
            first = self.failing is None
            self.failing = e
            self.gone = not transient
            self._retry_at = time.monotonic() + self.retry_s
        if first:
            retry = f" (tried again every {self.retry_s:g} s)" if transient else ""
            self._say(f"failed-{e.errno}",
                      f"output {self.name}: {describe(e)}; "
                      f"{self.still if transient else self.final}; output writes are "
                      f"dropped and counted in stats.output{retry}")
