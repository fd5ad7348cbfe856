"""This process's memory: what it holds, and giving back what it freed.

After a burst of short-lived processes the sensor and its store process
kept hundreds of MB they no longer used: Python's dicts never shrink when
entries are deleted, and glibc keeps freed heap memory mapped (large
buffers, such as a batch's JSON, come from the heap once glibc has raised
its mmap threshold, and up to 64 MB of free heap top per arena is then
kept). So `ktrail run` fixes glibc's thresholds at start (`tune_malloc`,
inherited by the store process), owners of big maps rebuild them after
mass deletion (`compacted`), and the loops of both processes call
`Trimmer.tick`, which returns free heap pages to the kernel once enough
has piled up.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
import time
from collections.abc import MutableMapping
from typing import Any, TypeVar

M = TypeVar("M", bound=MutableMapping[Any, Any])

_PAGE = os.sysconf("SC_PAGE_SIZE")
# A dict's table takes ~100 bytes per entry at most once it has grown (a
# third to two thirds full); 4x that means most of it is empty slots.
_WASTE_BYTES_PER_ENTRY = 400
_COMPACT_FLOOR = 1 << 20  # smaller tables are not worth a copy


def rss_bytes(pid: int | str = "self") -> int | None:
    """Resident set size of `pid` (this process by default); None if gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def compacted(d: M) -> M | None:
    """A copy of `d` (same type and order) when its table is mostly empty
    slots left by deletions, else None. The caller replaces its map with it."""
    size = sys.getsizeof(d)
    if size < _COMPACT_FLOOR or size < _WASTE_BYTES_PER_ENTRY * len(d):
        return None
    return type(d)(d)  # type: ignore[call-arg]


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


@functools.cache
def _libc() -> Any:
    # The process's own symbols, where libc's are: ctypes.util.find_library
    # would run ldconfig in a child process, a fork of the sensor that its
    # own trail would show once the probes are attached.
    try:
        libc = ctypes.CDLL(None)
        if not hasattr(libc, "malloc_trim"):
            return None  # not glibc (musl has no malloc_trim): nothing to do
    except OSError:
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]
    libc.malloc_trim.restype = ctypes.c_int
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    if hasattr(libc, "mallinfo2"):  # glibc 2.33+
        libc.mallinfo2.argtypes = []
        libc.mallinfo2.restype = _MallInfo2
    return libc


# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks this large (a batch's JSON, its numpy arrays, the store's pickled
# items: MBs each) get their own mapping, unmapped when freed, instead of
# heap memory that stays resident. Fixed values also stop glibc from raising
# both thresholds as it goes (to 32 MB and 64 MB).
MMAP_THRESHOLD = 256 << 10
TRIM_THRESHOLD = 1 << 20


def tune_malloc() -> bool:
    """Sets glibc's mmap and trim thresholds (see above); False if not glibc."""
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


class Trimmer:
    """Returns free heap memory to the kernel (glibc's own trimming only
    releases the top of the heap) when at least `threshold` bytes are free,
    at most once per `every_s`. Trimmed pages stay in glibc's free lists and
    come back resident when reused, so how much of the free memory is
    resident cannot be told from the count: a trim that finds little to do
    costs ~1 ms. Counted: `trims`, `trimmed_bytes`."""

    def __init__(self, threshold: int = 16 << 20, every_s: float = 5.0) -> None:
        self.threshold = threshold
        self.every_s = every_s
        self.trims = 0
        self.trimmed_bytes = 0  # RSS given back, as measured around each trim
        self._libc = _libc()
        self._next = 0.0

    def heap_free_bytes(self) -> int | None:
        """Bytes free in glibc's arenas (mallinfo2's fordblks); None if unknown."""
        if self._libc is None or not hasattr(self._libc, "mallinfo2"):
            return None
        return int(self._libc.mallinfo2().fordblks)

    def trim(self) -> int:
        """malloc_trim(0) now; returns the RSS it gave back."""
        if self._libc is None:
            return 0
        before = rss_bytes() or 0
        self._libc.malloc_trim(0)
        freed = max(0, before - (rss_bytes() or 0))
        self.trims += 1
        self.trimmed_bytes += freed
        return freed

    def tick(self) -> None:
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + self.every_s
        free = self.heap_free_bytes()
        if free is not None and free >= self.threshold:
            self.trim()

    def stats(self) -> dict[str, int | None]:
        return {"rss_bytes": rss_bytes(), "heap_free_bytes": self.heap_free_bytes(),
                "trims": self.trims, "trimmed_bytes": self.trimmed_bytes}
