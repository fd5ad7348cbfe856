"""Health under load: stats records keep their interval while a flood saturates
the pipeline, and memory taken by a burst of processes is given back."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

pytestmark = pytest.mark.root

# prctl(PR_SET_NAME) is one cheap syscall and one `prctl` event in the default
# profile: a Python loop of them makes events far faster than the ~50k/s the
# pipeline enriches, so the ring fills and events are lost.
FLOOD = """
import ctypes, sys, time
libc = ctypes.CDLL(None)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(1000):
        libc.prctl(15, b"h12-flood", 0, 0, 0)
"""


def test_stats_records_stay_on_time_under_a_flood(sensor) -> None:
    interval = 2.0
    # --comm: the output keeps only the stats records (the pipeline and the
    # store still take every event), so a 100 MB rotation cannot hide them.
    s = sensor("--stats-interval", str(interval), "--ring-size", "1M",
               "--comm", "h12-no-such-comm")
    subprocess.run([sys.executable, "-c", FLOOD, "10"], check=True, timeout=60)
    t = s.stop()
    assert t.returncode == 0, t.stderr
    running = [st for st in t.stats if not st["final"]]
    # Records made while the reader had work every time it looked: the first
    # is due `interval` after start, then one each interval. Loss also emits
    # one at once, which only shortens a gap. Generous bounds for a loaded
    # 2-vCPU machine: no gap over twice the interval.
    times = [0.0, *sorted(st["uptime_s"] for st in running), t.final["uptime_s"]]
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
    assert times[1] <= interval + 2, gaps
    assert max(gaps) <= 2 * interval, gaps
    # The flood did saturate the pipeline, and the operator saw it while it ran.
    assert t.final["kernel"]["dropped_total"] > 0
    assert any(st["kernel"]["dropped_total"] > 0 for st in running), gaps


# A burst of short-lived processes: each fork()s a child that execs a tiny
# static program with its own argument (so each has its own argv, context
# and store rows) and exits. Two workers, so both CPUs are kept busy.
BURST_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv)
{
	long n = atol(argv[1]);
	for (int w = 0; w < 2; w++) {
		if (fork() == 0) {
			char arg[32];
			for (long i = w; i < n; i += 2) {
				snprintf(arg, sizeof arg, "h12-burst-%ld", i);
				pid_t p = vfork();
				if (p == 0) {
					execl(argv[2], "h12-nop", arg, (char *)0);
					_exit(127);
				}
				waitpid(p, NULL, 0);
			}
			_exit(0);
		}
	}
	while (wait(NULL) > 0)
		;
	return 0;
}
"""
# exit(0) with no libc: the cheapest program to exec.
NOP_C = 'void _start(void) { __asm__ volatile("mov $60, %eax\\n xor %edi, %edi\\n syscall"); }\n'
BURST = 50_000
MB = 1 << 20


def _compile(tmp_path: Path) -> tuple[str, str]:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (scripts/setup.sh installs gcc)"
    (tmp_path / "burst.c").write_text(BURST_C)
    (tmp_path / "nop.c").write_text(NOP_C)
    subprocess.run([cc, "-O2", "-o", str(tmp_path / "burst"), str(tmp_path / "burst.c")],
                   check=True)
    subprocess.run([cc, "-O2", "-static", "-nostdlib", "-o", str(tmp_path / "nop"),
                    str(tmp_path / "nop.c")], check=True)
    return str(tmp_path / "burst"), str(tmp_path / "nop")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _store_pid(sensor_pid: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(sensor_pid), "-x", "ktrail-store"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert len(out) == 1, out
    return int(out[0])


def _last_stats(path: str) -> dict[str, Any] | None:
    last = None
    with open(path, "rb") as f:
        for line in f:
            if line.startswith(b'{"evt":{"type":"stats"'):
                last = line
    return None if last is None else orjson.loads(last)["stats"]


def test_memory_is_given_back_after_a_burst_of_processes(sensor, tmp_path: Path) -> None:
    burst, nop = _compile(tmp_path)
    # --comm: only the stats records reach the output (the table, the rules
    # and the store take every event); they tell when the store is done.
    s = sensor("--stats-interval", "1", "--comm", "h12-no-such-comm")
    store = _store_pid(s.proc.pid)
    time.sleep(3)
    before = (_rss(s.proc.pid), _rss(store))
    subprocess.run([burst, str(BURST), nop], check=True, timeout=600)
    burst_end = time.monotonic()
    # Wait for the wave to pass: exited processes linger 5 s in the table,
    # and the store must have written (or shed) all it was handed.
    deadline = burst_end + 120
    st = None
    while True:
        time.sleep(1)
        assert s.proc.poll() is None, s.stop().stderr
        assert time.monotonic() < deadline, st and (
            st["store"]["pending"], st["store"]["process"], st["proc_table"])
        st = _last_stats(s.out_path)
        # Other processes on the machine keep making a few events.
        done = st is not None and (
            st["store"]["pending"] < 1000 and st["store"]["process"]["queued_bytes"] < MB
            and st["proc_table"]["exited"] < 1000)
        if done and time.monotonic() > burst_end + 10:
            break
    # Memory comes back within a few trims (every 5 s at most) and once the
    # store has emptied SQLite's page cache after the wave: up to 30 s more.
    # The sensor's bound is wider: the machine is never idle, and a busy
    # reader holds a ring's worth of records and their JSON in flight.
    # (Before the fix they kept ~150 and ~330-460 MB more after 50k processes.)
    # The store's bound leaves room for SQLite's 64 MiB page cache: in one
    # full-suite run it was not yet emptied (+105 MB); alone, +31-35 MB.
    bounds = (96, 128)
    settle = time.monotonic() + 30
    while True:
        time.sleep(1)
        after = (_rss(s.proc.pid), _rss(store))
        grown = [round((a - b) / MB) for a, b in zip(after, before, strict=True)]
        if all(g <= m for g, m in zip(grown, bounds, strict=True)):
            break
        if time.monotonic() > settle:
            break
    t = s.stop()
    assert t.returncode == 0, t.stderr
    execs = t.final["events"]["exec"]
    assert execs >= BURST // 2, t.final["events"]  # the burst was seen (minus losses)
    print(f"burst of {BURST}: RSS before {before}, after {after}, grown MB {grown}")
    assert grown[0] <= bounds[0], (before, after, grown)
    assert grown[1] <= bounds[1], (before, after, grown)
    # The contexts of the dead went with them.
    assert st is not None and st["proc_table"]["contexts"] < 1000, st["proc_table"]
    # Memory is in the stats records, for both processes.
    assert t.final["memory"]["rss_bytes"] > 0
    assert t.final["store"]["memory"]["rss_bytes"] > 0
