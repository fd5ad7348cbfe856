"""Capacity: event storms at rising rates through each stage of the pipeline.

The storm generator (workloads/storm.c: prctl(PR_SET_NAME) at a paced rate,
one `prctl` event each) runs pinned to CPU 0; the pipeline runs here, pinned
to CPU 1, on the real sensor and ring. A rate counts as sustained when no
event was lost (the kernel's drop counter did not move) and the reader
caught up within LAG_LIMIT_S of the storm's end, so the ring was not merely
absorbing a backlog. CPU is this process's CPU time over the step's wall
time: the share of one core the stage needs at that rate.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from workloads import BIN

from ktrail.decode.decoder import LossTracker, decode
from ktrail.engine.builder import SensorOptions, build
from ktrail.loader.sensor import SensorConfig
from ktrail.output.formats import JsonLines
from ktrail.output.target import Stream
from ktrail.rules import DEFAULT_RULES
from ktrail.sinks.output import OutputSink

RATES = (25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 300_000, 400_000, 500_000, 750_000,
         1_000_000)
STEP_S = 2.0
LAG_LIMIT_S = 0.25
MODES = ("decode", "decode+table+json", "decode+table+rules+json")


EVENTS = frozenset({"prctl", "exec", "fork", "exit"})


class Stage:
    """One pipeline variant, built as `ktrail run` builds it (engine/builder.py):
    drain() consumes what is in the ring, returns records read."""

    def __init__(self, mode: str) -> None:
        self.null = open(os.devnull, "wb")  # noqa: SIM115 - closed in close()
        self.built = build(SensorOptions(
            sensor=SensorConfig(events=EVENTS), reader="mmap",
            rule_files=[DEFAULT_RULES] if "rules" in mode else None,
            sinks=[OutputSink(JsonLines(), Stream(self.null))]))
        self.pipeline = self.built.pipeline
        self.sensor = self.built.sensor
        self.reader = self.pipeline.reader
        self.loss = LossTracker(self.sensor.kernel_stats().seq.shape[0])
        self.drain: Callable[[], int] = self._decode_only if mode == "decode" else self._pipeline

    def _decode_only(self) -> int:
        n = 0
        while True:
            raw = self.reader.read()
            if not len(raw):
                return n
            self.loss.update(decode(raw))
            n += len(raw)

    def _pipeline(self) -> int:
        n = 0
        while k := self.pipeline.drain_once():
            n += k
        for sink in self.pipeline.sinks:
            sink.tick()
        return n

    def close(self) -> None:
        self.built.close()
        self.null.close()


def _storm(rate: int, secs: float) -> subprocess.Popen[str]:
    return subprocess.Popen([str(BIN / "storm"), str(rate), str(secs)], stdout=subprocess.PIPE,
                            text=True, preexec_fn=lambda: os.sched_setaffinity(0, {0}))


def step(stage: Stage, rate: int) -> dict[str, Any]:
    stage.drain()
    dropped0 = stage.sensor.kernel_stats().dropped_total
    t0, c0 = time.monotonic(), time.process_time()
    storm = _storm(rate, STEP_S)
    records = 0
    while storm.poll() is None:
        stage.reader.wait(0.01)
        records += stage.drain()
    end = time.monotonic()
    # Catch up: empty twice in a row (the kernel may still be submitting).
    idle = 0
    while idle < 2:
        stage.reader.wait(0.01)
        k = stage.drain()
        records += k
        idle = 0 if k else idle + 1
    t1, c1 = time.monotonic(), time.process_time()
    sent_s, secs_s = storm.communicate()[0].split()
    sent, secs = int(sent_s), float(secs_s)
    lost = stage.sensor.kernel_stats().dropped_total - dropped0
    lag = max(0.0, t1 - end - 0.02)  # less the two empty polls
    return {
        "rate_offered": rate, "rate_achieved": round(sent / secs), "sent": sent,
        "records": records, "lost": lost, "lag_s": round(lag, 3),
        "cpu_core": round((c1 - c0) / (t1 - t0), 3),
        "sustained": lost == 0 and lag <= LAG_LIMIT_S,
    }


def run(modes: tuple[str, ...] = MODES, rates: tuple[int, ...] = RATES,
        log: Callable[[str], None] = print) -> dict[str, Any]:
    if (os.cpu_count() or 1) < 2:
        raise RuntimeError("capacity needs 2 CPUs: one for the storm, one for the pipeline")
    subprocess.run(["make", "-s", "-C", str(BIN), "storm"], check=True)
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {1})
    out: dict[str, Any] = {"step_s": STEP_S, "lag_limit_s": LAG_LIMIT_S, "modes": {}}
    try:
        for mode in modes:
            stage = Stage(mode)
            steps = []
            try:
                for rate in rates:
                    s = step(stage, rate)
                    steps.append(s)
                    log(f"capacity: {mode}: {rate:,}/s offered, {s['rate_achieved']:,}/s sent, "
                        f"{s['lost']} lost, lag {s['lag_s']} s, {s['cpu_core']:.2f} core")
                    if not s["sustained"]:
                        break
            finally:
                stage.close()
            ok = [s for s in steps if s["sustained"]]
            best = max(ok, key=lambda s: s["rate_achieved"]) if ok else None
            out["modes"][mode] = {
                "steps": steps,
                "max_sustained": best["rate_achieved"] if best else 0,
                "cpu_at_max": best["cpu_core"] if best else None,
            }
    finally:
        os.sched_setaffinity(0, own)
    return out
