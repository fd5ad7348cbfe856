"""The configuration's ignore lists filter in the kernel, not only in the output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_ignore_comm_and_path_are_filtered_in_kernel(sensor, tmp_path: Path) -> None:
    quiet = tmp_path / "quiet"
    (quiet / "deep" / "er").mkdir(parents=True)
    cfg = tmp_path / "ktrail.yaml"
    cfg.write_text(f"ignore:\n  comms: [touch]\n  paths: [{quiet}]\n")
    s = sensor("--config", str(cfg))
    touches = []
    for i in range(20):
        p = subprocess.Popen(["touch", str(tmp_path / f"by-touch-{i}")])
        assert p.wait() == 0
        touches.append(p.pid)
    code = (f"open({str(quiet / 'deep' / 'er' / 'x')!r}, 'w'); "
            f"open({str(tmp_path / 'kept')!r}, 'w')")
    subprocess.run([sys.executable, "-c", code], check=True)
    t = s.stop()
    # Other processes create files meanwhile: only this test's directory counts.
    creates = [e["file"]["path"] for e in t.of_type("create")
               if e["file"]["path"].startswith(f"{tmp_path}/")]
    assert creates == [str(tmp_path / "kept")]
    # Counted before any userspace filter, and every create counted was written:
    # none was dropped after decoding, so the kernel never sent the ignored ones.
    assert t.final["events"]["create"] == len(t.of_type("create"))
    # The process table still saw touch come and go; only its events are hidden.
    # (Before its exec, the child is still python, whose failed PATH lookups show.)
    assert not [e for e in t.events if e["proc"]["pid"] in touches
                and e["proc"]["comm"] == "touch"]
    forked = {e["fork"]["child"]["pid"] for e in t.by_pid(os.getpid(), "fork")}
    assert set(touches) <= forked
