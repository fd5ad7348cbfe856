"""Process, privilege and kernel events against the real kernel."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from sensorkit import machine_lock, run

from ktrail.bpf import object_path

TASK_OPS = textwrap.dedent(
    """
    import ctypes, os, mmap, signal, subprocess, time
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, b"kworker/u8:2", 0, 0, 0)
    os.memfd_create("stage2", os.MFD_CLOEXEC)
    if os.fork() == 0:
        os.setsid()
        os._exit(0)
    os.wait()
    victim = subprocess.Popen(["sleep", "30"])
    time.sleep(0.2)
    assert libc.ptrace(16, victim.pid, 0, 0) == 0  # PTRACE_ATTACH
    os.waitpid(victim.pid, 0)
    libc.ptrace(1, victim.pid, 0, 0)               # PTRACE_PEEKTEXT: not reported by default
    libc.ptrace(17, victim.pid, 0, 0)              # PTRACE_DETACH
    os.kill(victim.pid, signal.SIGTERM)
    victim.wait()
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    os.setresuid(0, 1000, 0)                       # drop the effective uid...
    os.setresuid(-1, 0, -1)                        # ...and take it back
    print(victim.pid, flush=True)
    """
)


def test_process_and_privilege_events_default_profile(sensor) -> None:
    s = sensor()
    p = subprocess.Popen([sys.executable, "-c", TASK_OPS], stdout=subprocess.PIPE, text=True)
    victim = int(p.communicate()[0])
    assert p.returncode == 0
    t = s.stop()
    [prctl] = t.by_pid(p.pid, "prctl")
    assert prctl["prctl"] == {"option": "PR_SET_NAME", "name": "kworker/u8:2",
                              "old_name": Path(sys.executable).name[:15]}
    [memfd] = t.by_pid(p.pid, "memfd_create")
    assert memfd["memfd"] == {"name": "stage2", "flags": ["MFD_CLOEXEC"]}
    [setsid] = [e for e in t.of_type("setsid") if e["proc"]["ppid"] == p.pid]
    assert setsid["evt"]["retval"] == setsid["proc"]["pid"]
    # Only the injection-relevant request by default: attach, not peek/detach.
    [ptrace] = t.by_pid(p.pid, "ptrace")
    assert ptrace["ptrace"]["request"] == "PTRACE_ATTACH"
    assert ptrace["ptrace"]["target"]["pid"] == victim
    assert ptrace["ptrace"]["target"]["exec_id"].startswith(f"{victim}:")
    setuids = [e["setuid"] for e in t.by_pid(p.pid, "setuid")]
    assert setuids[0]["asked"] == {"real": 0, "effective": 1000, "saved": 0}
    assert setuids[0]["now"]["effective"] == 1000
    assert setuids[1]["now"]["effective"] == 0
    [esc] = t.by_pid(p.pid, "privilege_escalation")
    assert esc["privilege_escalation"]["euid_before"] == 1000
    assert esc["privilege_escalation"]["euid"] == 0
    assert esc["evt"]["syscall"] == "setresuid"
    # Verbose types stay off in the default profile.
    assert not t.by_pid(p.pid, "exec_memory") and not t.by_pid(p.pid, "kill")


def test_full_profile_adds_kill_exec_memory_and_every_ptrace(sensor) -> None:
    s = sensor("--profile", "full")
    p = subprocess.Popen([sys.executable, "-c", TASK_OPS], stdout=subprocess.PIPE, text=True)
    victim = int(p.communicate()[0])
    t = s.stop()
    requests = [e["ptrace"]["request"] for e in t.by_pid(p.pid, "ptrace")]
    assert requests == ["PTRACE_ATTACH", "PTRACE_PEEKTEXT", "PTRACE_DETACH"]
    [kill] = [e for e in t.by_pid(p.pid, "kill") if e["kill"]["target"]["pid"] == victim]
    assert kill["kill"]["signal"] == "SIGTERM" and kill["kill"]["target"]["exe"] == "/usr/bin/sleep"
    [mem] = t.by_pid(p.pid, "exec_memory")
    assert "PROT_EXEC" in mem["memory"]["prot"] and mem["memory"]["anonymous"] is True
    assert mem["evt"]["syscall"] == "mmap"


def test_module_load_failure_is_reported_with_errno(sensor, tmp_path: Path) -> None:
    junk = tmp_path / "junk.ko"
    junk.write_bytes(b"not an ELF module")
    s = sensor("--profile", "full")
    p = subprocess.Popen(["insmod", str(junk)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    assert p.wait() != 0
    t = s.stop()
    loads = t.by_pid(p.pid, "module_load")  # not another insmod's (another run's)
    [e] = [e for e in loads if e["evt"]["syscall"] == "finit_module"]
    assert e["module"]["file"] == str(junk)
    # ENOSYS on a kernel without modules, ENOEXEC/EINVAL where they exist.
    assert e["evt"]["error"] in ("ENOSYS", "ENOEXEC", "EINVAL", "EPERM")
    # kmod falls back to init_module with the file's bytes: reported too.
    for other in loads:
        assert other["evt"]["error"] is not None
        if other["evt"]["syscall"] == "init_module":
            assert other["module"]["image_len"] == len(b"not an ELF module")


def test_bpftool_prog_load_gives_bpf_event(sensor) -> None:
    pin = f"/sys/fs/bpf/ktrail-test-{os.getpid()}"
    s = sensor()
    try:
        run("bpftool", "prog", "load", object_path("probes"), pin, "type", "tracepoint")
    finally:
        with contextlib.suppress(OSError):
            os.unlink(pin)
    t = s.stop()
    # This test's bpftool: other runs (and test_doctor) load programs too.
    loads = [e["bpf"] for e in t.started_by(os.getpid(), "bpf")
             if e["proc"]["comm"] == "bpftool" and e["bpf"]["cmd"] == "BPF_PROG_LOAD"]
    assert {"prog_name": "probe_tracepoin", "prog_type": "tracepoint"}.items() <= {
        k: v for ld in loads for k, v in ld.items() if ld["prog_name"] == "probe_tracepoin"
    }.items()


def test_mount_umount_unshare_setns(sensor, tmp_path: Path) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    s = sensor()
    run("unshare", "-m", "true", check=True)
    run("unshare", "-m", "sh", "-c", f"mount -t tmpfs ktrail-src {target} && umount {target}",
        check=True)
    run("nsenter", "-t", str(os.getpid()), "-u", "true", check=True)
    t = s.stop()
    # Only what this test started: the machine mounts tmpfs and unshares too.
    me = os.getpid()
    [ns] = [e for e in t.started_by(me, "namespace") if e["proc"]["comm"] == "unshare"][:1]
    assert ns["namespace"]["op"] == "unshare" and "CLONE_NEWNS" in ns["namespace"]["flags"]
    [m] = [e for e in t.started_by(me, "mount") if e["mount"].get("fstype") == "tmpfs"]
    assert (m["mount"]["source"], m["mount"]["target"]) == ("ktrail-src", str(target))
    assert [e["mount"]["target"] for e in t.started_by(me, "umount")
            if e["proc"]["comm"] == "umount"] == [str(target)]
    [setns] = [e for e in t.started_by(me, "namespace") if e["proc"]["comm"] == "nsenter"]
    own_uts = os.readlink("/proc/self/ns/uts")  # e.g. uts:[4026531838]
    assert setns["namespace"]["op"] == "setns" and setns["namespace"]["ns"] == own_uts


CRASH = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"


def test_usermode_helper_from_core_pattern_pipe(sensor, tmp_path: Path) -> None:
    pattern = Path("/proc/sys/kernel/core_pattern")
    marker = tmp_path / "helper-ran"
    helper = tmp_path / "helper.sh"
    helper.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch {marker}\n")
    helper.chmod(0o755)
    s = sensor()
    # core_pattern is the machine's: another run must not swap in its helper meanwhile.
    with machine_lock("core_pattern"):
        old = pattern.read_text()
        try:
            pattern.write_text(f"|{helper} %p")
            subprocess.run(["sh", "-c",
                            f"ulimit -c unlimited; exec {sys.executable} -c '{CRASH}'"])
            for _ in range(50):
                if marker.exists():
                    break
                time.sleep(0.1)
        finally:
            pattern.write_text(old)
    t = s.stop()
    assert marker.exists(), "the kernel did not run the core_pattern helper"
    [e] = [e for e in t.of_type("usermode_helper") if e["usermode_helper"]["exe"] == str(helper)]
    assert e["proc"]["parent"] is None or e["proc"]["parent"]["pid"] != os.getpid()
    [ex] = [x for x in t.execs(str(helper))]
    assert ex["exec"]["kernel_spawned"] is True


def test_sensor_does_not_report_itself(sensor) -> None:
    s = sensor()
    t = s.stop(signal.SIGTERM)
    own = [e for e in t.events if e["proc"]["pid"] == s.proc.pid]
    assert own == []
