"""The sensor on a second kernel: Debian 12's 6.1, booted under qemu (tests/vm).

This machine's 6.18 refuses fentry, kprobes and BPF LSM; Debian's 6.1 has
them all, and it is the kernel a fresh Debian 12 machine runs. There the
syscall events must go through fentry/fexit, so that no syscall tracepoint
(which slows every syscall on the machine) is attached, and the event must be
the same as through tracepoints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from sensorkit import jsonl

ROOT = Path(__file__).resolve().parents[2]
BOOT = ROOT / "tests" / "vm" / "boot.sh"

# Runs inside the VM, as root, with $OUT shared with the host.
SCRIPT = r"""
set -u
cd "$OUT"
"$PY" -m ktrail doctor --json > doctor.json
"$PY" -m ktrail run --profile default --format json --output events.json \
    --stats-interval 0 2> sensor.err &
sensor=$!
for _ in $(seq 600); do grep -q "ready in" sensor.err && break; sleep 0.2; done
/bin/echo hello > /dev/null
sh -c 'exec /nonexistent/ktrail-probe' 2> /dev/null
touch a && mv a b
setsid true
unshare -m true
"$PY" -c 'import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
socket.create_connection(s.getsockname()).close()
open("port", "w").write(str(s.getsockname()[1]))'
echo x > /run/ktrail-handle
"$PY" doors.py
sleep 1
kill -TERM $sensor
wait $sensor
echo $? > sensor.rc
"""


# Another process's memory written (process_vm_writev, /proc/PID/mem) and a
# file opened by handle (on /run, a tmpfs: 9p has no handles), via ctypes.
DOORS = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
class Handle(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint), ("type", ctypes.c_int), ("b", ctypes.c_ubyte * 128)]
victim = ctypes.create_string_buffer(b"untouched")
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.read(r, 1)
    os._exit(0 if victim.raw[:8] == b"INJECTED" else 3)
src = ctypes.create_string_buffer(b"INJECTED")
mine, theirs = Iov(ctypes.addressof(src), 8), Iov(ctypes.addressof(victim), 8)
assert libc.process_vm_writev(child, ctypes.byref(mine), 1, ctypes.byref(theirs), 1, 0) == 8
os.close(os.open(f"/proc/{child}/mem", os.O_RDWR))
h, mount_id = Handle(128), ctypes.c_int()
assert libc.name_to_handle_at(-100, b"/run/ktrail-handle", ctypes.byref(h),
                              ctypes.byref(mount_id), 0) == 0
mount_fd = os.open("/run", os.O_RDONLY)
assert libc.open_by_handle_at(mount_fd, ctypes.byref(h), 0) >= 0
os.write(w, b"x")
assert os.waitpid(child, 0)[1] == 0
open("doors", "w").write(f"{os.getpid()} {child}")
"""


@pytest.fixture(scope="module")
def vm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vm")
    env = dict(os.environ, OUT=str(out), PY=sys.executable)
    script = out / "script.sh"
    script.write_text(SCRIPT)
    (out / "doors.py").write_text(DOORS)
    p = subprocess.run([str(BOOT), "--share", str(out), "--timeout", "900", "--",
                        "env", f"OUT={out}", f"PY={sys.executable}", "sh", str(script)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, f"VM run failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr}"
    return out


def test_doctor_on_61_finds_every_mechanism(vm_run: Path) -> None:
    r = orjson.loads((vm_run / "doctor.json").read_bytes())
    assert r["kernel"].startswith("6.1."), r["kernel"]
    for m in ("tracepoint", "tp_btf", "kprobe", "fentry", "lsm", "uprobe", "ringbuf"):
        assert r["mechanisms"][m]["available"], (m, r["mechanisms"][m])
    assert r["ok"], r["problems"]
    ev = r["events"]
    # Before Linux 6.4 the io_uring tracepoint had another name.
    assert ev["io_uring"]["hooks"] == ["tp_btf:io_uring:io_uring_submit_sqe"]
    for name in ("rename", "connect", "dns", "setuid", "ptrace", "module_load", "bpf",
                 "process_vm"):
        assert ev[name]["hooks"][0].startswith("fentry:"), (name, ev[name])


def test_default_profile_on_61_attaches_no_syscall_tracepoint(vm_run: Path) -> None:
    err = (vm_run / "sensor.err").read_text()
    assert (vm_run / "sensor.rc").read_text().strip() == "0", err
    ready = next(line for line in err.splitlines() if "ready in" in line)
    assert "fentry" in ready and "tracepoint" not in ready, ready


def test_events_through_fentry_match_the_tracepoint_path(vm_run: Path) -> None:
    events = jsonl((vm_run / "events.json").read_bytes())
    by_type: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_type.setdefault(e["evt"]["type"], []).append(e)
    out = str(vm_run)

    assert any(e["proc"]["args"] == ["/bin/echo", "hello"] for e in by_type["exec"])
    [failed] = [e for e in by_type["exec"]
                if e["exec"]["filename"] == "/nonexistent/ktrail-probe"]
    assert failed["exec"]["error"] == "ENOENT" and failed["exec"]["retval"] == -2

    mvs = [e for e in by_type["rename"] if e["proc"]["comm"] == "mv"]
    (mv,) = [e for e in mvs if e["evt"]["retval"] == 0] or [mvs]
    assert (mv["file"]["path"], mv["file"]["new_path"]) == (f"{out}/a", f"{out}/b")
    assert mv["evt"]["retval"] == 0 and mv["proc"]["args"] == ["mv", "a", "b"]

    assert any(e["proc"]["comm"] == "setsid" for e in by_type["setsid"])
    assert any(e["proc"]["comm"] == "unshare" for e in by_type["namespace"])

    port = int((vm_run / "port").read_text())
    connects = [e for e in by_type["connect"] if e["net"].get("dport") == port]
    assert connects and connects[0]["net"]["daddr"] == "127.0.0.1", by_type.get("connect")

    pid, child = map(int, (vm_run / "doors").read_text().split())
    [vm] = [e for e in by_type["process_vm"] if e["proc"]["pid"] == pid]
    assert vm["evt"]["syscall"] == "process_vm_writev" and vm["evt"]["retval"] == 8
    assert vm["process_vm"]["target"]["pid"] == child
    opens = [e for e in by_type["open"] if e["proc"]["pid"] == pid]
    [mem] = [e for e in opens if "mem_target" in e["file"]]
    assert mem["file"]["path"] == f"/proc/{child}/mem"
    assert mem["file"]["mem_target"]["pid"] == child
    assert mem["file"]["mem_target"]["self"] is False
    [handle] = [e for e in opens if e["evt"]["syscall"] == "open_by_handle_at"]
    assert handle["file"]["path"] == "/run/ktrail-handle"
    assert handle["file"]["handle"]["mount_path"] == "/run"

    final = by_type["stats"][-1]["stats"]
    assert final["final"] and final["kernel"]["dropped_total"] == 0
