"""Issue 12, finding 3: an output that cannot take data (a full disk, /dev/full,
a pipe nobody reads or whose reader left, a FIFO with no reader, a closed
stdout) is said once, counted, and never stops or hangs auditing: the store
keeps the trail and shutdown ends in bounded time."""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sensorkit import KTRAIL, jsonl, ktrail, probe, until

F_SETPIPE_SZ = 1031






def stored(db: Path, exe: str) -> list[dict[str, Any]]:
    return jsonl(ktrail("query", "--store", str(db), "--format", "json", "--type", "exec",
                        "--exe", exe).stdout)


class Run:
    """`ktrail run` with the given stdout, started and ready."""

    def __init__(self, *args: str, stdout: Any = subprocess.DEVNULL,
                 preexec: Callable[[], None] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*KTRAIL, "run", "--stats-interval", "0", *args], stdout=stdout,
            stderr=subprocess.PIPE, start_new_session=True, preexec_fn=preexec)
        self.err: list[str] = []
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline().decode()
            if not line:
                break
            self.err.append(line)
            if "ready in" in line:
                return
        self.proc.kill()
        raise AssertionError("ktrail did not start:\n" + "".join(self.err))

    def finish(self, sig: int | None = signal.SIGTERM, timeout: float = 60) -> str:
        """Stops it (or lets --duration do it) and waits, bounded: a sensor
        that hangs fails here instead of hanging the suite."""
        time.sleep(0.3)
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
            raise AssertionError(f"ktrail did not end within {timeout} s:\n"
                                 + "".join(self.err)) from None
        text = "".join(self.err) + err.decode()
        assert "Traceback" not in text, text
        return text


@pytest.fixture
def runs() -> Iterator[Callable[..., Run]]:
    started: list[Run] = []

    def start(*args: str, **kw: Any) -> Run:
        r = Run(*args, **kw)
        started.append(r)
        return r

    yield start
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


def workload(n: int = 300) -> None:
    """Enough exec/fork/exit events to fill a small pipe or disk many times."""
    subprocess.run(["sh", "-c", f"for i in $(seq {n}); do /bin/true; done"], check=True)


def warnings(err: str, needle: str) -> list[str]:
    return [line for line in err.splitlines() if needle in line]


def test_stdout_on_dev_full_warns_once_and_the_store_keeps_the_trail(
        runs, tmp_path: Path) -> None:
    db = tmp_path / "store" / "trail.db"
    with open("/dev/full", "wb") as full:
        r = runs("--store", str(db), stdout=full)
    workload(100)
    exe = probe(tmp_path)
    subprocess.run([exe], check=True)
    assert until(lambda: stored(db, exe))
    err = r.finish()
    assert r.proc.returncode == 0, err
    [warn] = warnings(err, "output stdout")
    assert warn == ("ktrail: warning: output stdout: No space left on device; events still "
                    "go to the store and rules; output writes are dropped and counted in "
                    "stats.output (tried again every 10 s)")
    assert "not written: see stats.output" in err.splitlines()[-1]


@pytest.mark.parametrize("end", ["duration", "sigterm"])
def test_unread_stdout_pipe_never_blocks_nor_hangs_the_sensor(
        runs, tmp_path: Path, end: str) -> None:
    db = tmp_path / "store" / "trail.db"
    rd, wr = os.pipe()
    fcntl.fcntl(wr, F_SETPIPE_SZ, 4096)  # full after a few events
    try:
        args = ["--store", str(db), "--format", "json"]
        if end == "duration":
            args += ["--duration", "8"]
        r = runs(*args, stdout=wr)
        os.close(wr)
        workload()  # the pipe is full long before this ends
        # The reader is not blocked: what happens after the pipe filled is stored.
        exe = probe(tmp_path)
        subprocess.run([exe], check=True)
        assert until(lambda: stored(db, exe))
        err = r.finish(signal.SIGTERM if end == "sigterm" else None)
    finally:
        os.close(rd)
    assert r.proc.returncode == 0, err
    summary = err.splitlines()[-1]
    assert "not written: see stats.output" in summary, err


def test_stdout_reader_gone_the_sensor_keeps_storing(runs, tmp_path: Path) -> None:
    """`ktrail run | head`, with the store on: EPIPE (SIGPIPE ignored) is said once,
    and the trail goes on into the store."""
    db = tmp_path / "store" / "trail.db"
    rd, wr = os.pipe()
    r = runs("--store", str(db), "--format", "json", stdout=wr)
    os.close(wr)
    os.close(rd)  # the reader went away
    workload(50)
    exe = probe(tmp_path)
    subprocess.run([exe], check=True)
    assert until(lambda: stored(db, exe))
    assert r.proc.poll() is None  # still auditing
    err = r.finish()
    assert r.proc.returncode == 0, err
    [warn] = warnings(err, "output stdout")
    assert "Broken pipe" in warn and "events still go to the store" in warn


