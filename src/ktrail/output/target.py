"""Output targets: a stream, or a file rotated by size."""

from __future__ import annotations

import os
from typing import BinaryIO, Protocol


class Target(Protocol):
    def write(self, data: bytes) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class Stream:
    def __init__(self, stream: BinaryIO) -> None:
        self._s = stream

    def write(self, data: bytes) -> None:
        if data:
            self._s.write(data)

    def flush(self) -> None:
        self._s.flush()

    def close(self) -> None:
        self.flush()


class RotatingFile:
    """Appends to ``path``; past ``max_bytes`` it becomes path.1, path.1 becomes
    path.2 ... and only ``keep`` old files remain. Files are cut at line ends,
    so a JSON line is never split across files."""

    def __init__(self, path: str, max_bytes: int, keep: int = 5) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.rotations = 0
        self._f = open(path, "ab")  # noqa: SIM115 - lives as long as the target
        self._size = self._f.tell()

    def write(self, data: bytes) -> None:
        # Fill the current file up to the last whole line that fits, rotate,
        # go on; a single line longer than max_bytes gets a file of its own.
        while data:
            room = self.max_bytes - self._size if self.max_bytes else len(data)
            if len(data) <= room:
                cut = len(data)
            else:
                cut = data.rfind(b"\n", 0, room) + 1
                if cut == 0 and self._size == 0:
                    cut = data.find(b"\n") + 1 or len(data)
            if cut:
                self._f.write(data[:cut])
                self._size += cut
                data = data[cut:]
            if data:
                self._rotate()

    def _rotate(self) -> None:
        self._f.close()
        for i in range(self.keep - 1, 0, -1):
            src = f"{self.path}.{i}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{i + 1}")
        if self.keep > 0:
            os.replace(self.path, f"{self.path}.1")
        else:
            os.unlink(self.path)
        self._f = open(self.path, "ab")  # noqa: SIM115
        self._size = 0
        self.rotations += 1

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()
