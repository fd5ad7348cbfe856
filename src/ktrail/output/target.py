"""Output targets: a stream, a descriptor (stdout), or a file rotated by size.

Targets write synchronously and raise OSError when they cannot; the output
sink calls them from its writer thread (output/writer.py), never from the
run loop. Descriptors that may be non-blocking (a FIFO, a pipe) are waited
on with poll() in short steps, so that a stuck reader can be given up on.
"""

from __future__ import annotations

import errno
import os
import select
import stat
import threading
from typing import BinaryIO, Protocol

from ktrail.output.private import open_private

# How long one poll() waits before looking at the cancel flag again.
_POLL_STEP_MS = 200


class Cancelled(Exception):
    """The write was given up on (shutdown, its time bound passed)."""


class Target(Protocol):
    name: str

    def write(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def write_all(fd: int, data: bytes, cancel: threading.Event | None = None) -> int:
    """Writes all of `data`, waiting on a non-blocking descriptor until it
    takes more or `cancel` is set (then Cancelled). Returns bytes written;
    an OSError carries what was written before it in `.written`."""
    view = memoryview(data)
    done = 0
    poller: select.poll | None = None
    while done < len(view):
        try:
            done += os.write(fd, view[done:])
            continue
        except BlockingIOError:
            pass
        except OSError as e:
            e.written = done  # type: ignore[attr-defined]
            raise
        if cancel is not None and cancel.is_set():
            raise Cancelled
        if poller is None:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
        poller.poll(_POLL_STEP_MS)
    return done


class Stream:
    """A file object (tests, benchmarks: a BytesIO, /dev/null)."""

    def __init__(self, stream: BinaryIO, name: str = "stream") -> None:
        self._s = stream
        self.name = name

    def write(self, data: bytes) -> None:
        if data:
            self._s.write(data)

    def flush(self) -> None:
        self._s.flush()

    def close(self) -> None:
        self.flush()


class FdStream:
    """A descriptor ktrail writes to directly (stdout), with no Python buffer:
    a writer thread stuck in write() then holds no lock the interpreter needs
    at exit."""

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.cancel = threading.Event()

    @classmethod
    def stdout(cls) -> FdStream:
        """fd 1, or for a pipe a descriptor of its own opened non-blocking
        (through /proc): O_NONBLOCK set on fd 1 itself would change the
        pipe for every process sharing it (the shell). Raises OSError when
        fd 1 is closed, or the pipe's reader is already gone."""
        st = os.fstat(1)
        if stat.S_ISFIFO(st.st_mode):
            try:
                return cls(os.open("/proc/self/fd/1",
                                   os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC), "stdout")
            except FileNotFoundError:
                pass  # no /proc: blocking writes, the writer thread is given up on at exit
            except OSError as e:
                if e.errno == errno.ENXIO:  # no reader left on the pipe
                    raise OSError(errno.EPIPE, "Broken pipe (its reader is gone)") from None
                raise
        return cls(os.dup(1), "stdout")

    def write(self, data: bytes) -> None:
        if data:
            write_all(self.fd, data, self.cancel)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class RotatingFile:
    """Appends to ``path``; past ``max_bytes`` it becomes path.1, path.1 becomes
    path.2 ... and only ``keep`` old files remain. Files are cut at line ends,
    so a JSON line is never split across files. Every file is created 0600
    and opened as output/private.py says; a missing directory is an error
    (a mistyped path is not created). A FIFO or a device is written as
    it is, never rotated."""

    def __init__(self, path: str, max_bytes: int, keep: int = 5) -> None:
        self.path = path
        self.name = path
        self.keep = keep
        self.rotations = 0
        self.cancel = threading.Event()
        self._fd, st = open_private(path, os.O_WRONLY | os.O_APPEND,
                                        make_parents=False)
        self.regular = stat.S_ISREG(st.st_mode)
        self.max_bytes = max_bytes if self.regular else 0
        self._size = st.st_size if self.regular else 0

    def write(self, data: bytes) -> None:
        # Fill the current file up to the last whole line that fits, rotate,
        # go on; a single line longer than max_bytes gets a file of its own.
        if self._fd < 0:  # a rotation failed half-way: start a new file
            self._fd, st = open_private(self.path, os.O_WRONLY | os.O_APPEND,
                                           make_parents=False)
            self._size = st.st_size
        while data:
            room = self.max_bytes - self._size if self.max_bytes else len(data)
            if len(data) <= room:
                cut = len(data)
            else:
                cut = data.rfind(b"\n", 0, room) + 1
                if cut == 0 and self._size == 0:
                    cut = data.find(b"\n") + 1 or len(data)
            if cut:
                self._append(data[:cut])
                data = data[cut:]
            if data:
                self._rotate()

    def _append(self, chunk: bytes) -> None:
        try:
            self._size += write_all(self._fd, chunk, self.cancel)
        except OSError as e:
            written = getattr(e, "written", 0)
            if written and self.regular:
                # A full disk took part of it: cut the half line off, so the
                # file stays whole lines when writing resumes.
                try:
                    os.ftruncate(self._fd, self._size)
                except OSError:
                    self._size += written
            raise

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        for i in range(self.keep - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        if self.keep > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._fd, _ = open_private(self.path, os.O_WRONLY | os.O_APPEND,
                                           make_parents=False)
        self._size = 0
        self.rotations += 1

    def flush(self) -> None:
        pass  # written with os.write: nothing is buffered here

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
