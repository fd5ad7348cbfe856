from __future__ import annotations

from pathlib import Path

import pytest
from fakeproc import FakeProc, stat_line

from ktrail.process import ProcFS, parse_stat
from ktrail.strings import raw


def test_pids_skips_non_numeric(fake: FakeProc) -> None:
    fake.add(10)
    fake.add(2)
    assert ProcFS(fake.path).pids() == [2, 10]


def test_pids_missing_root(tmp_path: Path) -> None:
    assert ProcFS(str(tmp_path / "nope")).pids() == []


def test_stat_comm_with_parens_and_spaces(fake: FakeProc) -> None:
    fake.add(42, comm="evil) (x y) S 9", ppid=7, start_ticks=12345, state="R")
    st = ProcFS(fake.path).stat(42)
    assert st is not None
    assert st.comm == "evil) (x y) S 9"
    assert (st.pid, st.state, st.ppid, st.start_ticks) == (42, "R", 7, 12345)


def test_parse_stat_malformed() -> None:
    assert parse_stat("") is None
    assert parse_stat("12 (x) S 1 2 3") is None  # too few fields
    assert parse_stat("12 x) S") is None
    assert parse_stat(stat_line(5, "ok", "S", 1, 9)) is not None


def test_stat_missing_pid(fake: FakeProc) -> None:
    fs = ProcFS(fake.path)
    assert fs.stat(999) is None
    assert fs.read(999) is None


def test_read_full(fake: FakeProc) -> None:
    fake.add(
        100,
        comm="bash",
        ppid=1,
        start_ticks=500,
        exe="/usr/bin/bash",
        args=["bash", "-c", "echo hi", ""],
        cwd="/home/alice",
        uid=1000,
        gid=1001,
        euid=0,
        cgroup="0::/user.slice/user-1000.slice/session-1.scope\n",
    )
    info = ProcFS(fake.path).read(100)
    assert info is not None
    assert info.pid == 100
    assert info.ppid == 1
    assert info.start_ticks == 500
    assert info.comm == "bash"
    assert info.exe == "/usr/bin/bash"
    assert not info.exe_deleted
    # Only the terminating NUL is dropped: a genuinely empty last argument survives.
    assert info.args == ["bash", "-c", "echo hi", ""]
    assert info.cwd == "/home/alice"
    assert (info.uid, info.gid) == (1000, 1001)  # real ids, not effective
    assert info.cgroup.startswith("0::/user.slice")
    assert not info.is_kernel_thread


def test_deleted_exe(fake: FakeProc) -> None:
    fake.add(7, exe="/tmp/payload (deleted)")
    info = ProcFS(fake.path).read(7)
    assert info is not None
    assert info.exe == "/tmp/payload"
    assert info.exe_deleted


def test_cmdline_undecodable_bytes(fake: FakeProc) -> None:
    fake.add(8, cmdline=b"prog\0\xff\xfe\0")
    info = ProcFS(fake.path).read(8)
    assert info is not None
    # Kept exactly (ktrail.strings): the event shows U+FFFD and the bytes in base64.
    assert info.args == ["prog", "\udcff\udcfe"]
    assert [raw(a) for a in info.args] == [b"prog", b"\xff\xfe"]


def test_cmdline_bound(fake: FakeProc) -> None:
    fake.add(9, args=["a" * 10, "b" * 10])
    info = ProcFS(fake.path, max_args_bytes=15).read(9)
    assert info is not None
    assert info.args == ["a" * 10, "bbbb"]
    assert info.args_truncated
    info = ProcFS(fake.path, max_args_bytes=22).read(9)
    assert info is not None
    assert not info.args_truncated


def test_kernel_threads(fake: FakeProc) -> None:
    fake.add_kthread(2, "kthreadd", ppid=0)
    fake.add_kthread(30, "kworker/0:1 (events)")
    # No PF_KTHREAD flag in the fixture: the ppid == 2 rule still applies.
    fake.add_kthread(31, "ksoftirqd/0", flags=0)
    # Reparented kthread-like with no flag and ppid 1: empty cmdline and no exe.
    fake.add_kthread(32, "odd", ppid=1, flags=0)
    fs = ProcFS(fake.path)
    for pid in (2, 30, 31, 32):
        info = fs.read(pid)
        assert info is not None, pid
        assert info.is_kernel_thread, pid
        assert info.args == []
        assert info.exe == ""
    k = fs.read(30)
    assert k is not None
    assert k.comm == "kworker/0:1 (events)"


def test_zombie_is_not_kernel_thread(fake: FakeProc) -> None:
    fake.add(50, state="Z", exe=None, cmdline=b"", ppid=1)
    info = ProcFS(fake.path).read(50)
    assert info is not None
    assert not info.is_kernel_thread


def test_user_process_with_hidden_exe_is_not_kthread(fake: FakeProc) -> None:
    # Unprivileged readers get EACCES on exe but cmdline stays readable.
    fake.add(51, exe=None, args=["sshd: root"], ppid=1)
    info = ProcFS(fake.path).read(51)
    assert info is not None
    assert not info.is_kernel_thread
    assert info.exe == ""


def test_missing_optional_files(fake: FakeProc) -> None:
    d = fake.add(60, exe=None, cwd=None)
    (d / "status").unlink()
    (d / "cgroup").unlink()
    info = ProcFS(fake.path).read(60)
    assert info is not None
    assert (info.uid, info.gid, info.cwd, info.cgroup) == (-1, -1, "", "")


def test_pid_reused_while_reading(fake: FakeProc, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add(70, start_ticks=10)
    fs = ProcFS(fake.path)
    real_cgroup = fs.cgroup

    def swap(pid: int) -> str | None:
        # The process exits and pid 70 is reused between our reads.
        fake.add(70, start_ticks=20)
        return real_cgroup(pid)

    monkeypatch.setattr(fs, "cgroup", swap)
    assert fs.read(70) is None


def test_permission_error_is_skipped(fake: FakeProc, monkeypatch: pytest.MonkeyPatch) -> None:
    fake.add(80)
    fs = ProcFS(fake.path)

    def denied(*_a: object, **_k: object) -> None:
        raise PermissionError(13, "denied")

    monkeypatch.setattr("builtins.open", denied)
    assert fs.stat(80) is None
    assert fs.read(80) is None
