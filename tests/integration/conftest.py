"""Integration tests: load the real sensor, run real programs, assert exact events.

They need root. Off CI a non-root run skips them; on CI (CI=true) that is a
failure, so a missing privilege or kernel feature can never pass as a skip.

The machine is not idle while they run (other suites, other engineers): every
assertion about events looks at the processes the test started (Trace.by_pid,
Trace.started_by) or at a path or marker it made, never at the whole trail.
Helpers that test modules import by name are in sensorkit.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sensorkit import KTRAIL, jsonl


def _need_root() -> None:
    if os.geteuid() != 0:
        msg = "integration tests load BPF programs and need root"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI=true: refusing to skip)")
        pytest.skip(msg)


@pytest.fixture(autouse=True)
def _root() -> None:
    _need_root()


@dataclass
class Trace:
    events: list[dict[str, Any]]
    stderr: str
    returncode: int
    stats: list[dict[str, Any]] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)  # whole records

    def of_type(self, etype: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["evt"]["type"] == etype]

    def execs(self, exe: str) -> list[dict[str, Any]]:
        return [e for e in self.of_type("exec") if e["proc"]["exe"] == exe]

    def by_pid(self, pid: int, etype: str | None = None) -> list[dict[str, Any]]:
        """Events of process `pid` (of type `etype` only, if given)."""
        return [e for e in self.events if (e.get("proc") or {}).get("pid") == pid
                and (etype is None or e["evt"]["type"] == etype)]

    def started_by(self, pid: int, etype: str | None = None) -> list[dict[str, Any]]:
        """Events of the processes `pid` started, directly or further down.

        By the lineage the sensor recorded, which survives reparenting: other
        processes on the machine make events too, and a test must look at its own."""
        return [e for e in self.events
                # The sensor's own tamper alerts have no process.
                if any(a["pid"] == pid for a in (e.get("proc") or {}).get("ancestors") or ())
                and (etype is None or e["evt"]["type"] == etype)]

    @property
    def final(self) -> dict[str, Any]:
        finals = [s for s in self.stats if s["final"]]
        assert len(finals) == 1, self.stderr
        return finals[0]


class Sensor:
    """A `ktrail run` subprocess, started and ready to see events.

    The store goes to a private temporary file unless `store` says otherwise
    (None: ktrail's default path), so tests never share one."""

    def __init__(self, *args: str, store: str | bool | None = True) -> None:
        # Events go to a file: a pipe nobody reads until the end would fill up
        # and block the sensor's writes.
        fd, self.out_path = tempfile.mkstemp(prefix="ktrail-test-", suffix=".jsonl")
        os.close(fd)
        self.store_dir: str | None = None
        self.store: str | None = None
        if store is True:
            self.store_dir = tempfile.mkdtemp(prefix="ktrail-test-store-")
            self.store = os.path.join(self.store_dir, "trail.db")
            args = ("--store", self.store, *args)
        elif isinstance(store, str):
            self.store = store
            args = ("--store", store, *args)
        cmd = [*KTRAIL, "run", "--format", "json", "--stats-interval", "0",
               "--output", self.out_path, *args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        self._err: list[str] = []
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode()
            if not line:
                break
            self._err.append(line)
            if "ready in" in line:
                return
        self.proc.kill()
        raise AssertionError("ktrail did not start:\n" + "".join(self._err))

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30) -> Trace:
        # Let the drain timer pick up the workload's last records first.
        time.sleep(0.3)
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        text = "".join(self._err) + err.decode()
        events, stats, beats = [], [], []
        with open(self.out_path, "rb") as f:
            out = f.read()
        os.unlink(self.out_path)
        if self.store_dir is not None:
            shutil.rmtree(self.store_dir, ignore_errors=True)
        for e in jsonl(out):
            kind = e["evt"]["type"]
            (stats if kind == "stats" else beats if kind == "heartbeat" else events).append(e)
        return Trace(events, text, self.proc.returncode, [s["stats"] for s in stats], beats)


@pytest.fixture
def sensor() -> Iterator[Callable[..., Sensor]]:
    started: list[Sensor] = []

    def start(*args: str, **kw: Any) -> Sensor:
        s = Sensor(*args, **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.proc.kill()
            s.proc.wait()
