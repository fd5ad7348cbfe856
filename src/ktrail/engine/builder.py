"""One place that assembles a sensor from options: kernel programs, reader,
process table, enricher, rules and sinks, in the order that loses nothing.

`ktrail run`, the benchmarks and the tests all build their pipeline here, so
what is measured and tested is what runs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ktrail.engine.detect import Detector
from ktrail.engine.enrich import Enricher
from ktrail.engine.filters import IgnoreFilter
from ktrail.engine.pipeline import Pipeline, RunOptions
from ktrail.loader.sensor import Sensor, SensorConfig
from ktrail.process import ProcessTable, ProcFS, UserNames
from ktrail.sinks.base import Sink
from ktrail.sinks.store import StoreProcess, StoreSink
from ktrail.sources.ringbuf import DEFAULT_READER, READERS
from ktrail.sources.uevents import UeventSource
from ktrail.units import Clock


@dataclass
class SensorOptions:
    sensor: SensorConfig = field(default_factory=SensorConfig)
    run: RunOptions = field(default_factory=RunOptions)
    reader: str = DEFAULT_READER
    max_procs: int = 65536
    # Rules: files loaded, or a Detector already loaded (None: no detection).
    detector: Detector | None = None
    rule_files: list[str | Path] | None = None
    # Sinks made before the kernel is touched (output...), in delivery order.
    sinks: list[Sink] = field(default_factory=list)
    # The store, opened by the caller (it checks the file first); started
    # here once the process table is seeded, with what /proc showed.
    store: StoreProcess | StoreSink | None = None
    proc: ProcFS | None = None
    users: UserNames | None = None


@dataclass
class Built:
    pipeline: Pipeline
    sensor: Sensor
    seeded: int             # processes found in /proc at start
    ready_ms: float
    closers: list[Callable[[], None]]

    def close(self) -> None:
        """Releases what run() does not: the reader, uevents, the programs."""
        for close in self.closers:
            close()


def build(opts: SensorOptions, warn: TextIO = sys.stderr,
          clock: Clock | None = None) -> Built:
    """Loads and attaches the programs, then the rest. Raises SensorError
    when the kernel refuses; everything started is stopped again."""
    t0 = time.monotonic()
    detector = opts.detector
    if detector is None and opts.rule_files is not None:
        detector = Detector(opts.rule_files, warn=warn)
    sensor = Sensor(opts.sensor)
    closers: list[Callable[[], None]] = []
    try:
        sensor.start()
        reader = READERS[opts.reader](sensor.ring_fd, sensor.ring_bytes)
        closers.append(reader.close)
        table = ProcessTable(opts.proc or ProcFS(), opts.users or UserNames(),
                             max_entries=opts.max_procs)
        seeded = table.seed()  # after attach, so no process slips between the two
        sinks = list(opts.sinks)
        if opts.store is not None:
            opts.store.start(table.processes())
            sinks.append(opts.store)
        hooks = sensor.plan.hooks
        clock = clock or Clock()
        uevents = UeventSource(clock) if "device" in hooks else None
        if uevents is not None:
            closers.append(uevents.close)
        enricher = Enricher(table, clock, usermode_helpers="usermode_helper" in hooks,
                            exec_events="exec" in hooks, watch=opts.sensor.watch_paths)
        enricher.own_pids = frozenset(
            {os.getpid()} | {pid for s in sinks if (pid := getattr(s, "pid", None)) is not None})
        pipeline = Pipeline(sensor, reader, opts.reader, enricher, sinks, opts.run,
                            ignore=IgnoreFilter(opts.sensor.ignore), uevents=uevents,
                            detector=detector, warn=warn)
    except BaseException:
        for close in reversed(closers):
            close()
        sensor.close()
        raise
    closers.append(sensor.close)
    return Built(pipeline, sensor, seeded, (time.monotonic() - t0) * 1000, closers)
