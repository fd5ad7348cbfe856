"""Batch decoding of real ring records (tests/fixtures/lifecycle.ring) and loss tracking."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from ktrail.decode.decoder import Batch, LossTracker, RawBatch, decode
from ktrail.decode.schema import EXEC, EXIT, FORK, HEADER, ExecFlags
from ktrail.events.registry import EventType

TYPE_OFF = HEADER.fields["type"][1]
SEQ_OFF = HEADER.fields["seq"][1]
CPU_OFF = HEADER.fields["cpu"][1]
PID_OFF = HEADER.fields["pid"][1]


# --- helpers -------------------------------------------------------------------------


def records_of(raw: RawBatch) -> list[bytes]:
    return [raw.buf[o : o + n] for o, n in zip(raw.offsets, raw.lengths, strict=True)]


def make_raw(records: list[bytes], gap: int = 0) -> RawBatch:
    """Concatenate records into one RawBatch; `gap` junk bytes go before each record."""
    buf = bytearray()
    offsets: list[int] = []
    lengths: list[int] = []
    for r in records:
        buf += b"\xee" * gap
        offsets.append(len(buf))
        lengths.append(len(r))
        buf += r
    return RawBatch(bytes(buf), offsets, lengths)


def raw_type(record: bytes) -> int:
    return int(struct.unpack_from("<H", record, TYPE_OFF)[0])


def patch(record: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(record)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def first_of(raw: RawBatch, etype: EventType) -> bytes:
    return next(r for r in records_of(raw) if raw_type(r) == etype)


def exec_rows(batch: Batch) -> list[tuple[np.void, bytes]]:
    arr = batch.records[int(EventType.EXEC)]
    return list(zip(arr, batch.tails.get(1, []), strict=True))


def exec_by_filename(batch: Batch, filename: bytes) -> tuple[np.void, bytes]:
    for rec, data in exec_rows(batch):
        fname = data[int(rec["args_len"]) :].split(b"\0", 1)[0]
        if fname == filename:
            return rec, data
    raise AssertionError(f"no exec of {filename!r} in the fixture")


# --- the fixture as a whole ----------------------------------------------------------


def test_fixture_shape(raw: RawBatch) -> None:
    assert len(raw) == 22
    assert len(raw.offsets) == len(raw.lengths)
    assert sum(raw.lengths) == len(raw.buf)


def test_counts_per_type_match_record_types(raw: RawBatch, batch: Batch) -> None:
    expected: dict[EventType, int] = {}
    for r in records_of(raw):
        t = EventType(raw_type(r))
        expected[t] = expected.get(t, 0) + 1
    assert expected == {EventType.EXEC: 7, EventType.FORK: 7, EventType.EXIT: 8}
    assert len(batch) == 22
    assert batch.malformed == 0
    for etype, n in expected.items():
        assert len(batch.records[int(etype)]) == n
        assert int((batch.types == etype).sum()) == n
    assert len(batch.tails.get(1, [])) == expected[EventType.EXEC]


def test_types_and_index_follow_ring_order(raw: RawBatch, batch: Batch) -> None:
    for i, r in enumerate(records_of(raw)):
        t = raw_type(r)
        assert int(batch.types[i]) == t
        rec = batch.records[t][int(batch.index[i])]
        assert int(rec["pid"]) == struct.unpack_from("<I", r, PID_OFF)[0]
        assert int(rec["seq"]) == struct.unpack_from("<Q", r, SEQ_OFF)[0]
        assert int(rec["cpu"]) == struct.unpack_from("<I", r, CPU_OFF)[0]
    # Each type's index runs 0..n-1 in ring order.
    for t in batch.records:
        assert batch.index[batch.types == t].tolist() == list(range(len(batch.records[t])))


def test_record_dtypes(batch: Batch) -> None:
    assert batch.records[int(EventType.EXEC)].dtype == EXEC
    assert batch.records[int(EventType.FORK)].dtype == FORK
    assert batch.records[int(EventType.EXIT)].dtype == EXIT
    for arr in batch.records.values():
        assert (arr["size"] >= arr.dtype.itemsize).all()


def test_header_size_field_matches_record_length(raw: RawBatch, batch: Batch) -> None:
    for i, n in enumerate(raw.lengths):
        t = int(batch.types[i])
        assert int(batch.records[t][int(batch.index[i])]["size"]) == n


def test_exec_data_echo(batch: Batch) -> None:
    rec, data = exec_by_filename(batch, b"/bin/echo")
    assert data == b"/bin/echo\0a\0b\0c\0" + b"/bin/echo\0"
    assert int(rec["args_len"]) == len(b"/bin/echo\0a\0b\0c\0")
    assert int(rec["filename_len"]) == len(b"/bin/echo\0")
    assert int(rec["argc"]) == 4
    assert int(rec["retval"]) == 0
    assert rec["comm"] == b"echo"
    assert ExecFlags(int(rec["flags_exec"])) == ExecFlags(0)


def test_exec_data_top_shell(batch: Batch) -> None:
    rec, data = exec_by_filename(batch, b"/bin/sh")
    args = data[: int(rec["args_len"])]
    assert args.startswith(b"/bin/sh\0-c\0/bin/echo a b c >/dev/null; ")
    assert args.endswith(b"exit 3\0")
    assert args.count(b"\0") == int(rec["argc"]) == 3
    assert data[int(rec["args_len"]) :] == b"/bin/sh\0"


def test_exec_data_every_record_is_exactly_args_and_filename(batch: Batch) -> None:
    for rec, data in exec_rows(batch):
        assert len(data) == int(rec["args_len"]) + int(rec["filename_len"])
        assert data.endswith(b"\0")  # the filename is NUL-terminated


def test_failed_exec(batch: Batch) -> None:
    rec, data = exec_by_filename(batch, b"/nonexistent/prog")
    assert int(rec["retval"]) == -2
    assert int(rec["argc"]) == 3
    assert data == b"/nonexistent/prog\0x\0y\0" + b"/nonexistent/prog\0"
    failed = [r for r, _ in exec_rows(batch) if int(r["retval"]) != 0]
    assert len(failed) == 1


def test_truncated_exec(batch: Batch) -> None:
    rec, data = exec_by_filename(batch, b"/bin/true")
    flags = ExecFlags(int(rec["flags_exec"]))
    assert ExecFlags.ARGS_TRUNCATED in flags
    assert ExecFlags.FILENAME_TRUNCATED not in flags
    assert int(rec["args_len"]) == 4096
    assert int(rec["argc"]) == 2
    prefix = b"/bin/true\0"
    assert data[:4096] == prefix + b"x" * (4096 - len(prefix))
    assert data[4096:] == b"/bin/true\0"
    # Only that one exec was truncated.
    truncated = [r for r, _ in exec_rows(batch) if int(r["flags_exec"]) & ExecFlags.ARGS_TRUNCATED]
    assert len(truncated) == 1


def test_fork_and_exit_fields(batch: Batch) -> None:
    forks = batch.records[int(EventType.FORK)]
    exits = batch.records[int(EventType.EXIT)]
    child_pids = set(forks["child_pid"].tolist())
    assert len(child_pids) == 7
    # Every forked child exits in the scenario, and so does the top sh.
    exit_pids = set(exits["pid"].tolist())
    top = exit_pids - child_pids
    assert len(top) == 1
    statuses = dict(zip(exits["pid"].tolist(), exits["exit_code"].tolist(), strict=True))
    assert statuses[top.pop()] == 768
    assert sorted(statuses.values()) == sorted([0, 32512, 9, 0, 0, 0, 0, 768])


# --- malformed records ---------------------------------------------------------------


def test_short_record_is_malformed_and_skipped(raw: RawBatch, batch: Batch) -> None:
    recs = records_of(raw)
    short = recs[1][: HEADER.itemsize - 1]
    bad = make_raw([*recs[:5], short, *recs[5:]])
    out = decode(bad)
    assert out.malformed == 1
    assert len(out) == len(recs)
    assert out.types.tolist() == batch.types.tolist()
    assert out.index.tolist() == batch.index.tolist()
    for t, arr in batch.records.items():
        assert out.records[t].tobytes() == arr.tobytes()
    assert out.tails.get(1, []) == batch.tails.get(1, [])


@pytest.mark.parametrize("bad_type", [0, 4, 99, 0xFFFF])
def test_unknown_type_is_malformed_and_skipped(
    raw: RawBatch, batch: Batch, bad_type: int
) -> None:
    recs = records_of(raw)
    fork = first_of(raw, EventType.FORK)
    odd = patch(fork, TYPE_OFF, "<H", bad_type)
    bad = make_raw([odd, *recs[:10], odd, *recs[10:], odd])
    out = decode(bad)
    assert out.malformed == 3
    assert len(out) == len(recs)
    assert out.types.tolist() == batch.types.tolist()
    assert out.index.tolist() == batch.index.tolist()
    assert out.tails.get(1, []) == batch.tails.get(1, [])
    assert set(out.records) == set(batch.records)
    for t, arr in batch.records.items():
        assert out.records[t].tobytes() == arr.tobytes()


def test_known_type_shorter_than_its_struct_is_malformed(raw: RawBatch) -> None:
    exec_rec = first_of(raw, EventType.EXEC)
    exit_rec = first_of(raw, EventType.EXIT)
    cut = exec_rec[: EXEC.itemsize - 1]  # a whole header, but not the exec fixed part
    assert len(cut) >= HEADER.itemsize
    out = decode(make_raw([cut, exit_rec]))
    assert out.malformed == 1
    assert out.types.tolist() == [EventType.EXIT]
    assert int(EventType.EXEC) not in out.records
    assert out.tails.get(1, []) == []


def test_only_malformed_records(raw: RawBatch) -> None:
    fork = first_of(raw, EventType.FORK)
    out = decode(make_raw([b"", b"\x01", patch(fork, TYPE_OFF, "<H", 77)]))
    assert out.malformed == 3
    assert len(out) == 0
    assert out.records == {}
    assert out.tails.get(1, []) == []


def test_exec_data_clipped_to_record_end(raw: RawBatch) -> None:
    rec = next(
        r for r in records_of(raw)
        if raw_type(r) == EventType.EXEC and b"/bin/echo\0a\0b\0c\0" in r
    )
    out = decode(make_raw([rec[:-4]]))
    assert out.malformed == 0
    assert out.tails.get(1, []) == [b"/bin/echo\0a\0b\0c\0" + b"/bin/e"]


def test_unaligned_offsets(raw: RawBatch, batch: Batch) -> None:
    # Records need not start at aligned offsets (the libbpf reader packs them).
    shifted = make_raw(records_of(raw), gap=3)
    out = decode(shifted)
    assert out.malformed == 0
    assert out.types.tolist() == batch.types.tolist()
    for t, arr in batch.records.items():
        assert out.records[t].tobytes() == arr.tobytes()
    assert out.tails.get(1, []) == batch.tails.get(1, [])


def test_decode_empty() -> None:
    out = decode(RawBatch(b"", [], []))
    assert len(out) == 0
    assert out.malformed == 0
    assert out.records == {}
    assert out.tails.get(1, []) == []
    assert out.types.dtype == np.uint16


# --- LossTracker ---------------------------------------------------------------------


def clone(record: bytes, cpu: int, seq: int) -> bytes:
    return patch(patch(record, CPU_OFF, "<I", cpu), SEQ_OFF, "<Q", seq)


def synthetic(
    record: bytes, per_cpu: dict[int, int], dropped: dict[int, set[int]]
) -> list[bytes]:
    """Records seq 1..n per CPU, interleaved across CPUs, minus the dropped seqs."""
    out: list[bytes] = []
    for seq in range(1, max(per_cpu.values()) + 1):
        for cpu, n in per_cpu.items():
            if seq <= n and seq not in dropped.get(cpu, set()):
                out.append(clone(record, cpu, seq))
    return out


@pytest.fixture(scope="module")
def fork_record(raw: RawBatch) -> bytes:
    return first_of(raw, EventType.FORK)


def test_offsets_used_for_patching_agree_with_decoder(fork_record: bytes) -> None:
    out = decode(make_raw([clone(fork_record, 5, 123456789)]))
    arr = out.records[int(EventType.FORK)]
    assert int(arr["cpu"][0]) == 5
    assert int(arr["seq"][0]) == 123456789


def test_loss_tracker_no_gaps(fork_record: bytes) -> None:
    lt = LossTracker(2)
    lt.update(decode(make_raw(synthetic(fork_record, {0: 10, 1: 7}, {}))))
    assert lt.seen == 17
    assert lt.gaps == 0
    assert lt.max_seq.tolist() == [10, 7]


def test_loss_tracker_single_cpu(fork_record: bytes) -> None:
    lt = LossTracker(1)
    lt.update(decode(make_raw(synthetic(fork_record, {0: 20}, {0: {1, 2, 7, 19}}))))
    assert lt.seen == 16
    assert lt.gaps == 4


def test_loss_tracker_per_cpu_and_total(fork_record: bytes) -> None:
    dropped = {0: {2, 5, 6}, 1: {1}, 2: set(), 3: {3, 4, 5, 6}}
    per_cpu = {0: 12, 1: 4, 2: 9, 3: 7}
    for cpu in per_cpu:
        lt = LossTracker(4)
        lt.update(decode(make_raw(synthetic(fork_record, {cpu: per_cpu[cpu]}, dropped))))
        assert lt.gaps == len(dropped[cpu]), cpu
    lt = LossTracker(4)
    lt.update(decode(make_raw(synthetic(fork_record, per_cpu, dropped))))
    assert lt.max_seq.tolist() == [12, 4, 9, 7]
    assert lt.gaps == sum(len(d) for d in dropped.values()) == 8


def test_loss_tracker_across_batches(fork_record: bytes) -> None:
    recs = synthetic(fork_record, {0: 15, 1: 15}, {0: {3, 9}, 1: {4}})
    lt = LossTracker(2)
    for i in range(0, len(recs), 4):
        lt.update(decode(make_raw(recs[i : i + 4])))
    assert lt.seen == len(recs) == 27
    assert lt.gaps == 3


def test_loss_tracker_mixed_types_share_the_sequence(raw: RawBatch) -> None:
    # seq numbers are per CPU, not per type: interleave fork and exit records.
    fork, exit_ = first_of(raw, EventType.FORK), first_of(raw, EventType.EXIT)
    recs = [clone(fork if s % 2 else exit_, 0, s) for s in range(1, 11) if s not in (4, 5)]
    lt = LossTracker(1)
    lt.update(decode(make_raw(recs)))
    assert lt.seen == 8
    assert lt.gaps == 2


def test_loss_tracker_grows_for_unknown_cpu(fork_record: bytes) -> None:
    lt = LossTracker(1)
    lt.update(decode(make_raw(synthetic(fork_record, {0: 3, 5: 6}, {5: {2}}))))
    assert lt.ncpus == 6
    assert lt.max_seq.tolist() == [3, 0, 0, 0, 0, 6]
    assert lt.gaps == 1


def test_loss_tracker_ignores_malformed_and_empty(fork_record: bytes) -> None:
    lt = LossTracker(1)
    lt.update(decode(RawBatch(b"", [], [])))
    assert lt.seen == 0 and lt.gaps == 0
    lt.update(decode(make_raw([clone(fork_record, 0, 1), b"\x00" * 8, clone(fork_record, 0, 2)])))
    assert lt.seen == 2
    assert lt.gaps == 0


def test_loss_tracker_on_fixture_sees_every_record(raw: RawBatch) -> None:
    lt = LossTracker(1)
    lt.update(decode(raw))
    assert lt.seen == 22
    # The fixture keeps only the scenario's tree, so other processes' records show up as
    # gaps; they can never be negative.
    assert lt.gaps >= 0


def test_loss_tracker_counts_records_after_the_closing_snapshot(fork_record: bytes) -> None:
    # Snapshot at seq 6 on CPU 0 and 3 on CPU 1; the last drain still reads
    # records numbered after it (other processes during shutdown): they are
    # late, not evidence of loss.
    import numpy as np

    lt = LossTracker(2)
    lt.cutoff = np.array([6, 3], dtype=np.uint64)
    lt.update(decode(make_raw(synthetic(fork_record, {0: 10, 1: 7}, {}))))
    assert lt.seen == 17
    assert lt.late == (10 - 6) + (7 - 3)
