"""The configurations under test: each starts a tracer, then reports what it cost.

Every tracer is started fresh for each (workload, run), so its CPU time,
peak RSS and event counts belong to that workload alone. CPU time counts
from the moment the tracer is ready, so start-up is not charged to the
workload; start-up time is reported on its own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import equivalents

SCRATCH = Path("/dev/shm/ktrail-bench")  # tracer outputs: tmpfs, so no disk noise
AUDIT_DIR = Path("/var/tmp/ktrail-bench-audit")  # auditd writes to disk, as deployed
STORE_DIR = Path("/var/tmp/ktrail-bench-store")  # so does ktrail's trail store
TICK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    pass


class Hung(BenchError):
    """A tracer did not exit on its stop signal (it was killed)."""


@dataclass
class Measurement:
    startup_s: float | None = None
    cpu_s: float | None = None
    peak_rss_mb: float | None = None
    delivered: int | None = None
    lost: int | None = None
    # True when lost was checked against the kernel's own count of attempts.
    reconciled: bool | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def _proc_cpu(pid: int) -> float:
    """utime + stime of a live process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _peak_rss_mb(pid: int) -> float:
    """VmHWM: the peak RSS of the process's current image. (rusage's maxrss is
    no use here: a child inherits its parent's peak across fork and exec.)"""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _reap(p: subprocess.Popen[Any], sig: int, timeout: float = 120) -> tuple[float, float]:
    """Signal, wait, and return (cpu seconds from rusage, peak RSS MB just before)."""
    rss = _peak_rss_mb(p.pid)
    p.send_signal(sig)
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return ru.ru_utime + ru.ru_stime, rss
        if time.monotonic() > deadline:
            p.kill()
            os.wait4(p.pid, 0)
            p.returncode = -9
            raise Hung(f"{p.args[0]} did not stop within {timeout:.0f} s (killed)")
        time.sleep(0.02)


class Tracer:
    name = "no tracing"

    def start(self) -> None:
        pass

    def stop(self) -> Measurement:
        return Measurement()

    def close(self) -> None:
        """Undo anything the tracer changed on the machine (called once, at the end)."""


class Ktrail(Tracer):
    def __init__(self, name: str, args: list[str], store: bool = False) -> None:
        self.name = name
        self.args = args
        # The trail store goes to disk, as deployed, and starts empty each run.
        self.store = STORE_DIR / "trail.db" if store else None
        self.p: subprocess.Popen[bytes] | None = None

    def _clear_store(self) -> None:
        if self.store is not None:
            shutil.rmtree(self.store.parent, ignore_errors=True)

    def start(self) -> None:
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.out = SCRATCH / "ktrail.jsonl"
        self.out.unlink(missing_ok=True)
        self._clear_store()
        store = [] if self.store is None else ["--store", str(self.store)]
        t0 = time.perf_counter()
        self.p = subprocess.Popen(
            [sys.executable, "-m", "ktrail", "run", "--format", "json", "--output", str(self.out),
             "--rotate-size", "100G", "--stats-interval", "0", *store, *self.args],
            stderr=subprocess.PIPE)
        assert self.p.stderr is not None
        err = []
        while True:
            line = self.p.stderr.readline().decode()
            if not line:
                raise BenchError(f"{self.name}: ktrail did not start:\n{''.join(err)}")
            err.append(line)
            if "ready in" in line:
                break
        self.startup_s = time.perf_counter() - t0
        self.cpu0 = _proc_cpu(self.p.pid)

    def stop(self) -> Measurement:
        assert self.p is not None
        cpu, rss = _reap(self.p, signal.SIGTERM)
        if self.p.returncode != 0:
            raise BenchError(f"{self.name}: ktrail exited with {self.p.returncode}")
        last = self.out.read_bytes().rstrip().rsplit(b"\n", 1)[-1]
        self.out.unlink()
        stats = json.loads(last)["stats"]
        assert stats["final"], "the last record is the final stats record"
        k, r = stats["kernel"], stats["reader"]
        self._clear_store()
        return Measurement(
            startup_s=self.startup_s, cpu_s=cpu - self.cpu0, peak_rss_mb=rss,
            delivered=stats["output_events"], lost=k["dropped_total"],
            # Every record the kernel numbered was read or counted as dropped.
            reconciled=r["unreconciled"] == 0,
            detail={"attempted": k["attempted"], "read": r["records"],
                    "unreconciled": r["unreconciled"],
                    "alerts": (stats.get("detection") or {}).get("alerts"),
                    "store": stats.get("store")},
        )


