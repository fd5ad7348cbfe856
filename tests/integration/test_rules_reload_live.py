"""Issue 12, finding 5, on the live sensor: a SIGHUP with a ~3 MB rules file
does not pause the output (the rules compile in the background), the new
rules take over in one step, and a stop (--duration, SIGTERM) is not held
up by a reload in flight."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import orjson
from sensorkit import KTRAIL, jsonl

RULE = """
- rule: {name}
  desc: test rule
  condition: evt.type = exec and proc.cmdline contains {token}
  output: "{name} %proc.cmdline"
  priority: NOTICE
"""


def many_rules(n: int) -> str:
    """n rules with a list and a macro each: ~410 bytes per rule."""
    return "".join(f"""
- list: tools_{i}
  items: [tool{i}a, tool{i}b, tool{i}c, tool{i}d]
- macro: m_{i}
  condition: proc.name in (tools_{i}) and not proc.pname in (sshd, systemd)
- rule: Generated rule {i}
  desc: a generated rule, number {i}, for the reload test
  condition: evt.type = exec and m_{i} and proc.exe startswith /opt/gen{i}/
  output: "gen {i} %proc.exe by %user.name"
  priority: NOTICE
""" for i in range(n))


class Tail:
    """The sensor's --output file, read as it grows: each of our lines with
    the time it showed up."""

    def __init__(self, path: str) -> None:
        self.f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.rest = b""

    def poll(self, marker: bytes) -> list[tuple[float, dict]]:
        data = self.rest + self.f.read()
        lines = data.split(b"\n")
        self.rest = lines.pop()
        now = time.monotonic()
        return [(now, orjson.loads(line)) for line in lines if marker in line]

    def close(self) -> None:
        self.f.close()


def test_sighup_with_a_large_rules_file_does_not_pause_the_output(sensor,
                                                                  tmp_path: Path) -> None:
    me = os.getpid()
    old, new = f"h12old{me}", f"h12new{me}"
    rules = tmp_path / "local.yaml"
    rules.write_text(RULE.format(name="Old marker", token=old))
    s = sensor("--no-default-rules", "--rules", str(rules))
    big = RULE.format(name="New marker", token=new) + many_rules(7700)
    assert len(big) > 3_000_000
    rules.write_text(big)
    tail = Tail(s.out_path)
    seen: list[tuple[float, dict]] = []
    launched: dict[str, float] = {}
    n = 0
    hup = switched = None
    deadline = time.monotonic() + 240
    # A tick every 0.1 s: an exec of our own that both rules' tokens are in.
    while time.monotonic() < deadline:
        n += 1
        launched[str(n)] = time.monotonic()
        subprocess.run(["/bin/true", f"h12tick{me}", str(n), old, new], check=True)
        time.sleep(0.1)
        seen += tail.poll(f"h12tick{me}".encode())
        if hup is None and n == 10:
            s.proc.send_signal(signal.SIGHUP)
            hup = time.monotonic()
        if switched is None and any(e["evt"]["type"] == "alert"
                                    and e["alert"]["rule"] == "New marker" for _, e in seen):
            switched = time.monotonic()
        if switched is not None and time.monotonic() > switched + 1.5:
            break
    trace = s.stop()
    tail.close()
    assert hup is not None and switched is not None, trace.stderr
    [took] = re.findall(r"rules reloaded: 7701 rules \(in ([\d.]+) s\)", trace.stderr)
    # The reload lasted long enough for a pause to show (before: 24 s).
    assert float(took) >= 1.0, trace.stderr
    # How long each tick took to reach the output, from its launch: a stall
    # of the sensor shows here, while one of this test (the machine is
    # shared) only spaces the ticks out. Seen when polled: ~0.1 s late.
    latency = [t - launched[e["proc"]["args"][2]] for t, e in seen
               if e["evt"]["type"] == "exec" and launched[e["proc"]["args"][2]] > hup]
    print(f"reload {took} s; {len(latency)} ticks during and after it, longest from "
          f"launch to output {max(latency, default=0):.2f} s")
    # Before: every tick launched during the reload waited for its end (24 s).
    assert latency and max(latency) < 3.0, (max(latency), took)
    # One switch: every Old alert before every New one, and every tick
    # judged by exactly one of the two rule sets.
    mine = [e for e in trace.events if f"h12tick{me}" in ((e.get("proc") or {}).get("args")
                                                          or ())]
    rules_fired = [e["alert"]["rule"] for e in mine if e["evt"]["type"] == "alert"]
    assert rules_fired == sorted(rules_fired, key=lambda r: r == "New marker")
    assert rules_fired.count("Old marker") >= 10 and "New marker" in rules_fired
    assert len(rules_fired) == len([e for e in mine if e["evt"]["type"] == "exec"]) == n
    det = trace.final["detection"]
    assert det["reloads"] == 1 and det["reload_errors"] == 0 and det["rules"] == 7701


def _start(*args: str) -> tuple[subprocess.Popen[bytes], str, float]:
    fd, out = tempfile.mkstemp(prefix="ktrail-test-", suffix=".jsonl")
    os.close(fd)
    p = subprocess.Popen([*KTRAIL, "run", "--format", "json", "--stats-interval", "0",
                          "--no-store", "--output", out, *args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         start_new_session=True)
    assert p.stderr is not None
    err = []
    while True:
        line = p.stderr.readline().decode()
        err.append(line)
        assert line, "ktrail did not start:\n" + "".join(err)
        if "ready in" in line:
            return p, out, time.monotonic()


def _stop_with_a_reload_in_flight(tmp_path: Path, how: str) -> None:
    rules = tmp_path / "local.yaml"
    rules.write_text(RULE.format(name="Old marker", token="h12-nothing"))
    extra = ("--duration", "4") if how == "duration" else ()
    p, out, ready = _start("--no-default-rules", "--rules", str(rules), *extra)
    try:
        # ~6.5 MB: its reload takes longer than the run has left, loaded or not.
        rules.write_text(many_rules(16000))
        p.send_signal(signal.SIGHUP)
        if how == "sigterm":
            time.sleep(1.5)
            p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=180)
        took = time.monotonic() - ready
        stderr = err.decode()
        assert "Traceback" not in stderr and p.returncode == 0, stderr
        assert "rules reload abandoned: the run is ending" in stderr
        # Before: the reload ran to its end first (381 s for --duration 40).
        # Stopping itself detaches every program (a few seconds here).
        assert took < (4 if how == "duration" else 1.5) + 15, (took, stderr)
        [final] = [e["stats"] for e in jsonl(Path(out).read_bytes())
                   if e["evt"]["type"] == "stats" and e["stats"]["final"]]
        assert final["detection"]["reloads_abandoned"] == 1
        assert final["detection"]["reloads"] == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.unlink(out)


def test_duration_ends_on_time_with_a_reload_in_flight(tmp_path: Path) -> None:
    _stop_with_a_reload_in_flight(tmp_path, "duration")


def test_sigterm_ends_the_run_promptly_with_a_reload_in_flight(tmp_path: Path) -> None:
    _stop_with_a_reload_in_flight(tmp_path, "sigterm")
