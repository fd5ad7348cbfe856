"""What the sensor never reports (the configuration's `ignore`).

A setting of the sensor, as it is filtered in the kernel (loader/sensor.py
fills the kt_ignore_* maps from it); the configuration builds it and the
engine's IgnoreFilter drops what the kernel had to let through. It lives
in the loader so that config depends on the loader, not the reverse.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ignore:
    pids: frozenset[int] = frozenset()
    uids: frozenset[int] = frozenset()
    comms: frozenset[str] = frozenset()
    paths: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return bool(self.pids or self.uids or self.comms or self.paths)
