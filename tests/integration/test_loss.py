"""Loss is counted, never silent: stall the reader and watch the counters."""

from __future__ import annotations

import os
import signal
import subprocess


def test_stalled_reader_drops_are_counted_and_reconciled(sensor) -> None:
    s = sensor("--ring-size", "64K")
    os.kill(s.proc.pid, signal.SIGSTOP)  # the reader stops draining; the kernel must not wait
    try:
        subprocess.run(["sh", "-c", "for i in $(seq 1500); do /bin/true; done"], check=True,
                       timeout=120)
    finally:
        os.kill(s.proc.pid, signal.SIGCONT)
    t = s.stop()
    assert t.returncode == 0, t.stderr
    final = t.final
    lost = final["kernel"]["dropped_total"]
    # 1500 x (fork + exec + exit) cannot fit a 64 KiB ring: records were lost...
    assert lost > 0
    assert sum(final["kernel"]["dropped"].values()) == lost
    # ...and every one is accounted for: what the kernel numbered is exactly
    # what was read plus what it counted as dropped. The reader's own
    # sequence-gap count, blind to drops after each CPU's last record, never
    # exceeds the kernel's.
    assert final["reader"]["unreconciled"] == 0
    assert final["kernel"]["attempted"] == final["reader"]["records"] + lost
    assert 0 <= final["reader"]["seq_gaps"] <= lost
    # Past a quarter of the ring, submits woke the (stopped) reader early.
    assert final["kernel"]["forced_wakeups"] > 0
    # The operator is told on stderr while running, not only in the stats.
    assert "events lost" in t.stderr
    # What was delivered is intact: the events written match what was read.
    # Other processes may add alerts (rules on), uevents (not from the ring) and
    # usermode helpers (a second event for one exec record): left out of the sums.
    delivered = [e for e in t.events if e["evt"]["type"] != "alert"]
    assert len(delivered) == final["events_total"]
    extra = sum(final["events"].get(k, 0) for k in ("device", "usermode_helper"))
    assert final["events_total"] - extra == final["reader"]["records"]
    assert f"{lost} lost" in t.stderr
