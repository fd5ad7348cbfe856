"""The sensor watching itself: the stall detector and the store-process
watch with fake clocks, and heartbeats and stop alerts out of the run loop."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import cast

import orjson
from fakeproc import make_enricher
from test_output import FakeReader, FakeSensor

from ktrail.decode.decoder import RawBatch
from ktrail.engine.pipeline import Pipeline, RunOptions
from ktrail.engine.tamper import ChildWatch, StallDetector, proc_state
from ktrail.loader.sensor import Sensor
from ktrail.output.formats import JsonLines, Text
from ktrail.output.target import Stream
from ktrail.sinks.output import OutputSink


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.boot = 500.0

    def step(self, mono: float, boot: float | None = None) -> None:
        self.mono += mono
        self.boot += mono if boot is None else boot


def test_stall_detector_sees_a_stop_and_not_a_suspend() -> None:
    c = Clocks()
    d = StallDetector(3.0, monotonic=lambda: c.mono, boottime=lambda: c.boot)
    for _ in range(50):           # the normal pace, even a slow pass
        c.step(0.2)
        assert d.check() is None
    c.step(2.9)
    assert d.check() is None      # under the threshold
    c.step(10.0)                  # SIGSTOP: both clocks run on
    stall = d.check()
    assert stall is not None and stall.seconds == 10.0
    assert d.check() is None      # reported once
    c.step(0.01, boot=3600.0)     # suspended for an hour: only the boot clock moved
    assert d.check() is None
    st = d.stats()
    assert (st["stalls"], st["longest_s"], st["suspends"]) == (1, 10.0, 1)


def test_child_watch_alerts_once_per_stop() -> None:
    c = Clocks()
    state = {"s": "S"}
    w = ChildWatch("store", 42, 3.0, monotonic=lambda: c.mono, state=lambda pid: state["s"])
    assert w.check() is None
    state["s"] = "T"
    for _ in range(3):
        c.step(1.0)
        assert w.check() is None  # stopped, not yet long enough
    c.step(1.0)
    stall = w.check()
    assert stall is not None and stall.seconds == 3.0
    for _ in range(5):
        c.step(1.0)
        assert w.check() is None  # the same stop: no second alert
    state["s"] = "R"
    assert w.check() is None
    state["s"] = "t"              # held by a tracer this time
    c.step(1.0)
    w.check()
    c.step(3.0)
    assert w.check() is not None
    assert w.stats() == {"pid": 42, "stops": 2}
    assert ChildWatch("x", 1, 0, state=lambda pid: "T").check() is None  # off


def test_proc_state_reads_past_an_odd_comm() -> None:
    import os
    assert proc_state(os.getpid()) in ("R", "S")
    assert proc_state(2 ** 30) is None


def _run(tmp_path: Path, opts: RunOptions, fmt: JsonLines | Text | None = None,
         stall_after: int | None = None) -> tuple[dict, bytes]:
    out = io.BytesIO()
    p = Pipeline(cast(Sensor, FakeSensor([0, 0], {})), FakeReader([RawBatch(b"", [], [])]),
                 "mmap", make_enricher(tmp_path), [OutputSink(fmt or JsonLines(), Stream(out))],
                 opts)
    if stall_after is not None:
        # The loop's own clock jumps 12 s once, as after a SIGSTOP and SIGCONT.
        calls = [0]

        def mono() -> float:
            calls[0] += 1
            return time.monotonic() + (12.0 if calls[0] > stall_after else 0.0)
        p.stall = StallDetector(5.0, monotonic=mono, boottime=mono)
    final = p.run()
    p.sinks[0].close()
    return final, out.getvalue()


def test_heartbeats_go_out_numbered_with_the_loss_so_far(tmp_path: Path) -> None:
    final, data = _run(tmp_path, RunOptions(duration=0.5, stats_interval=0,
                                            heartbeat_interval=0.1))
    beats = [r for r in map(orjson.loads, data.splitlines())
             if r["evt"]["type"] == "heartbeat"]
    assert len(beats) >= 3
    assert [b["heartbeat"]["seq"] for b in beats] == list(range(1, len(beats) + 1))
    h = beats[0]["heartbeat"]
    assert h["lost"] == {"kernel": 0, "seq_gaps": 0, "output": 0, "store": None}
    assert h["interval_s"] == 0.1 and h["stalls"] == 0 and "time" in beats[0]["evt"]
    assert final["tamper"]["heartbeats"] == len(beats)
    _, off = _run(tmp_path, RunOptions(duration=0.3, stats_interval=0, heartbeat_interval=0))
    assert b'"type":"heartbeat"' not in off


def test_a_stop_of_the_loop_raises_one_tamper_alert(tmp_path: Path) -> None:
    final, data = _run(tmp_path, RunOptions(duration=0.3, stats_interval=0,
                                            heartbeat_interval=0.1), stall_after=5)
    alerts = [r for r in map(orjson.loads, data.splitlines()) if r["evt"]["type"] == "alert"]
    assert len(alerts) == 1
    a = alerts[0]
    assert a["alert"]["rule"] == "Sensor stopped"
    assert a["alert"]["mitre"] == ["T1562.001"]
    assert a["alert"]["priority"] == "CRITICAL"
    assert a["tamper"]["kind"] == "stopped" and 11.9 < a["tamper"]["seconds"] < 13
    assert "12." in a["alert"]["output"]
    assert final["tamper"]["stalls"] == 1 and final["tamper"]["alerts"] == 1
    _, text = _run(tmp_path, RunOptions(duration=0.3, stats_interval=0,
                                        heartbeat_interval=0.1), fmt=Text(), stall_after=5)
    lines = text.decode().splitlines()
    assert any("ALERT CRITICAL Sensor stopped [T1562.001]" in ln for ln in lines)
    assert any(ln.startswith("heartbeat  seq=1 ") for ln in lines)


def test_a_kill_or_ptrace_target_is_marked_when_it_is_ktrail(tmp_path: Path) -> None:
    import os
    e = make_enricher(tmp_path)
    mine = {"pid": os.getpid()}
    e._target({"target": mine})
    assert mine["is_ktrail"] is True
    e.own_pids = frozenset({os.getpid(), 4242})   # the builder adds ktrail-store's
    other, store, none = {"pid": 4243}, {"pid": 4242}, {"pid": None}
    for t in (other, store, none):
        e._target({"target": t})
    assert (other["is_ktrail"], store["is_ktrail"], none["is_ktrail"]) == (False, True, False)


def test_a_tamper_alert_on_a_terminal_has_no_empty_process_line() -> None:
    from ktrail.engine.tamper import Stall, stopped_alert
    line = Text().line(stopped_alert(Stall(10.23), "sensor", 1234,
                                     "2026-11-30T10:00:00.123456789Z"))
    assert line.splitlines() == [
        "!!! 10:00:00.123456 ALERT CRITICAL Sensor stopped [T1562.001]",
        "    ktrail (pid 1234) did not run for 10.2 s (stopped: SIGSTOP, a debugger or a "
        "freezer); kernel events of that time waited in the ring or were counted as lost"]


def test_replay_passes_over_heartbeat_and_stats_records() -> None:
    from ktrail.rules.trail import Trail
    lines = [b'{"evt":{"type":"heartbeat","time":"2026-11-30T10:00:00.000000000Z"},'
             b'"heartbeat":{"seq":1}}',
             b'{"evt":{"type":"stats","time":"2026-11-30T10:00:00.000000000Z"},"stats":{}}',
             b'{"evt":{"type":"heartbeat"}}']   # not a record of ours: no heartbeat object
    reported: list[str] = []
    trail = Trail(io.BytesIO(b"\n".join(lines) + b"\n"),
                  lambda n, why: reported.append(f"{n}: {why}"))
    assert list(trail) == []
    assert trail.records == 2 and reported == ["3: not a ktrail event (no proc object)"]
