"""Batch decoding: raw ring records -> numpy structured arrays per event type.

No Python object is made per record here except the slice of each exec
record's variable part; fixed parts are gathered and viewed as the contract's
dtypes in one vectorised step per type.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ktrail.decode.schema import EXEC, HEADER, RECORDS, SYS


@dataclass
class RawBatch:
    """Records copied out of the ring, in ring (i.e. reservation) order."""

    buf: bytes
    offsets: list[int]   # where each record starts in buf
    lengths: list[int]

    def __len__(self) -> int:
        return len(self.offsets)


EMPTY_RAW = RawBatch(b"", [], [])


@dataclass
class Batch:
    types: np.ndarray                 # uint16 per record, in ring order
    index: np.ndarray                 # position of each record in records[type]
    records: dict[int, np.ndarray]    # event type -> structured array
    tails: dict[int, list[bytes]]     # event type -> variable part of each record
    malformed: int = 0                # records too short or of unknown type

    def __len__(self) -> int:
        return len(self.types)


def _gather(u8: np.ndarray, offsets: np.ndarray, dtype: np.dtype) -> np.ndarray:
    idx = offsets[:, None] + np.arange(dtype.itemsize)
    return np.ascontiguousarray(u8[idx]).view(dtype).reshape(-1)


EMPTY = Batch(np.zeros(0, np.uint16), np.zeros(0, np.int64), {}, {})

# By plain int: IntEnum lookups cost per batch what the records do.
_DTYPES: dict[int, np.dtype] = {int(t): dtype for t, (dtype, _) in RECORDS.items()}
# Types whose records carry a variable part after the fixed struct.
_VARIABLE = {int(t) for t, (dtype, _) in RECORDS.items() if dtype in (EXEC, SYS)}


def decode(raw: RawBatch) -> Batch:
    if not raw.offsets:
        return EMPTY
    u8 = np.frombuffer(raw.buf, dtype=np.uint8)
    offsets = np.asarray(raw.offsets, dtype=np.int64)
    lengths = np.asarray(raw.lengths, dtype=np.int64)
    ok = lengths >= HEADER.itemsize
    types = np.zeros(len(offsets), dtype=np.uint16)
    types[ok] = u8[offsets[ok]] | (u8[offsets[ok] + 1].astype(np.uint16) << 8)
    index = np.full(len(offsets), -1, dtype=np.int64)
    records: dict[int, np.ndarray] = {}
    tails: dict[int, list[bytes]] = {}
    known = np.zeros(len(offsets), dtype=bool)
    # Only the types present: a batch holds a few of the 35.
    for etype in np.unique(types[ok]).tolist():
        dtype = _DTYPES.get(etype)
        if dtype is None:
            continue  # unknown type: counted as malformed below
        sel = np.flatnonzero((types == etype) & (lengths >= dtype.itemsize))
        if not len(sel):
            continue
        arr = _gather(u8, offsets[sel], dtype)
        records[etype] = arr
        index[sel] = np.arange(len(sel))
        known[sel] = True
        if etype in _VARIABLE:
            # The ring record is exactly as long as the kernel sent: fixed
            # part, then the used bytes of the variable part.
            starts = (offsets[sel] + dtype.itemsize).tolist()
            ends = (offsets[sel] + lengths[sel]).tolist()
            buf = raw.buf
            tails[etype] = [buf[a:b] for a, b in zip(starts, ends, strict=True)]
    malformed = int((~known).sum())
    if malformed:
        keep = np.flatnonzero(known)
        types, index = types[keep], index[keep]
    return Batch(types, index, records, tails, malformed)


@dataclass
class LossTracker:
    """Counts records the kernel numbered but we never saw, per CPU.

    Every record attempt takes the next per-CPU sequence number, delivered or
    not; so sum(highest seq seen) - records seen is what went missing before
    the newest record of each CPU. The run summary reconciles the total with
    the kernel's attempt and drop counters.
    """

    ncpus: int
    max_seq: np.ndarray = field(init=False)
    seen: int = 0
    # Set at shutdown to the kernel's per-CPU attempt counts: records numbered
    # after it are `late`, so the final count can be reconciled against that
    # snapshot while other processes keep making events.
    cutoff: np.ndarray | None = None
    late: int = 0

    def __post_init__(self) -> None:
        self.max_seq = np.zeros(self.ncpus, dtype=np.uint64)

    def update(self, batch: Batch) -> None:
        for arr in batch.records.values():
            cpu = arr["cpu"].astype(np.int64)
            if len(cpu) and int(cpu.max()) >= self.ncpus:
                grow = np.zeros(int(cpu.max()) + 1, dtype=np.uint64)
                grow[: self.ncpus] = self.max_seq
                self.max_seq, self.ncpus = grow, len(grow)
            np.maximum.at(self.max_seq, cpu, arr["seq"])
            self.seen += len(arr)
            if self.cutoff is not None and len(cpu):
                known = cpu < len(self.cutoff)
                self.late += int((~known).sum()) + int(
                    (arr["seq"][known] > self.cutoff[cpu[known]]).sum())

    @property
    def gaps(self) -> int:
        return int(self.max_seq.sum()) - self.seen
