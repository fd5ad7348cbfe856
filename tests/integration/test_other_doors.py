"""The same effect through another door (issue 13, class 1): a file opened by
handle instead of by path (Shocker), and another process's memory written
or read with process_vm_writev/readv or through /proc/PID/mem. Each must be
recorded by the default profile and raise its alert, also when an
unprivileged user does it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

# doors FILE: opens FILE by handle (when it may), then forks a child that
# waits, and writes and reads the child's memory through every door: the
# syscalls, /proc/CHILD/mem, /proc/CHILD/task/CHILD/mem; /proc/self/mem read
# (one's own memory: not reported). Prints what it did, one `key value` a line.
PROGRAM = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile char victim[64] = "untouched";

static int must(int ok, const char *what)
{
    if (!ok) {
        perror(what);
        exit(1);
    }
    return ok;
}

int main(int argc, char **argv)
{
    struct { struct file_handle h; unsigned char b[128]; } fh;
    int mount_id, mfd, fd, pipefd[2], i;
    char path[64], buf[16] = "INJECTED", got[16] = {0}, c;
    struct iovec l = { buf, 8 }, r = { (void *)victim, 8 };
    pid_t child;

    /* Shocker's door: the handle from name_to_handle_at (root may), then
     * open_by_handle_at on the mount of the file's directory. */
    fh.h.handle_bytes = sizeof(fh.b);
    must(name_to_handle_at(AT_FDCWD, argv[1], &fh.h, &mount_id, 0) == 0,
         "name_to_handle_at");
    mfd = open(argv[2], O_RDONLY | O_DIRECTORY);
    must(mfd >= 0, "open dir");
    fd = open_by_handle_at(mfd, &fh.h, O_RDONLY);
    printf("handle_fd %d\nmount_fd %d\nhandle_type %d\nhandle ", fd, mfd, fh.h.handle_type);
    for (i = 0; i < (int)fh.h.handle_bytes; i++)
        printf("%02x", fh.b[i]);
    printf("\n");

    must(pipe(pipefd) == 0, "pipe");
    child = fork();
    if (child == 0) {
        read(pipefd[0], &c, 1); /* until the parent is done */
        _exit(memcmp((char *)victim, "INJECTED", 8) == 0 ? 0 : 3);
    }
    printf("child %d\naddr %lu\n", child, (unsigned long)(uintptr_t)victim);
    must(process_vm_writev(child, &l, 1, &r, 1, 0) == 8, "process_vm_writev");
    l.iov_base = got;
    must(process_vm_readv(child, &l, 1, &r, 1, 0) == 8, "process_vm_readv");
    snprintf(path, sizeof(path), "/proc/%d/mem", child);
    fd = open(path, O_RDWR);
    must(fd >= 0, path);
    must(pwrite(fd, "INJECTED", 8, (off_t)(uintptr_t)victim) == 8, "pwrite mem");
    snprintf(path, sizeof(path), "/proc/%d/task/%d/mem", child, child);
    must(open(path, O_RDONLY) >= 0, path);
    must(open("/proc/self/mem", O_RDONLY) >= 0, "/proc/self/mem");
    write(pipefd[1], "x", 1);
    waitpid(child, &i, 0);
    must(WIFEXITED(i) && WEXITSTATUS(i) == 0, "child saw the write");
    printf("done\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def doors() -> Iterator[Path]:
    # Not under pytest's tmp_path: nobody must be able to run it.
    d = Path(tempfile.mkdtemp(prefix="ktrail-doors-"))
    try:
        d.chmod(0o755)
        (d / "doors.c").write_text(PROGRAM)
        cc = shutil.which("cc") or shutil.which("gcc")
        assert cc, "a C compiler is needed (scripts/setup.sh installs gcc)"
        subprocess.run([cc, "-O2", "-Wall", "-o", str(d / "doors"), str(d / "doors.c")],
                       check=True)
        (d / "secret").write_text("host file\n")
        (d / "secret").chmod(0o644)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def run_doors(doors: Path, as_nobody: bool) -> tuple[int, dict[str, str]]:
    cmd = [*(NOBODY if as_nobody else []), str(doors / "doors"), str(doors / "secret"),
           str(doors)]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    out, _ = p.communicate(timeout=60)
    # As nobody, name_to_handle_at works but open_by_handle_at is refused.
    assert p.returncode == 0, out
    return p.pid, dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def alerts_of(events: list[dict[str, Any]], pid: int, rule: str) -> list[dict[str, Any]]:
    return [e for e in events if e["evt"]["type"] == "alert" and e["alert"]["rule"] == rule
            and e["proc"]["pid"] == pid]


@pytest.mark.parametrize("as_nobody", [False, True], ids=["root", "nobody"])
def test_other_doors_are_recorded_and_alerted(sensor, doors: Path, as_nobody: bool) -> None:
    s = sensor()
    pid, did = run_doors(doors, as_nobody)
    t = s.stop()
    child, addr = int(did["child"]), int(did["addr"])
    mine = t.by_pid(pid)

    # open_by_handle_at: an `open` with the kernel's path of the file.
    [h] = [e for e in mine if e["evt"]["type"] == "open"
           and e["evt"]["syscall"] == "open_by_handle_at"]
    handle = h["file"]["handle"]
    assert handle["bytes"] == did["handle"] and handle["type"] == int(did["handle_type"])
    assert handle["size"] == len(did["handle"]) // 2
    assert handle["mount_fd"] == int(did["mount_fd"]) and handle["mount_path"] == str(doors)
    if as_nobody:
        assert h["evt"]["error"] == "EPERM" and h["file"]["path"] is None
    else:
        assert h["evt"]["retval"] == int(did["handle_fd"]) >= 0
        assert h["file"]["path"] == str(doors / "secret")
        assert h["file"]["flags"] == ["O_RDONLY"]
    [a] = alerts_of(t.events, pid, "File opened by handle")
    assert "T1611" in a["alert"]["mitre"]

    # process_vm_writev / readv, the target named.
    vm = {e["evt"]["syscall"]: e for e in mine if e["evt"]["type"] == "process_vm"}
    assert set(vm) == {"process_vm_writev", "process_vm_readv"}
    for e in vm.values():
        assert e["evt"]["retval"] == 8
        assert e["process_vm"]["target"]["pid"] == child
        assert e["process_vm"]["target"]["exec_id"].startswith(f"{child}:")
        assert e["process_vm"]["addr"] == addr and e["process_vm"]["len"] == 8
        assert e["process_vm"]["local_iovcnt"] == e["process_vm"]["remote_iovcnt"] == 1

    # /proc/CHILD/mem for writing and task/CHILD/mem for reading: both name
    # the child exactly; /proc/self/mem read is one's own, not reported.
    mem = [e for e in mine if e["evt"]["type"] == "open" and "mem_target" in e["file"]]
    assert [m["file"]["path"] for m in mem] == [f"/proc/{child}/mem",
                                                 f"/proc/{child}/task/{child}/mem"]
    assert [m["file"]["flags"] for m in mem] == [["O_RDWR"], ["O_RDONLY"]]
    exec_id = vm["process_vm_writev"]["process_vm"]["target"]["exec_id"]
    for m in mem:
        assert m["file"]["mem_target"]["pid"] == child
        assert m["file"]["mem_target"]["exec_id"] == exec_id
        assert m["file"]["mem_target"]["self"] is False

    # One alert per door, with its technique.
    for rule, syscall, technique in (
            ("Process memory written by another process", "process_vm_writev", "T1055"),
            ("Process memory written through /proc/PID/mem", "openat", "T1055"),
            ("Process memory read by another process", "process_vm_readv", "T1003"),
            ("Process memory read through /proc/PID/mem", "openat", "T1003")):
        [a] = alerts_of(t.events, pid, rule)
        assert a["alert"]["events"][0]["evt"]["syscall"] == syscall
        assert technique in a["alert"]["mitre"]
        assert str(child) in a["alert"]["output"]
    assert os.getpid() in [x["pid"] for x in h["proc"]["ancestors"]]


SELF = """
import ctypes, os
os.close(os.open("/proc/self/mem", os.O_RDWR))
libc = ctypes.CDLL(None, use_errno=True)
buf, got = ctypes.create_string_buffer(b"mine"), ctypes.create_string_buffer(4)
class Iov(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local, remote = Iov(ctypes.addressof(got), 4), Iov(ctypes.addressof(buf), 4)
assert libc.process_vm_readv(os.getpid(), ctypes.byref(local), 1, ctypes.byref(remote), 1,
                             0) == 4
print(os.getpid())
"""


def test_own_memory_writes_are_marked_self(sensor) -> None:
    # Writing one's own memory through /proc/self/mem is reported (it gets
    # around page protections) but marked as self: no alert for another's.
    # Reading one's own with process_vm_readv (a safe pointer probe) is
    # filtered out in the kernel.
    script = SELF
    s = sensor()
    pid = int(subprocess.run(["python3", "-c", script], capture_output=True, text=True,
                             check=True).stdout)
    t = s.stop()
    [m] = [e for e in t.by_pid(pid, "open") if "mem_target" in e["file"]]
    assert m["file"]["path"] == f"/proc/{pid}/mem"
    assert m["file"]["mem_target"]["self"] is True
    assert m["file"]["mem_target"]["exec_id"] == m["proc"]["exec_id"]
    assert not alerts_of(t.events, pid, "Process memory written through /proc/PID/mem")
    assert not t.by_pid(pid, "process_vm")
