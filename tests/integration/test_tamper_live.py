"""Tamper with the real sensor: stop it, stop its store process. Each is
alerted once, and the heartbeats show the silence.

Only this test's own sensor writes to its output file, and the alerts looked
at name that sensor's pids."""

from __future__ import annotations

import itertools
import os
import signal
import time
from typing import Any

import pytest
from sensorkit import jsonl
from test_store_own_process import store_child

pytestmark = pytest.mark.root


def _time_s(e: dict[str, Any]) -> float:
    # RFC 3339 with nanoseconds; the seconds within the day are enough here.
    t = e["evt"]["time"]
    h, m, s = t[11:13], t[14:16], t[17:-1]
    return int(h) * 3600 + int(m) * 60 + float(s)


def _wait_for(path: str, pred: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            found = [e for e in jsonl(f.read().rsplit(b"\n", 1)[0]) if pred(e)]
        if found:
            return found
        time.sleep(0.2)
    return []


def test_sigstop_of_the_sensor_raises_one_tamper_alert(sensor) -> None:
    s = sensor("--stall-threshold", "3", "--heartbeat-interval", "1")
    pid = s.proc.pid
    assert _wait_for(s.out_path, lambda e: e["evt"]["type"] == "heartbeat")
    os.kill(pid, signal.SIGSTOP)
    time.sleep(6)
    os.kill(pid, signal.SIGCONT)
    # Reported within seconds of resuming.
    mine = lambda e: (e["evt"]["type"] == "alert"  # noqa: E731
                      and (e.get("tamper") or {}).get("pid") == pid)
    assert _wait_for(s.out_path, mine, timeout=15)
    time.sleep(3)   # heartbeats after the stop
    t = s.stop()
    assert t.returncode == 0, t.stderr
    alerts = [e for e in t.of_type("alert") if (e.get("tamper") or {}).get("pid") == pid]
    assert len(alerts) == 1, alerts
    a = alerts[0]
    assert a["alert"]["rule"] == "Sensor stopped"
    assert a["alert"]["priority"] == "CRITICAL" and a["alert"]["mitre"] == ["T1562.001"]
    assert a["tamper"]["process"] == "sensor"
    assert 5.5 <= a["tamper"]["seconds"] < 60
    assert f"did not run for {a['tamper']['seconds']:.1f} s" in a["alert"]["output"]
    beats = t.heartbeats
    seqs = [b["heartbeat"]["seq"] for b in beats]
    assert seqs == list(range(1, len(seqs) + 1))   # none lost on the way
    times = [_time_s(b) for b in beats]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) >= 5.5                        # the silence, downstream
    after = [tm for tm in times if tm > times[gaps.index(max(gaps))]]
    assert len(after) >= 2                          # and they resumed
    assert beats[-1]["heartbeat"]["stalls"] == 1
    assert t.final["tamper"]["stalls"] == 1 and t.final["tamper"]["alerts"] == 1


def test_sigstop_of_the_store_process_raises_one_alert_while_stopped(sensor) -> None:
    s = sensor("--stall-threshold", "2", "--heartbeat-interval", "1")
    child = store_child(s.proc.pid)
    os.kill(child, signal.SIGSTOP)
    try:
        mine = lambda e: (e["evt"]["type"] == "alert"  # noqa: E731
                          and (e.get("tamper") or {}).get("pid") == child)
        # Alerted while it is still stopped: the sensor itself goes on.
        assert _wait_for(s.out_path, mine, timeout=20)
        time.sleep(3)   # still stopped: no second alert
    finally:
        os.kill(child, signal.SIGCONT)
    t = s.stop()
    assert t.returncode == 0, t.stderr
    alerts = [e for e in t.of_type("alert") if (e.get("tamper") or {}).get("pid") == child]
    assert len(alerts) == 1, alerts
    a = alerts[0]
    assert a["alert"]["rule"] == "Sensor store stopped"
    assert a["tamper"]["process"] == "store" and a["tamper"]["seconds"] >= 2
    assert t.final["tamper"]["children"]["store"] == {"pid": child, "stops": 1}
    assert t.final["tamper"]["stalls"] == 0