def test_fifo_output_without_reader_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # Before: blocked in open() for ever, with no message (the timeout fails it).
    p = subprocess.run([*KTRAIL, "run", "--no-store", "--output", str(fifo), "--duration",
                        "2"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 2
    assert p.stderr == (f"ktrail: error: --output {fifo}: a FIFO with no reader; start its "
                        "reader first\n")


def test_fifo_output_with_a_reader_gets_the_events(runs, tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        r = runs("--no-store", "--format", "json", "--output", str(fifo))
        exe = probe(tmp_path)
        subprocess.run([exe], check=True)
        data = b""

        def got() -> bool:
            nonlocal data
            with contextlib.suppress(BlockingIOError):
                data += os.read(rd, 1 << 20)
            return exe.encode() in data
        assert until(got)
        err = r.finish()
    finally:
        os.close(rd)
    assert r.proc.returncode == 0, err


def _close_stdout() -> None:
    os.close(1)


def test_closed_stdout_is_said_once_and_the_store_keeps_the_trail(
        runs, tmp_path: Path) -> None:
    db = tmp_path / "store" / "trail.db"
    r = runs("--store", str(db), stdout=None, preexec=_close_stdout)
    exe = probe(tmp_path)
    subprocess.run([exe], check=True)
    assert until(lambda: stored(db, exe))
    err = r.finish()
    assert r.proc.returncode == 0, err
    [warn] = warnings(err, "output stdout")
    assert "output stdout: closed at start; events still go to the store and rules" in warn


def test_closed_stdout_without_a_store_is_one_error_line() -> None:
    p = subprocess.run([*KTRAIL, "run", "--no-store", "--duration", "2"], stdout=None,
                       stderr=subprocess.PIPE, text=True, timeout=60,
                       preexec_fn=_close_stdout)
    assert p.returncode == 2
    assert p.stderr == ("ktrail: error: stdout: closed, and the store is off: nothing would "
                        "keep the trail; give --output PATH, or keep the store on\n")


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_under_output_is_said_once_retried_and_the_file_stays_whole(
        runs, tiny_fs: Path, tmp_path: Path) -> None:
    db = tmp_path / "store" / "trail.db"
    out = tiny_fs / "trail.jsonl"
    filler = tiny_fs / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    os.truncate(filler, filler.stat().st_size - (16 << 10))  # 16 KiB left
    r = runs("--store", str(db), "--format", "json", "--output", str(out))
    workload(200)  # far more than 16 KiB of JSON
    first = probe(tmp_path)
    subprocess.run([first], check=True)
    assert until(lambda: stored(db, first))  # the store has what the disk refused
    filler.unlink()  # space comes back: the output is tried again within 10 s
    later = probe(tmp_path)

    def written() -> bool:
        subprocess.run([later], check=True)
        return later.encode() in out.read_bytes()
    assert until(written, timeout=40)
    err = r.finish()
    assert r.proc.returncode == 0, err
    [warn] = warnings(err, "No space left on device")
    assert warn.startswith(f"ktrail: warning: output {out}: No space left on device; ")
    assert len(warnings(err, f"output {out}: writing again")) == 1
    # Whole lines only: a write the disk cut short was taken back.
    records = jsonl(out.read_bytes())
    [final] = [e["stats"] for e in records if e["evt"]["type"] == "stats"]
    assert final["final"]
    st = final["output"]
    assert st["dropped_events"] > 0 and st["errors"] > 0
    assert st["last_error"] == "No space left on device" and not st["failing"]


def test_without_a_store_a_gone_reader_ends_the_run_quietly(runs) -> None:
    """`ktrail run --no-store | head`: nothing else keeps the trail, so the run
    ends by itself, exit code 0, with one line saying why."""
    rd, wr = os.pipe()
    r = runs("--no-store", "--format", "json", stdout=wr)
    os.close(wr)
    os.close(rd)
    workload(20)
    err = r.finish(sig=None)  # no signal: it ends by itself
    assert r.proc.returncode == 0, err
    [warn] = warnings(err, "output stdout")
    assert warn == ("ktrail: warning: output stdout: Broken pipe; nothing else keeps the trail "
                    "(the store is off): stopping; output writes are dropped and counted in "
                    "stats.output")
    assert "error" not in err
