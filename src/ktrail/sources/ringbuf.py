"""Readers of the BPF ring buffer. Both hand back whole batches of raw records.

``MmapRing`` (default) maps the ring into this process and walks it directly:
records are copied out in one slice and the consumer position is advanced at
once, so the kernel gets its space back before any decoding happens.
``LibbpfRing`` uses libbpf's consumer with a callback per record: slower, kept
as a fallback, and the default on CPUs other than x86 (see DEFAULT_READER).

The kernel wakes the reader only past a fill threshold (the BPF side submits
with BPF_RB_NO_WAKEUP otherwise), so ``wait`` also returns on a short timer.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import platform
import select
import struct

import numpy as np

from ktrail.decode.decoder import EMPTY_RAW as EMPTY
from ktrail.decode.decoder import RawBatch
from ktrail.loader import libbpf

_BUSY = 1 << 31
_DISCARD = 1 << 30
_HDR = 8  # struct bpf_ringbuf_hdr: u32 len (+ busy/discard bits), u32 pg_off
_u32 = struct.Struct("<I")


class MmapRing:
    def __init__(self, map_fd: int, size: int) -> None:
        page = mmap.PAGESIZE
        self.size = size
        self._mask = size - 1
        self._cons_map = mmap.mmap(
            map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0
        )
        # Producer page, then the data area mapped twice back to back by the
        # kernel, so a record that wraps is still contiguous here.
        self._data_map = mmap.mmap(
            map_fd, page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        # The consumer position must be published with one 8-byte store; a
        # torn write would make the kernel see garbage and drop records.
        self._cons = ctypes.c_uint64.from_buffer(self._cons_map, 0)
        self._prod = np.frombuffer(self._data_map, dtype="<u8", count=1)
        self._data = memoryview(self._data_map)[page:]
        self._epoll = select.epoll()
        self._epoll.register(map_fd, select.EPOLLIN)

    def wait(self, timeout_s: float) -> None:
        with contextlib.suppress(InterruptedError):
            self._epoll.poll(timeout_s)

    def read(self) -> RawBatch:
        cons = self._cons.value
        prod = int(self._prod[0])
        if prod == cons:
            return EMPTY
        data, mask = self._data, self._mask
        offsets: list[int] = []
        lengths: list[int] = []
        pos = cons
        while pos < prod:
            word = _u32.unpack_from(data, pos & mask)[0]
            if word & _BUSY:
                break  # reserved but not yet submitted: stop here, retry next time
            length = word & ~(_BUSY | _DISCARD)
            if not word & _DISCARD:
                offsets.append(pos - cons + _HDR)
                lengths.append(length)
            pos += (length + _HDR + 7) & ~7
        start = cons & mask
        buf = bytes(data[start : start + (pos - cons)])
        self._cons.value = pos
        return RawBatch(buf, offsets, lengths)

    def close(self) -> None:
        self._epoll.close()
        del self._cons, self._prod
        self._data.release()
        self._cons_map.close()
        self._data_map.close()


class LibbpfRing:
    def __init__(self, map_fd: int, size: int) -> None:
        self.size = size
        self._records: list[bytes] = []
        self._rb = libbpf.RingBuffer(map_fd, self._records.append)

    def wait(self, timeout_s: float) -> None:
        # Sleep until a forced wakeup or the timer; consuming happens in read().
        select.select([self._rb.epoll_fd], [], [], timeout_s)

    def read(self) -> RawBatch:
        self._rb.consume()
        if not self._records:
            return EMPTY
        recs, self._records[:] = list(self._records), []
        offsets: list[int] = []
        pos = 0
        for r in recs:
            offsets.append(pos)
            pos += len(r)
        return RawBatch(b"".join(recs), offsets, [len(r) for r in recs])

    def close(self) -> None:
        self._rb.close()


READERS = {"mmap": MmapRing, "libbpf": LibbpfRing}
# MmapRing reads the producer position with a plain load and then the record
# headers: correct under x86-64's ordered loads, not on weakly ordered CPUs
# (arm64, ppc64, riscv), where libbpf's reader uses acquire loads.
DEFAULT_READER = "mmap" if platform.machine() in ("x86_64", "amd64", "i686") else "libbpf"
