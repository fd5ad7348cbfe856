"""Memory of the process table while it tracks 100k live processes.

Forking 100k real processes would need pid_max raised and ~10 GiB of
kernel memory on this VM, so the table is fed the way the enricher feeds it
(fork, then exec with a realistic argv, then the event context every traced
process gets) for 100k synthetic children of this process, and the RSS it
adds is measured. Added to the sensor's own RSS at rest (from the overhead
runs), that is the sensor's RSS with 100k processes.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

from ktrail.engine.enrich import Enricher
from ktrail.process import ProcessTable, ProcFS, UserNames
from ktrail.units import Clock


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start_ticks(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def run(n: int = 100_000) -> dict[str, Any]:
    table = ProcessTable(ProcFS(), UserNames(), max_entries=2 * n)
    table.seed()
    enricher = Enricher(table, Clock())
    me, my_start = os.getpid(), _start_ticks(os.getpid())
    gc.collect()
    before = _rss_mb()
    t0 = time.perf_counter()
    base_pid, now = 10_000_000, time.clock_gettime_ns(time.CLOCK_BOOTTIME)
    for i in range(n):
        pid = base_pid + i
        table.on_fork(me, my_start, pid, my_start + 1 + i, now)
        p = table.on_exec(pid, my_start + 1 + i, me, 1000, 1000, "worker",
                          "/usr/bin/python3",
                          ["/usr/bin/python3", "-m", "app.worker", f"--shard={i}", "--queue",
                           "jobs-high-priority", "--log-level", "info"], False, now)
        enricher._context(p, now)  # what a process's first event builds
    elapsed = time.perf_counter() - t0
    gc.collect()
    after = _rss_mb()
    stats = table.stats()
    return {
        "processes": n, "table_live": stats.get("live"), "evictions": stats.get("evictions"),
        "rss_added_mb": round(after - before, 1),
        "bytes_per_process": round((after - before) * 1024 * 1024 / n),
        "insert_rate_per_s": round(n / elapsed),
    }


if __name__ == "__main__":
    print(json.dumps(run()))
