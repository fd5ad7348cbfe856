"""The store's writer in its own process (`ktrail-store`), with the real sensor:
it is a separate process on the machine, a Ctrl-C to the group does not cut
it short, and its death stops the sensor cleanly and is accounted for."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from sensorkit import jsonl, ktrail

pytestmark = pytest.mark.root


def store_child(sensor_pid: int) -> int:
    """The pid of the sensor's `ktrail-store` child."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == sensor_pid and comm == "ktrail-store":
                return int(entry)
        time.sleep(0.1)
    raise AssertionError(f"no ktrail-store child of {sensor_pid}")


def probe(tmp_path: Path) -> str:
    path = tmp_path / f"ktrail-probe-{uuid.uuid4().hex[:8]}"
    shutil.copy("/bin/true", path)
    return str(path)


def test_store_process_outlives_a_ctrl_c_to_the_group(sensor, tmp_path: Path) -> None:
    s = sensor()
    child = store_child(s.proc.pid)
    assert child != s.proc.pid
    exe = probe(tmp_path)
    subprocess.run([exe], check=True)
    time.sleep(0.3)
    # A Ctrl-C on a terminal reaches the whole process group, the store too.
    os.killpg(s.proc.pid, signal.SIGINT)
    s.proc.wait(timeout=60)
    assert not Path(f"/proc/{child}").exists()  # ended with the sensor
    store = s.store
    rows = jsonl(ktrail("query", "--store", store, "--format", "json", "--exe", exe,
                        "--type", "exec").stdout)
    t = s.stop()
    assert t.returncode == 0, t.stderr
    assert len(rows) == 1 and rows[0]["proc"]["exe"] == exe
    st = t.final["store"]
    # Every event after the ignore lists was written, shed or counted as failed.
    assert st["written"] + st["shed"] + st["failed"] == t.final["events_total"]
    assert st["process"]["pid"] == child and st["process"]["alive"] is False


def test_a_dead_store_process_stops_the_sensor_cleanly(sensor, tmp_path: Path) -> None:
    s = sensor()
    child = store_child(s.proc.pid)
    subprocess.run([probe(tmp_path)], check=True)
    time.sleep(0.5)
    os.kill(child, signal.SIGKILL)
    s.proc.wait(timeout=30)  # it stops by itself
    t = s.stop()
    assert t.returncode == 1, t.stderr
    assert f"the store process (pid {child}) exited with code -9" in t.stderr
    assert "stopped: store:" in t.stderr
    assert "Traceback" not in t.stderr
    final = t.final  # the final record was written all the same
    st = final["store"]
    assert st["written"] + st["shed"] + st["failed"] == final["events_total"]
    assert final["reader"]["unreconciled"] == 0
