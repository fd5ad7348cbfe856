"""`ktrail run` outputs: fallback reader, rotated files, terminal text, filters."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import time
from pathlib import Path

from sensorkit import KTRAIL, jsonl


def test_libbpf_reader_fallback_sees_the_same_events(sensor) -> None:
    s = sensor("--reader", "libbpf")
    p = subprocess.Popen(["sh", "-c", "/bin/echo a b c >/dev/null; exit 3"])
    p.wait()
    t = s.stop()
    assert t.final["reader"]["kind"] == "libbpf"
    [echo] = [e for e in t.execs("/bin/echo") if e["proc"]["ppid"] == p.pid]
    assert echo["proc"]["args"] == ["/bin/echo", "a", "b", "c"]
    [sh_exit] = [e for e in t.of_type("exit") if e["proc"]["pid"] == p.pid]
    assert sh_exit["exit"]["code"] == 3
    assert t.final["reader"]["unreconciled"] == 0


def test_output_file_rotates_by_size(tmp_path: Path) -> None:
    out = tmp_path / "trail.jsonl"
    ktrail = subprocess.Popen(
        [*KTRAIL, "run", "--format", "json", "--output", str(out),
         "--store", str(tmp_path / "store" / "trail.db"), "--rotate-size", "16K",
         "--rotate-keep", "3", "--duration", "4"],
        stderr=subprocess.PIPE)
    time.sleep(1.5)
    subprocess.run(["sh", "-c", "for i in $(seq 200); do /bin/true; done"], check=True)
    _, err = ktrail.communicate(timeout=30)
    assert ktrail.returncode == 0, err
    files = sorted(f for f in tmp_path.iterdir() if f.name != "store")
    assert [f.name for f in files] == ["trail.jsonl", "trail.jsonl.1", "trail.jsonl.2",
                                       "trail.jsonl.3"]
    for f in files[1:]:
        assert f.stat().st_size <= 16 * 1024
        jsonl(f.read_bytes())  # every line parses: none was split across files


def test_terminal_gets_human_text_and_sigterm_exits_cleanly() -> None:
    master, slave = pty.openpty()
    ktrail = subprocess.Popen([*KTRAIL, "run", "--comm", "echo", "--no-store"],
                              stdout=slave, stderr=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    assert ktrail.stderr is not None
    assert "ready in" in ktrail.stderr.readline().decode()
    subprocess.run(["/bin/echo", "on-a-terminal"], stdout=subprocess.DEVNULL, check=True)
    time.sleep(0.5)
    ktrail.send_signal(signal.SIGTERM)
    ktrail.wait(timeout=30)
    text = b""
    while select.select([master], [], [], 0.5)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        text += chunk
    os.close(master)
    assert ktrail.returncode == 0
    # Alerts (bold red) pass --comm, as rules see every event, and any process on
    # the machine may raise one meanwhile: the checks below are on events.
    decoded = re.sub(r"\x1b\[1;31m.*?\x1b\[0m", "", text.decode(), flags=re.S)
    assert "exec" in decoded and "/bin/echo on-a-terminal" in decoded
    assert "{" not in decoded.split("stats")[0]  # human text, not JSON
    # What was lost is the whole machine's: the stats line says it, whatever it is.
    assert "stats" in decoded and re.search(r"\blost=\d+", decoded)
    # --comm echo let nothing else through.
    lines = [ln for ln in decoded.splitlines() if ln.strip() and "stats" not in ln
             and "heartbeat  seq=" not in ln]
    assert lines and all("echo(" in ln for ln in lines)


def test_filters_pid_and_uid(sensor) -> None:
    s = sensor("--uid", "65534")
    subprocess.run(["/bin/true"], check=True)
    subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/true",
                    "as-nobody"], check=True)
    t = s.stop()
    # Alerts pass the output filters (rules see every event), and any process on
    # the machine may raise one: the filter is checked on events.
    events = [e for e in t.events if e["evt"]["type"] != "alert"]
    assert events and all(e["proc"]["uid"] == 65534 for e in events)
    assert any(e["exec"]["args"] == ["/bin/true", "as-nobody"]
               and e["proc"]["ppid"] == os.getpid() for e in t.of_type("exec"))
    # The filter hides events from the output, not from the process table.
    assert t.final["events_total"] > t.final["output_events"]
