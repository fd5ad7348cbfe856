"""Issue 12, finding 5: a SIGHUP reload compiles in a thread while the
loop goes on with the old rules; the switch is one step, only once the new
set has compiled; a stop abandons a reload in flight."""

from __future__ import annotations

import io
import time
from pathlib import Path

from ktrail.engine.detect import Detector
from ktrail.rules.testing import complete

RULE = """
- rule: {name}
  desc: test rule
  condition: evt.type = exec and proc.name = {comm}
  output: "{name} %proc.name"
  priority: NOTICE
"""


def many_rules(n: int) -> str:
    """n rules with a list and a macro each: ~400 bytes per rule."""
    return "".join(f"""
- list: tools_{i}
  items: [tool{i}a, tool{i}b, tool{i}c, tool{i}d]
- macro: m_{i}
  condition: proc.name in (tools_{i}) and not proc.pname in (sshd, systemd)
- rule: Generated rule {i}
  desc: a generated rule, number {i}
  condition: evt.type = exec and m_{i} and proc.exe startswith /opt/gen{i}/
  output: "gen {i} %proc.exe by %user.name"
  priority: NOTICE
""" for i in range(n))


def fired(det: Detector, comm: str) -> list[str]:
    ev = complete({"evt": {"type": "exec"}, "proc": {"name": comm}}, 0)
    return [a["alert"]["rule"] for a in det.process([ev])]


def wait_for(det: Detector, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while det.reloading or det.reload_wanted:
        assert time.monotonic() < deadline, "the reload did not finish"
        det.maybe_reload()
        time.sleep(0.01)


def test_the_old_rules_run_until_the_new_set_has_compiled(tmp_path: Path) -> None:
    f = tmp_path / "local.yaml"
    f.write_text(RULE.format(name="Old", comm="old"))
    warn = io.StringIO()
    det = Detector([f], warn=warn)
    # Large enough that the loop below sees the reload in flight.
    f.write_text(RULE.format(name="New", comm="new") + many_rules(1500))
    det.request_reload()
    det.maybe_reload()
    assert det.reloading
    # The loop goes on meanwhile, with the old rules, and is not held up:
    # each pass below is a batch of the loop.
    passes = 0
    while det.reloading:
        assert fired(det, "old") == ["Old"] and fired(det, "new") == []
        passes += 1
        det.maybe_reload()
    assert passes > 10, passes
    assert fired(det, "new") == ["New"] and fired(det, "old") == []
    assert det.stats()["reloads"] == 1 and det.stats()["rules"] == 1501
    assert det.engine.alerts_total == passes + 1   # carried over the switch
    assert "rules reloaded: 1501 rules" in warn.getvalue()


def test_a_failed_reload_keeps_the_old_rules_and_says_where(tmp_path: Path) -> None:
    f = tmp_path / "local.yaml"
    f.write_text(RULE.format(name="Old", comm="old"))
    warn = io.StringIO()
    det = Detector([f], warn=warn)
    f.write_text(RULE.format(name="Old", comm="old") + "  condition: evt.type = open\n")
    det.request_reload()
    wait_for(det)
    assert fired(det, "old") == ["Old"]
    st = det.stats()
    assert st["reloads"] == 0 and st["reload_errors"] == 1
    assert f"rules not reloaded, the old rules stay: {f}:7:3: duplicate key 'condition'" in (
        warn.getvalue())


def test_a_sighup_during_a_reload_reloads_again_after_it(tmp_path: Path) -> None:
    f = tmp_path / "local.yaml"
    f.write_text(RULE.format(name="Old", comm="old"))
    det = Detector([f], warn=io.StringIO())
    f.write_text(RULE.format(name="Mid", comm="mid") + many_rules(300))
    det.request_reload()
    det.maybe_reload()
    f.write_text(RULE.format(name="Last", comm="last"))
    det.request_reload()
    wait_for(det)
    assert fired(det, "last") == ["Last"] and det.stats()["reloads"] == 2


def test_a_stop_abandons_a_reload_in_flight(tmp_path: Path) -> None:
    f = tmp_path / "local.yaml"
    f.write_text(RULE.format(name="Old", comm="old"))
    warn = io.StringIO()
    det = Detector([f], warn=warn)
    f.write_text(many_rules(3000))
    det.request_reload()
    det.maybe_reload()
    job = det._reload
    assert job is not None
    time.sleep(0.2)
    det.close()
    # It gives up at its next checkpoint (a few ms of work away).
    job.thread.join(timeout=10)
    assert not job.thread.is_alive()
    assert job.engine is None and job.error is None
    assert fired(det, "old") == ["Old"] and not det.reloading
    assert det.stats()["reloads_abandoned"] == 1 and det.stats()["reloads"] == 0
    assert "rules reload abandoned" in warn.getvalue()