def _auditctl(*args: str) -> str:
    return subprocess.run(["auditctl", *args], check=True, capture_output=True,
                          text=True).stdout


def audit_status() -> dict[str, str]:
    out = {}
    for line in _auditctl("-s").splitlines():
        k, _, v = line.partition(" ")
        out[k] = v.strip()
    return out


class AuditState:
    """Audit as found, and how it is put back.

    Once audit has been enabled, every new task gets an audit context until
    reboot, which slows every syscall of it (+20% on getppid here) even with
    no rules. A `never,task` rule stops that, so after every auditd pass the
    machine gets that single rule, and the baselines after it stay honest.
    At the end, rules that were there before are put back; if there were
    none, only `never,task` stays (undoing it would take a reboot).
    """

    def __init__(self) -> None:
        st = audit_status()
        self.enabled = st.get("enabled", "0")
        self.backlog = (st.get("backlog_limit", "64"), st.get("backlog_wait_time", "15000"))
        if st.get("pid", "0") != "0":
            raise BenchError(f"auditd is already running (pid {st['pid']}); stop it to bench "
                             "auditd, or leave auditd out with --configs")
        rules = _auditctl("-l").strip()
        self.rules = [] if rules == "No rules" else rules.splitlines()

    def quiet(self) -> None:
        _auditctl("-D")
        _auditctl("-a", "never,task")
        _auditctl("-e", self.enabled)

    def restore(self) -> str:
        _auditctl("-D")
        _auditctl("-b", self.backlog[0])
        _auditctl("--backlog_wait_time", self.backlog[1])
        if self.rules:
            for rule in self.rules:
                subprocess.run(["auditctl", *rule.split()], check=True, capture_output=True)
            _auditctl("-e", self.enabled)
            return "audit rules restored as found"
        _auditctl("-a", "never,task")
        _auditctl("-e", self.enabled)
        return ("audit left with the single rule `-a never,task` (it keeps new tasks from "
                "paying for audit contexts; clearing it fully takes a reboot)")


AUDITD_CONF = """\
log_file = {log}
log_format = ENRICHED
flush = INCREMENTAL_ASYNC
freq = 50
max_log_file = 0
max_log_file_action = IGNORE
space_left = 2
space_left_action = IGNORE
admin_space_left = 1
admin_space_left_action = IGNORE
disk_full_action = IGNORE
disk_error_action = IGNORE
priority_boost = 4
q_depth = 2000
overflow_action = SYSLOG
plugin_dir = {plugins}
"""


