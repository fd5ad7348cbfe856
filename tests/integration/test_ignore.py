"""The configuration's ignore lists filter in the kernel, not only in the output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_ignore_comm_and_path_are_filtered_in_kernel(sensor, tmp_path: Path) -> None:
    quiet = tmp_path / "quiet"
    (quiet / "deep" / "er").mkdir(parents=True)
    cfg = tmp_path / "ktrail.yaml"
    cfg.write_text(f"ignore:\n  comms: [touch]\n  paths: [{quiet}]\n")
    s = sensor("--config", str(cfg))
    for i in range(20):
        subprocess.run(["touch", str(tmp_path / f"by-touch-{i}")], check=True)
    code = (f"open({str(quiet / 'deep' / 'er' / 'x')!r}, 'w'); "
            f"open({str(tmp_path / 'kept')!r}, 'w')")
    subprocess.run([sys.executable, "-c", code], check=True)
    t = s.stop()
    creates = [e["file"]["path"] for e in t.of_type("create")]
    assert creates == [str(tmp_path / "kept")]
    # Counted before any userspace filter: the kernel never sent the others.
    assert t.final["events"]["create"] == 1
    # The process table still saw touch come and go; only its events are hidden.
    assert not [e for e in t.events if e["proc"]["comm"] == "touch"]
