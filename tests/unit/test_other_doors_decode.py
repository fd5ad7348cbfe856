"""Decoding of the other doors' records: open_by_handle_at as an `open`,
/proc/PID/mem opens, and the syscall numbers they added without moving any."""

from __future__ import annotations

from ktrail.events.model import SysFlags, decode
from ktrail.events.registry import BY_NAME, Syscall


def test_open_by_handle_at_decodes_as_an_open_with_its_handle() -> None:
    how = BY_NAME["open"].decoding
    assert how is not None
    args = [(1 << 64) - 100, 0, 0, 1, 8, 0]  # AT_FDCWD as the mount fd
    strs = ["/etc/shadow", None, b"\x02\x00\x00\x00\xff\x00\x00\x00", "/"]
    objs = decode(how, args, strs, int(SysFlags.WATCHED), "open_by_handle_at")
    assert objs == {"file": {
        "path": "/etc/shadow", "flags": ["O_RDONLY"], "mode": "0000", "watched": True,
        "handle": {"type": 1, "size": 8, "bytes": "02000000ff000000", "mount_fd": -100,
                   "mount_path": "/"}}}


def test_a_failed_open_by_handle_at_keeps_the_handle() -> None:
    how = BY_NAME["open"].decoding
    assert how is not None
    objs = decode(how, [3, 0, 0, 0xFFFFFFFF, 200, 0], [None, None, b"\x01", "/tmp"], 0,
                  "open_by_handle_at")
    assert objs["file"]["path"] is None
    assert objs["file"]["handle"] == {"type": -1, "size": 200, "bytes": "01", "mount_fd": 3,
                                      "mount_path": "/tmp"}


def test_proc_mem_open_carries_its_process_for_the_enricher() -> None:
    how = BY_NAME["open"].decoding
    assert how is not None
    objs = decode(how, [(1 << 64) - 100, 2, 0, 4242, 123456789, 0], ["/proc/4242/mem"],
                  int(SysFlags.PROC_MEM), "openat")
    assert objs["file"]["mem_target"] == {"pid": 4242, "start_ns": 123456789}
    assert objs["file"]["flags"] == ["O_RDWR"]
    # Its process had exited: no pid to name.
    objs = decode(how, [0, 0, 0, 0, 0, 0], ["/proc/1/mem"], int(SysFlags.PROC_MEM), "openat")
    assert objs["file"]["mem_target"]["pid"] is None


def test_new_syscalls_take_the_next_values_and_none_moves() -> None:
    # bpf/ktrail.h is append-only: open_by_handle_at joined `open` after setns.
    assert (Syscall.open, Syscall.creat, Syscall.setns) == (1, 4, 62)
    assert (Syscall.open_by_handle_at, Syscall.process_vm_readv,
            Syscall.process_vm_writev) == (63, 64, 65)
