"""The sensor watching itself: heartbeats, stalls, and alerts on tamper.

An attacker who cannot kill the sensor outright can still stop it
(SIGSTOP, SIGTSTP, a ptrace stop, the cgroup freezer), do their work while
it is frozen, and let it go on. Nothing in the kernel is lost by that (the
ring fills and counts its drops), but no alert comes out at the time. So:

- a small `heartbeat` record goes to every sink every few seconds: a
  collector that misses one knows the sensor was silent;
- the run loop measures its own progress: when CLOCK_MONOTONIC jumped far
  beyond the loop's normal pace between two iterations, the process was not
  running, and it says so in an alert once it runs again. A system suspend
  stops CLOCK_MONOTONIC too, but not CLOCK_BOOTTIME, so it shows as a jump
  of the boot clock only and is not taken for tamper.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Event = dict[str, Any]

# The loop waits 10 ms, drains for 0.1 s at most and does its housekeeping:
# an iteration takes well under a second even on a loaded machine. Several
# seconds without one is a stop, not a slow pass.
DEFAULT_STALL_S = 5.0
DEFAULT_HEARTBEAT_S = 5.0
MITRE_IMPAIR_DEFENSES = "T1562.001"


def _boottime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass
class Stall:
    seconds: float       # how long the process did not run


class StallDetector:
    """Call `check()` once per loop iteration: it returns a Stall when the
    process was stopped since the previous call, else None."""

    def __init__(self, threshold_s: float = DEFAULT_STALL_S,
                 monotonic: Callable[[], float] = time.monotonic,
                 boottime: Callable[[], float] = _boottime) -> None:
        self.threshold_s = threshold_s
        self._mono = monotonic
        self._boot = boottime
        self._last_mono = monotonic()
        self._last_boot = boottime()
        self.stalls = 0
        self.stalled_s = 0.0        # in total
        self.longest_s = 0.0
        self.suspends = 0           # system suspends seen (not tamper)

    def reset(self) -> None:
        """After work that is allowed to take long (the final drain)."""
        self._last_mono = self._mono()
        self._last_boot = self._boot()

    def check(self) -> Stall | None:
        mono, boot = self._mono(), self._boot()
        d_mono, d_boot = mono - self._last_mono, boot - self._last_boot
        self._last_mono, self._last_boot = mono, boot
        # Suspended: the boot clock ran on while the monotonic one stood still.
        if d_boot - d_mono > self.threshold_s:
            self.suspends += 1
        if d_mono <= self.threshold_s:
            return None
        self.stalls += 1
        self.stalled_s += d_mono
        self.longest_s = max(self.longest_s, d_mono)
        return Stall(d_mono)

    def stats(self) -> dict[str, Any]:
        return {"threshold_s": self.threshold_s, "stalls": self.stalls,
                "stalled_s": round(self.stalled_s, 3), "longest_s": round(self.longest_s, 3),
                "suspends": self.suspends}


def tamper_alert(rule: str, output: str, time_value: Any, tamper: dict[str, Any],
                 proc: Event | None = None, events: list[Event] | None = None,
                 priority: str = "CRITICAL") -> Event:
    """An alert of the sensor's own making, in the shape rules give theirs
    (rules/engine.py make_alert), so every consumer treats it alike."""
    tags = ["tamper", "defense_evasion", MITRE_IMPAIR_DEFENSES]
    return {
        "evt": {"type": "alert", "time": time_value},
        "alert": {"rule": rule, "priority": priority, "tags": tags,
                  "mitre": [MITRE_IMPAIR_DEFENSES], "output": output,
                  "events": events or []},
        "tamper": tamper,
        "proc": proc,
        "user": None,
        "container": None,
    }


def stopped_alert(stall: Stall, what: str, pid: int, time_value: Any) -> Event:
    if what == "sensor":
        rule = "Sensor stopped"
        text = (f"ktrail (pid {pid}) did not run for {stall.seconds:.1f} s (stopped: "
                f"SIGSTOP, a debugger or a freezer); kernel events of that time waited "
                f"in the ring or were counted as lost")
    else:
        rule = "Sensor store stopped"
        text = (f"ktrail-store (pid {pid}) has been stopped for {stall.seconds:.1f} s "
                f"(SIGSTOP or a debugger); events not stored meanwhile are counted in "
                f"stats.store.shed")
    return tamper_alert(
        rule, text,
        time_value, {"kind": "stopped", "process": what, "pid": pid,
                     "seconds": round(stall.seconds, 3)})


def proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (after the comm, which may hold
    spaces and parentheses), or None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    end = data.rfind(b")")
    return data[end + 2:end + 3].decode("ascii", "replace") if end > 0 else None


class ChildWatch:
    """A helper process of the sensor (`ktrail-store`), checked about once a
    second: stopped (`T`) or held by a tracer (`t`) for `threshold_s` is
    tamper, alerted once per stop. Its work is already shed rather than
    waited for, so the sensor itself goes on."""

    def __init__(self, name: str, pid: int, threshold_s: float,
                 monotonic: Callable[[], float] = time.monotonic,
                 state: Callable[[int], str | None] = proc_state) -> None:
        self.name = name
        self.pid = pid
        self.threshold_s = threshold_s
        self._mono = monotonic
        self._state = state
        self._since: float | None = None
        self._alerted = False
        self.stops = 0

    def check(self) -> Stall | None:
        if not self.threshold_s:
            return None
        now = self._mono()
        if self._state(self.pid) not in ("T", "t"):
            self._since, self._alerted = None, False
            return None
        if self._since is None:
            self._since = now
        if self._alerted or now - self._since < self.threshold_s:
            return None
        self._alerted = True
        self.stops += 1
        return Stall(now - self._since)

    def stats(self) -> dict[str, Any]:
        return {"pid": self.pid, "stops": self.stops}