class Auditd(Tracer):
    """auditd 3 with Debian's stock settings (backlog 8192, wait 60 s) and the
    default profile's syscalls as rules, logging to disk as deployed."""

    name = "auditd"

    def __init__(self) -> None:
        if not shutil.which("auditd"):
            raise BenchError("auditd is not installed (apt-get install auditd)")
        self.state = AuditState()
        self.state.quiet()
        dump = subprocess.run(["ausyscall", "x86_64", "--dump"], capture_output=True,
                              text=True, check=True).stdout
        known = {ln.split()[1] for ln in dump.splitlines()[1:] if len(ln.split()) == 2}
        self.rules = equivalents.audit_rules(known)
        (AUDIT_DIR / "plugins.d").mkdir(parents=True, exist_ok=True)
        self.log = AUDIT_DIR / "audit.log"
        conf = AUDIT_DIR / "auditd.conf"
        conf.write_text(AUDITD_CONF.format(log=self.log, plugins=AUDIT_DIR / "plugins.d"))
        conf.chmod(0o640)
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.unlink(missing_ok=True)
        _auditctl("-D")  # drops never,task, so the workload's tasks are audited
        _auditctl("-b", "8192")
        _auditctl("--backlog_wait_time", "60000")
        for rule in self.rules:
            _auditctl(*rule)
        t0 = time.perf_counter()
        self.p = subprocess.Popen(["auditd", "-n", "-s", "enable", "-c", str(AUDIT_DIR)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while audit_status().get("pid") != str(self.p.pid):
            if self.p.poll() is not None:
                raise BenchError(f"auditd exited with {self.p.returncode} at start")
            time.sleep(0.02)
        self.startup_s = time.perf_counter() - t0
        self.lost0 = int(audit_status()["lost"])
        self.kauditd = _kthread("kauditd")
        self.kcpu0 = _proc_cpu(self.kauditd) if self.kauditd else 0.0
        self.cpu0 = _proc_cpu(self.p.pid)

    def stop(self) -> Measurement:
        assert self.p is not None
        # Let auditd take what the kernel still holds, as ktrail drains its ring.
        deadline = time.monotonic() + 60
        while int(audit_status()["backlog"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        lost = int(audit_status()["lost"]) - self.lost0
        kcpu = _proc_cpu(self.kauditd) - self.kcpu0 if self.kauditd else 0.0
        cpu, rss = _reap(self.p, signal.SIGTERM)
        self.state.quiet()
        with self.log.open("rb") as f:
            delivered = sum(1 for line in f if line.startswith(b"type=SYSCALL"))
        self.log.unlink()
        return Measurement(
            startup_s=self.startup_s, cpu_s=cpu - self.cpu0 + kcpu, peak_rss_mb=rss,
            delivered=delivered, lost=lost, reconciled=None,
            detail={"kauditd_cpu_s": round(kcpu, 3)})

    def close(self) -> None:
        self.note = self.state.restore()


def _wchan(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def _kthread(name: str) -> int | None:
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() == name:
                    return int(d.name)
            except OSError:
                continue
    return None


class Bpftrace(Tracer):
    """bpftrace with the default profile's events as printf lines.

    The output goes to a file on tmpfs rather than /dev/null so that the
    lines it delivered can be counted; tmpfs costs the same (no disk)."""

    name = "bpftrace"

    def __init__(self) -> None:
        if not shutil.which("bpftrace"):
            raise BenchError("bpftrace is not installed (apt-get install bpftrace)")
        SCRATCH.mkdir(parents=True, exist_ok=True)
        self.script = SCRATCH / "default.bt"
        self.script.write_text(equivalents.bpftrace_script())
        self.p: subprocess.Popen[bytes] | None = None
        self.hung = 0

    def close(self) -> None:
        if self.hung:
            self.note = (f"bpftrace did not exit on SIGINT in {self.hung} run(s) and was "
                         "killed after 30 s; those runs have times but no event counts")

    def start(self) -> None:
        self.out = SCRATCH / "bpftrace.out"
        self.err = SCRATCH / "bpftrace.err"
        self.out.unlink(missing_ok=True)
        t0 = time.perf_counter()
        with self.err.open("wb") as err:
            self.p = subprocess.Popen(["bpftrace", "-o", str(self.out), str(self.script)],
                                      stdout=subprocess.DEVNULL, stderr=err)
        # "Attaching N probes" comes before the attaching, and a SIGINT while
        # attaching can leave bpftrace hung. It is ready once it waits in its
        # event loop (its file output is buffered, so a BEGIN line would not
        # show in time).
        while not (self.out.exists() and b"Attaching" in self.out.read_bytes()[:300]
                   and _wchan(self.p.pid) == "do_epoll_wait"):
            if self.p.poll() is not None:
                raise BenchError(f"bpftrace exited with {self.p.returncode}: "
                                 f"{self.err.read_text()[-2000:]}")
            time.sleep(0.02)
        self.startup_s = time.perf_counter() - t0
        self.cpu0 = _proc_cpu(self.p.pid)

    def stop(self) -> Measurement:
        assert self.p is not None
        try:
            cpu, rss = _reap(self.p, signal.SIGINT, timeout=30)
        except Hung:
            # Seen with bpftrace 0.17 here, about once in 30 stops: it takes
            # SIGINT and never exits. The run's time stands; its output was
            # still buffered when it was killed, so there are no counts.
            self.hung += 1
            self.out.unlink(missing_ok=True)
            return Measurement(startup_s=self.startup_s, detail={"hung_at_stop": True})
        text = self.out.read_bytes()
        lines = text.splitlines()
        lost = sum(int(m) for m in re.findall(rb"Lost (\d+) events", text + self.err.read_bytes()))
        # Not counted: the banner, loss notes, and maps bpftrace prints at exit.
        delivered = sum(1 for ln in lines
                        if ln and not ln.startswith((b"Attaching", b"Lost", b"@")))
        self.out.unlink()
        return Measurement(startup_s=self.startup_s, cpu_s=cpu - self.cpu0, peak_rss_mb=rss,
                           delivered=delivered, lost=lost, reconciled=None)
