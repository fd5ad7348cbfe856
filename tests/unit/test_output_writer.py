"""Issue 12, findings 3 and 4 in-process: the output's writer thread (bounded,
counted, never blocking the caller, bounded at close) and private files."""

from __future__ import annotations

import errno
import io
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from ktrail.output.private import PrivateFileError, make_dirs, open_private
from ktrail.output.target import FdStream, RotatingFile
from ktrail.output.writer import QueuedWriter


class Flaky:
    """A target that fails with `err` until told to work."""

    name = "flaky"

    def __init__(self, err: int) -> None:
        self.err = err
        self.ok = False
        self.data = b""

    def write(self, data: bytes) -> None:
        if not self.ok:
            raise OSError(self.err, os.strerror(self.err))
        self.data += data

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Stuck:
    """A target whose write blocks until released (a paused terminal)."""

    name = "stuck"

    def __init__(self) -> None:
        self.release = threading.Event()

    def write(self, data: bytes) -> None:
        self.release.wait(60)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_transient_failure_is_said_once_counted_and_retried() -> None:
    warn = io.StringIO()
    target = Flaky(errno.ENOSPC)
    w = QueuedWriter(target, warn=warn, retry_s=0.2)
    for _ in range(5):
        w.submit(b"x\n" * 10, events=10, alerts=1)
        time.sleep(0.01)
    wait_for(lambda: w.stats()["dropped_events"] == 50)
    st = w.stats()
    assert st["failing"] and st["errors"] >= 1 and st["dropped_bytes"] == 100
    assert st["dropped_alerts"] == 5 and st["last_error"] == "No space left on device"
    target.ok = True
    time.sleep(0.3)  # past the retry time
    w.submit(b"back\n", events=1)
    wait_for(lambda: target.data == b"back\n")
    w.close()
    lines = warn.getvalue().splitlines()
    assert lines[0] == ("ktrail: warning: output flaky: No space left on device; events still "
                        "go to the rules; output writes are dropped and counted in "
                        "stats.output (tried again every 0.2 s)")
    assert len(lines) == 2 and "output flaky: writing again" in lines[1]
    assert not w.stats()["failing"]


def test_broken_pipe_is_for_good() -> None:
    warn = io.StringIO()
    w = QueuedWriter(Flaky(errno.EPIPE), warn=warn, retry_s=0.0)
    for _ in range(20):
        w.submit(b"x\n", events=1)
    w.close()
    st = w.stats()
    assert w.gone and st["dropped_events"] == 20 and st["errors"] == 1
    assert len(warn.getvalue().splitlines()) == 1


def test_a_stuck_output_never_blocks_the_caller_and_sheds_whole_batches() -> None:
    warn = io.StringIO()
    target = Stuck()
    w = QueuedWriter(target, max_bytes=1000, warn=warn, drain_s=0.5)
    t0 = time.monotonic()
    for _ in range(200):
        w.submit(b"y" * 99 + b"\n", events=1)
    # 200 submits behind a write that never returns: none of them waited.
    assert time.monotonic() - t0 < 5.0
    st = w.stats()
    assert st["queued_bytes"] <= 1000 and st["shed_batches"] >= 180
    assert st["dropped_events"] == st["shed_batches"]
    assert "not keeping up" in warn.getvalue()
    t0 = time.monotonic()
    w.close()  # bounded: drain_s, then one cancel step
    assert time.monotonic() - t0 < 10.0
    st = w.stats()
    # Everything is written or counted: one write in flight, the queue, the shed.
    assert st["dropped_events"] == 200 and st["queued_bytes"] == 0
    assert "still not taking data" in warn.getvalue()
    target.release.set()


def test_a_full_pipe_is_given_up_on_at_close(tmp_path: Path) -> None:
    rd, wr = os.pipe()
    os.set_blocking(wr, False)
    try:
        w = QueuedWriter(FdStream(wr, "pipe"), warn=io.StringIO(), drain_s=0.3)
        for _ in range(50):
            w.submit(b"z" * 4095 + b"\n", events=1)
        t0 = time.monotonic()
        w.close()
        assert time.monotonic() - t0 < 10.0
        st = w.stats()
        assert st["written_bytes"] + st["dropped_bytes"] == 50 * 4096
        assert st["dropped_events"] > 0
    finally:
        os.close(rd)


def test_dev_full_stream() -> None:
    fd = os.open("/dev/full", os.O_WRONLY)
    warn = io.StringIO()
    w = QueuedWriter(FdStream(fd, "stdout"), warn=warn, retry_s=60)
    for _ in range(3):
        w.submit(b"a\n", events=1)
    w.close()
    assert w.stats()["dropped_events"] == 3
    assert warn.getvalue().count("\n") == 1


def test_files_are_0600_and_directories_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = str(tmp_path / "trail.json")
        rf = RotatingFile(path, max_bytes=100, keep=2)
        for _ in range(5):
            rf.write(b"x" * 59 + b"\n")
        rf.close()
        assert rf.rotations == 4
        for name in os.listdir(tmp_path):
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600, name
        os.umask(0o277)  # even a umask that takes the owner's write bit off
        make_dirs(str(tmp_path / "a" / "b"))
        fd, _ = open_private(str(tmp_path / "c" / "d" / "f"), os.O_WRONLY)
        os.close(fd)
    finally:
        os.umask(old)
    for d in ("a", "a/b", "c", "c/d"):
        assert stat.S_IMODE(os.stat(tmp_path / d).st_mode) == 0o700, d
    assert stat.S_IMODE(os.stat(tmp_path / "c" / "d" / "f").st_mode) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_files_and_links_of_another_user_are_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.write_bytes(b"keep\n")
    os.chown(theirs, 65534, 65534)
    with pytest.raises(PrivateFileError, match="owned by uid 65534"):
        RotatingFile(str(theirs), max_bytes=0)
    assert theirs.read_bytes() == b"keep\n"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "target")
    os.lchown(link, 65534, 65534)
    with pytest.raises(PrivateFileError, match="symbolic link owned by uid 65534"):
        RotatingFile(str(link), max_bytes=0)
    assert not (tmp_path / "target").exists()
    # A link of ours (root's), like /dev/stderr, is followed.
    mine = tmp_path / "mine"
    mine.symlink_to(tmp_path / "real")
    rf = RotatingFile(str(mine), max_bytes=0)
    rf.write(b"ok\n")
    rf.close()
    assert (tmp_path / "real").read_bytes() == b"ok\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to another user needs root")
def test_a_trusted_link_to_a_link_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.symlink_to(tmp_path / "victim")
    os.lchown(theirs, 65534, 65534)
    mine = tmp_path / "mine"
    mine.symlink_to(theirs)
    with pytest.raises(PrivateFileError, match=f"leads to {theirs}, a symbolic link owned"):
        RotatingFile(str(mine), max_bytes=0)
    assert not (tmp_path / "victim").exists()


def test_dev_stdout_of_a_pipe_is_opened_through_proc() -> None:
    rd, wr = os.pipe()
    saved = os.dup(1)
    try:
        os.dup2(wr, 1)
        rf = RotatingFile("/dev/stdout", max_bytes=10)  # a pipe: never rotated
        rf.write(b"through the pipe\n")
        rf.close()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(wr)
    assert os.read(rd, 100) == b"through the pipe\n"
    os.close(rd)


def test_an_existing_file_others_could_write_loses_those_bits(tmp_path: Path) -> None:
    path = tmp_path / "trail.json"
    path.write_bytes(b"old\n")
    os.chmod(path, 0o666)
    RotatingFile(str(path), max_bytes=0).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == b"old\n"
