"""The run loop: sources -> decode -> enrich -> ignore -> detect -> sinks, plus
self-telemetry.

The reader sleeps on the ring's epoll with a short timeout (the kernel only
wakes it past a fill threshold), copies out everything present, and hands it
on in chunks, looking at the clock between them: under a flood the loop still
ticks the sinks, checks loss and writes stats records on time.

Loss is never silent: kernel drop counters and the reader's own sequence-gap
count are reported in stats records, a warning goes to stderr as soon as loss
appears, and the final record reconciles the two.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from ktrail.decode.decoder import LossTracker, RawBatch, decode
from ktrail.engine.detect import Detector
from ktrail.engine.enrich import Enricher, Event
from ktrail.engine.filters import IgnoreFilter
from ktrail.engine.tamper import (
    DEFAULT_HEARTBEAT_S,
    DEFAULT_STALL_S,
    ChildWatch,
    StallDetector,
    stopped_alert,
)
from ktrail.loader.sensor import KernelStats, Sensor
from ktrail.memory import Trimmer
from ktrail.sinks.base import Batch, Sink
from ktrail.sources.uevents import UeventSource

# Records decoded and enriched in one step. A read copies out all the ring
# holds (8 MiB by default: ~80k records, seconds of enrichment); the loop must
# look at the clock between steps, or stats records stop under a flood.
CHUNK_RECORDS = 4096


def chunks(raw: RawBatch, n: int = CHUNK_RECORDS) -> list[RawBatch]:
    """`raw` cut into batches of at most `n` records, sharing its buffer."""
    if len(raw) <= n:
        return [raw]
    return [RawBatch(raw.buf, raw.offsets[i:i + n], raw.lengths[i:i + n])
            for i in range(0, len(raw), n)]


class Reader(Protocol):
    size: int

    def wait(self, timeout_s: float) -> None: ...
    def read(self) -> RawBatch: ...
    def close(self) -> None: ...


@dataclass
class RunOptions:
    duration: float | None = None
    drain_interval: float = 0.01     # seconds between drains when no wakeup comes
    stats_interval: float = 60.0     # 0: only at exit (and when loss appears)
    loss_check_interval: float = 1.0
    # Longest the loop drains before its housekeeping (sink ticks, loss
    # checks, stats records, a stop request): health records stay on time
    # while the reader always has work.
    drain_budget: float = 0.1
    # A small record through every sink this often, so that silence shows
    # downstream; 0: none.
    heartbeat_interval: float = DEFAULT_HEARTBEAT_S
    # The loop not running for this long is a stop (SIGSTOP, a debugger, a
    # freezer) and raises a tamper alert; 0: not checked.
    stall_threshold: float = DEFAULT_STALL_S


class Pipeline:
    def __init__(
        self,
        sensor: Sensor,
        reader: Reader,
        reader_name: str,
        enricher: Enricher,
        sinks: list[Sink],
        options: RunOptions,
        ignore: IgnoreFilter | None = None,
        uevents: UeventSource | None = None,
        detector: Detector | None = None,
        warn: TextIO = sys.stderr,
    ) -> None:
        self.sensor = sensor
        self.reader = reader
        self.reader_name = reader_name
        self.enricher = enricher
        self.sinks = sinks
        self.ignore = ignore
        self.uevents = uevents
        self.detector = detector
        self.options = options
        self.warn = warn
        self.clock = enricher.clock
        self.loss = LossTracker(sensor.kernel_stats().seq.shape[0])
        self.batches = 0
        self.malformed = 0
        self.stopping = False
        self.error: str | None = None  # why the run stopped by itself, if it did
        self._started = time.monotonic()
        self._reported_drops = 0
        # Read but not yet decoded: at most one ring's worth, as the ring is
        # read again only once this is empty.
        self._pending: deque[RawBatch] = deque()
        self.chunk_records = CHUNK_RECORDS
        self.memory = Trimmer()
        self.heartbeats = 0
        self.tamper_alerts = 0
        self.stall = StallDetector(options.stall_threshold or float("inf"))
        # Helper processes (the store's) watched for being stopped.
        self.children = [ChildWatch(s.name, pid, options.stall_threshold)
                         for s in sinks if (pid := getattr(s, "pid", None)) is not None]

    def stop(self, *_: Any) -> None:
        """Signal-safe: the loop notices within one drain interval."""
        self.stopping = True

    def drain_once(self) -> int:
        if not self._pending:
            raw = self.reader.read()
            if not len(raw):
                return 0
            self._pending.extend(chunks(raw, self.chunk_records))
        raw = self._pending.popleft()
        batch = decode(raw)
        self.batches += 1
        self.malformed += batch.malformed
        self.loss.update(batch)
        self._deliver(self.enricher.process(batch))
        return len(raw)

    def _deliver(self, events: list[Event]) -> None:
        if self.ignore is not None:
            events = self.ignore.apply(events)
        # Rules see every event; the output's filters are for the reader.
        alerts = self.detector.process(events) if self.detector is not None else []
        if events or alerts:
            batch = Batch(events, alerts)
            for sink in self.sinks:
                sink.submit(batch)

    def drain(self, until: float | None = None) -> None:
        """Everything the ring holds, or what fits before monotonic time `until`."""
        while self.drain_once():
            if until is not None and time.monotonic() >= until:
                break
        if self.uevents is not None:
            devices = self.uevents.drain()
            if devices:
                self.enricher.count(devices)
                self._deliver(devices)

    def run(self) -> dict[str, Any]:
        opts = self.options
        deadline = None if opts.duration is None else time.monotonic() + opts.duration
        next_stats = time.monotonic() + opts.stats_interval if opts.stats_interval else None
        next_check = time.monotonic() + opts.loss_check_interval
        next_beat = time.monotonic() if opts.heartbeat_interval else None
        self.stall.reset()
        try:
            while not self.stopping:
                stall = self.stall.check()
                if stall is not None:
                    self._tamper(stopped_alert(stall, "sensor", os.getpid(),
                                               self.clock.time(self.clock.now_boot_ns())))
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                # Chunks of the last read still to do: no sleep.
                timeout = 0.0 if self._pending else opts.drain_interval
                if deadline is not None:
                    timeout = max(0.0, min(timeout, deadline - now))
                self.reader.wait(timeout)
                det = self.detector
                if det is not None and (det.reload_wanted or det.reloading):
                    # Starts a reload, or switches to its rules once compiled:
                    # what was read before the switch met the old rules.
                    det.maybe_reload()
                self.drain(until=time.monotonic() + opts.drain_budget)
                for sink in self.sinks:
                    sink.tick()
                    if sink.error is not None:
                        # A part of the sensor died: stop cleanly, with what it had.
                        self.error = f"{sink.name}: {sink.error}"
                        self.stopping = True
                now = time.monotonic()
                if now >= next_check:
                    next_check = now + opts.loss_check_interval
                    self.enricher.tick()
                    self.memory.tick()
                    self.sensor.tick()
                    self._check_loss()
                    self._watch_children()
                if next_beat is not None and now >= next_beat:
                    # Not on a grid: after a stop, one record now, then the pace.
                    next_beat = now + opts.heartbeat_interval
                    self._emit_heartbeat()
                if next_stats is not None and now >= next_stats:
                    # On the interval's grid, so lateness does not add up.
                    next_stats += opts.stats_interval
                    if next_stats <= now:
                        next_stats = now + opts.stats_interval
                    self._emit_stats()
        finally:
            if self.detector is not None:
                self.detector.close()   # a reload in flight is abandoned
            # Flush what the kernel already handed over, then account for it all:
            # a loss in the last moments is warned about like any other. The
            # final record is reconciled against a snapshot of the kernel's
            # counters taken before the last drain: other processes keep
            # making events meanwhile, and those are not losses.
            snapshot = self.sensor.kernel_stats()
            self.loss.cutoff = snapshot.seq
            self.drain()
            # Sinks that take no records (the store) finish first, so the
            # final record has their final counts.
            for sink in self.sinks:
                if not sink.records:
                    sink.close()
            self._check_loss(emit=False)
            final = self._emit_stats(ks=snapshot, final=True)
            for sink in self.sinks:
                if sink.records:
                    sink.close()
        return final

    def _check_loss(self, emit: bool = True) -> None:
        ks = self.sensor.kernel_stats()
        if ks.dropped_total > self._reported_drops:
            new = ks.dropped_total - self._reported_drops
            self._reported_drops = ks.dropped_total
            print(
                f"ktrail: warning: {new} events lost (ring buffer full, reader behind); "
                f"{ks.dropped_total} in total. Counts are in the stats records.",
                file=self.warn,
                flush=True,
            )
            if emit:
                self._emit_stats(ks=ks)

    def _tamper(self, alert: Event) -> None:
        """A tamper alert of the sensor's own, through every sink."""
        self.tamper_alerts += 1
        batch = Batch([], [alert])
        for sink in self.sinks:
            sink.submit(batch)

    def _watch_children(self) -> None:
        for w in self.children:
            stall = w.check()
            if stall is not None:
                self._tamper(stopped_alert(stall, w.name, w.pid,
                                           self.clock.time(self.clock.now_boot_ns())))

    def _emit_heartbeat(self) -> None:
        """Cheap: counters the loop already keeps, and one read of the
        kernel's per-CPU counters."""
        self.heartbeats += 1
        sinks = {s.name: s for s in self.sinks}
        out = sinks.get("output")
        store = sinks.get("store")
        ost = out.stats() if out is not None else None
        sst = store.stats() if store is not None else None
        beat = {
            "seq": self.heartbeats,
            "interval_s": self.options.heartbeat_interval,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "pid": os.getpid(),
            "events_total": sum(self.enricher.counts.values()),
            "lost": {
                "kernel": self.sensor.kernel_stats().dropped_total,
                "seq_gaps": self.loss.gaps,
                "output": None if ost is None else ost.get("dropped_events"),
                "store": None if sst is None else sst["shed"] + sst["failed"],
            },
            "stalls": self.stall.stalls,
            "tamper_alerts": self.tamper_alerts,
        }
        record = Batch([], records=[{"evt": {"type": "heartbeat",
                                             "time": self.clock.time(self.clock.now_boot_ns())},
                                     "heartbeat": beat}])
        for sink in self.sinks:
            if sink.records:
                sink.submit(record)

    def stats(self, ks: KernelStats | None = None, final: bool = False) -> dict[str, Any]:
        ks = ks or self.sensor.kernel_stats()
        enricher = self.enricher
        table = enricher.table
        sinks = {s.name: s for s in self.sinks}
        out: dict[str, Any] = {
            "final": final,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "events_total": sum(enricher.counts.values()),
            "events": dict(enricher.counts),
            "output_events": getattr(sinks.get("output"), "written", 0),
            "kernel": {
                "attempted": int(ks.seq.sum()),
                "dropped": ks.dropped_by_type(),
                "dropped_total": ks.dropped_total,
                "forced_wakeups": ks.forced_wakeups,
            },
            "reader": {
                "kind": self.reader_name,
                "records": self.loss.seen,
                "seq_gaps": self.loss.gaps,
                "malformed": self.malformed,
                "refused": enricher.malformed,
                "batches": self.batches,
                "ring_bytes": self.reader.size,
            },
            "proc_table": {**table.stats(), **enricher.context_stats()},
            "devices": None if self.uevents is None else {
                "events": self.uevents.count, "overflows": self.uevents.overflows},
            "users": table.users.stats(),
            "memory": self.memory.stats(),
            "detection": None if self.detector is None else self.detector.stats(),
            "store": None,
            "tamper": {**self.stall.stats(), "heartbeats": self.heartbeats,
                       "alerts": self.tamper_alerts,
                       "children": {w.name: w.stats() for w in self.children}},
        }
        for name, sink in sinks.items():
            st = sink.stats()
            if st is not None:
                out[name] = st
        if final:
            # After the last drain every record the kernel numbered was either
            # read or counted as dropped; anything else is unexplained loss.
            # (seq_gaps is a lower bound while running: a drop shows as a gap
            # only once a later record from the same CPU arrives.)
            out["reader"]["records"] = self.loss.seen - self.loss.late
            out["reader"]["after_snapshot"] = self.loss.late
            out["reader"]["unreconciled"] = (
                int(ks.seq.sum()) - (self.loss.seen - self.loss.late) - self.malformed
                - ks.dropped_total
            )
        return out

    def _emit_stats(self, ks: KernelStats | None = None, final: bool = False) -> dict[str, Any]:
        s = self.stats(ks, final)
        now = self.clock.now_boot_ns()
        record = Batch([], records=[{"evt": {"type": "stats", "time": self.clock.time(now)},
                                     "stats": s}])
        for sink in self.sinks:
            if sink.records:
                sink.submit(record)
        return s
