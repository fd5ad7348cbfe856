"""Ring records made to order from the recorded fixtures, for the issue-12 tests:
a real record of the type, with the strings (and any fixed field) replaced."""

from __future__ import annotations

import numpy as np
from ringfixture import EVENTS, LIFECYCLE, read_fixture

from ktrail.decode.decoder import RawBatch
from ktrail.decode.schema import EXEC, HEADER, SYS, EventType
from ktrail.events.model import StrKind, SysFlags


def fixture_records() -> list[bytes]:
    """Every record of both fixtures, as the kernel wrote it."""
    out = []
    for path in (LIFECYCLE, EVENTS):
        raw = read_fixture(str(path))
        out += [raw.buf[o:o + n] for o, n in zip(raw.offsets, raw.lengths, strict=True)]
    return out


def _first(etype: int) -> bytes:
    for rec in fixture_records():
        if len(rec) >= HEADER.itemsize and int.from_bytes(rec[:2], "little") == etype:
            return rec
    raise AssertionError(f"no record of type {etype} in the fixtures")


def _fixed(template: bytes, dtype: np.dtype, **fields: object) -> np.ndarray:
    arr = np.frombuffer(template[:dtype.itemsize], dtype=dtype).copy()
    for k, v in fields.items():
        arr[k] = v
    return arr


def exec_record(args: list[bytes], filename: bytes, comm: bytes = b"prog",
                pid: int = 31337, **fields: object) -> bytes:
    """A successful exec of `filename` with argv `args`, by pid `pid`."""
    argv = b"".join(a + b"\0" for a in args)
    data = argv + filename + b"\0"
    arr = _fixed(_first(EventType.EXEC), EXEC, comm=comm, pid=pid, tid=pid, retval=0,
                 argc=len(args), args_len=len(argv), filename_len=len(filename) + 1,
                 flags_exec=0, size=EXEC.itemsize + len(data), **fields)
    return arr.tobytes() + data


def path_record(etype: int, path: bytes, comm: bytes = b"prog", pid: int = 31337,
                **fields: object) -> bytes:
    """A syscall event of `etype` (create, unlink...) whose slot 0 is the
    absolute kernel path `path`, rebuilt as the kernel sends it (components
    leaf first, NUL-separated)."""
    parts = [p for p in path.split(b"/") if p]
    tail = b"".join(p + b"\0" for p in reversed(parts))
    fields = {"str_len": [len(tail), 0, 0, 0], "str_kind": [int(StrKind.DPATH), 0, 0, 0],
              "flags_sys": int(SysFlags.PATH_ROOTED), **fields}
    arr = _fixed(_first(etype), SYS, comm=comm, pid=pid, tid=pid, retval=3,
                 size=SYS.itemsize + len(tail), **fields)
    return arr.tobytes() + tail


def batch(records: list[bytes]) -> RawBatch:
    offsets, pos = [], 0
    for r in records:
        offsets.append(pos)
        pos += len(r)
    return RawBatch(b"".join(records), offsets, [len(r) for r in records])