# PTRACE_SEIZE (0x4206) of a pid, then exit: the kernel detaches a tracer
# that exits, and a seize does not stop the tracee.
SEIZE = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
r = libc.ptrace(0x4206, int(sys.argv[1]), None, None)
print(r, ctypes.get_errno(), flush=True)
"""


def _alerts_on(t: Any, tracer: int) -> list[dict[str, Any]]:
    return [e for e in t.of_type("alert") if e["alert"]["rule"] == "Sensor traced"
            and e["proc"]["pid"] == tracer]


def test_ptrace_of_the_sensor_and_its_store_is_alerted(sensor) -> None:
    import subprocess
    import sys
    s = sensor()
    child = store_child(s.proc.pid)
    # As root: the seize works. As nobody: refused (EPERM), still an attempt.
    root = subprocess.run([sys.executable, "-c", SEIZE, str(s.proc.pid)],
                          capture_output=True, text=True, timeout=30)
    nobody = subprocess.Popen(["setpriv", "--reuid", "65534", "--regid", "65534",
                               "--clear-groups", sys.executable, "-c", SEIZE, str(child)],
                              stdout=subprocess.PIPE, text=True)
    out, _ = nobody.communicate(timeout=30)
    # A process of our own, not ktrail: a ptrace of it is no tamper.
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        other = subprocess.run([sys.executable, "-c", SEIZE, str(sleeper.pid)],
                               capture_output=True, text=True, timeout=30)
        sleeper.kill()
    assert root.stdout.split() == ["0", "0"], root
    assert out.split()[0] == "-1" and out.split()[1] == "1", out  # EPERM
    t = s.stop()
    assert t.returncode == 0, t.stderr
    by_root = _alerts_on(t, root_pid(t, s.proc.pid))
    assert len(by_root) == 1, t.of_type("alert")
    a = by_root[0]
    ev = a["alert"]["events"][0]
    assert ev["ptrace"]["target"] == {**ev["ptrace"]["target"], "pid": s.proc.pid,
                                      "is_ktrail": True}
    assert a["alert"]["priority"] == "CRITICAL" and "T1562.001" in a["alert"]["mitre"]
    assert ev["evt"]["error"] is None
    # The tracer is named with its lineage: this test's process is an ancestor.
    assert any(p["pid"] == os.getpid() for p in a["proc"]["ancestors"])
    by_nobody = _alerts_on(t, nobody.pid)
    assert len(by_nobody) == 1
    ev = by_nobody[0]["alert"]["events"][0]
    assert ev["ptrace"]["target"]["pid"] == child and ev["ptrace"]["target"]["is_ktrail"]
    assert ev["evt"]["error"] == "EPERM" and by_nobody[0]["user"]["uid"] == 65534
    # The ptrace of an ordinary process is recorded, not alerted as tamper.
    others = [e for e in t.events if e["evt"]["type"] == "ptrace"
              and e["ptrace"]["target"]["pid"] == sleeper.pid]
    assert others and not others[0]["ptrace"]["target"]["is_ktrail"]
    assert other.stdout.split() == ["0", "0"]
    assert not [e for e in t.of_type("alert") if e["alert"]["rule"] == "Sensor traced"
                and e["alert"]["events"][0]["ptrace"]["target"]["pid"] == sleeper.pid]


def root_pid(t: Any, sensor_pid: int) -> int:
    """The pid of the root tracer: the one ptrace event aimed at the sensor
    itself by a child of this test."""
    hits = [e for e in t.started_by(os.getpid(), "ptrace")
            if e["ptrace"]["target"]["pid"] == sensor_pid]
    assert len(hits) == 1, hits
    return hits[0]["proc"]["pid"]


def test_sigstop_sent_to_the_sensor_is_alerted_in_the_full_profile(sensor) -> None:
    import subprocess
    s = sensor("--profile", "full")
    stopper = subprocess.run(["kill", "-STOP", str(s.proc.pid)], check=True)
    assert stopper.returncode == 0
    time.sleep(0.5)   # well under --stall-threshold: this is about the signal
    os.kill(s.proc.pid, signal.SIGCONT)
    t = s.stop()
    assert t.returncode == 0, t.stderr
    hits = [e for e in t.started_by(os.getpid(), "alert")
            if e["alert"]["rule"] == "Sensor signalled"]
    assert len(hits) == 1, t.of_type("alert")
    ev = hits[0]["alert"]["events"][0]
    assert ev["kill"]["signal"] == "SIGSTOP" and ev["kill"]["target"]["pid"] == s.proc.pid
    assert ev["kill"]["target"]["is_ktrail"] is True and hits[0]["proc"]["comm"] == "kill"
