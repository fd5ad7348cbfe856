"""Kernel boot-time nanoseconds -> wall-clock RFC 3339 strings."""

from __future__ import annotations

import time


class Clock:
    """Converts bpf_ktime_get_boot_ns() stamps to wall time.

    The offset is taken once at start; later wall-clock steps (NTP) do not
    reorder events, which keep the kernel's monotonic order.
    """

    def __init__(self) -> None:
        self.offset_ns = time.time_ns() - time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        self._sec = -1
        self._prefix = ""

    def wall_ns(self, boot_ns: int) -> int:
        return boot_ns + self.offset_ns

    def rfc3339(self, boot_ns: int) -> str:
        ns = boot_ns + self.offset_ns
        sec, frac = divmod(ns, 1_000_000_000)
        if sec != self._sec:  # strftime once per second, not per event
            self._sec = sec
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{frac:09d}Z"

    def now_boot_ns(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME)
