"""`ktrail doctor` tells the truth about this kernel.

Each verdict is checked against evidence gathered another way, so the test
holds on any kernel: a kprobe verdict against tracefs's kprobe_events
(CONFIG_KPROBES), LSM against the active LSM list, fentry against bpftool
loading an fentry program compiled here. The mechanisms the sensor relies on
must be available: their absence on CI's kernel is a regression, not a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import orjson
from sensorkit import KTRAIL, ktrail

FENTRY_PROG = """
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
char LICENSE[] SEC("license") = "GPL";
SEC("fentry/vfs_read")
int BPF_PROG(f) { return 0; }
"""


def doctor() -> tuple[int, dict]:
    p = ktrail("doctor", "--json", check=False)
    return p.returncode, orjson.loads(p.stdout)


def fentry_loads_independently(tmp: Path) -> bool:
    repo = Path(__file__).resolve().parents[2]
    vmlinux = repo / "bpf" / "build" / "vmlinux.h"
    if not vmlinux.exists():
        subprocess.run(["make", "-s", "-C", str(repo / "bpf")], check=True)
    (tmp / "f.bpf.c").write_text(FENTRY_PROG)
    subprocess.run(["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    f"-I{vmlinux.parent}", "-c", str(tmp / "f.bpf.c"), "-o", str(tmp / "f.o")],
                   check=True)
    pin = f"/sys/fs/bpf/ktrail-test-fentry-{os.getpid()}"
    p = subprocess.run([shutil.which("bpftool") or "/usr/sbin/bpftool", "prog", "load",
                        str(tmp / "f.o"), pin], capture_output=True)
    if p.returncode == 0:
        os.unlink(pin)
    return p.returncode == 0


def test_doctor_matches_independent_evidence(tmp_path: Path) -> None:
    code, r = doctor()
    assert code == 0 and r["ok"], r["problems"]
    mech = {k: v["available"] for k, v in r["mechanisms"].items()}
    for needed in ("tracepoint", "raw_tp", "tp_btf", "uprobe", "ringbuf"):
        assert mech[needed], f"{needed}: {r['mechanisms'][needed]['detail']}"
    assert mech["kprobe"] == os.path.exists("/sys/kernel/tracing/kprobe_events")
    lsms = Path("/sys/kernel/security/lsm").read_text().split(",")
    if "bpf" not in lsms:
        assert not mech["lsm"]
    assert mech["fentry"] == fentry_loads_independently(tmp_path)
    assert r["btf"] is True
    assert r["lockdown"] in ("none", "integrity")
    # Each event type names the hook it will use, from what is available.
    assert r["events"]["exec"]["hooks"][0].startswith("tp_btf:" if mech["tp_btf"] else "raw_tp:")
    assert any(h.startswith("tracepoint:") for h in r["events"]["exec"]["hooks"])


def test_doctor_text_report() -> None:
    p = subprocess.run([*KTRAIL, "doctor"], capture_output=True, timeout=60, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    for word in ("kernel", "BTF", "lockdown", "tracepoint", "kprobe", "fentry", "lsm",
                 "uprobe", "ringbuf", "exec", "fork", "exit", "ready"):
        assert word in p.stdout
