"""Issue 12: fuzzing ring records -> decode -> enrich -> encode (JSON and text).

Records are the recorded fixtures' (tests/fixtures/*.ring), mutated by a
seeded random mutator, plus plain random bytes: 0 exceptions over 100k
records, each either made into an event or counted as malformed (by the
decoder, or by the enricher for a record whose parts contradict each
other), and every event encodes to JSON that parses and to one line of text
per event without a control character from the data.

Seeded, so a failure names its seed and batch and replays exactly:
    KTRAIL_FUZZ_SEED=<seed> .venv/bin/python -m pytest -q tests/unit/test_fuzz_decoder.py
"""

from __future__ import annotations

import os
import random
import struct
from pathlib import Path

import orjson
from fakeproc import make_enricher
from ringrecords import batch, fixture_records, path_record

from ktrail.decode.decoder import decode
from ktrail.decode.schema import EXEC, HEADER, SYS, EventType
from ktrail.engine.enrich import Enricher
from ktrail.events.model import StrKind
from ktrail.events.registry import KINDS
from ktrail.output.formats import JsonLines, Text
from ktrail.units import Clock

SEED = int(os.environ.get("KTRAIL_FUZZ_SEED", "12"))
RECORDS = 100_000
PER_BATCH = 200
TYPES = [k.id for k in KINDS] + [0, 999, 0xFFFF]
# Byte offsets of the fields worth aiming at: type, lengths, kinds, flags, syscall.
EXEC_LENS = [EXEC.fields[n][1] for n in ("args_len", "filename_len", "argc", "flags_exec")]
SYS_AIMS = [SYS.fields[n][1] for n in ("syscall", "str_len", "str_kind", "flags_sys", "args")]
INTERESTING = [0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0xFFFF, 0xFFFFFFFF, 4095, 4096, 65535]
HOSTILE = [b"\xff", b"\x1b[2J", b"\n", b"\\", b"\xe2\x80\xae", b"\xc3", b"\0", b"/", b".."]


def mutate(rng: random.Random, rec: bytes, pool: list[bytes]) -> bytes:
    """One record: a fixture record with one to four random changes."""
    b = bytearray(rec)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        if op == 0 and b:  # flip bytes anywhere
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 1 and len(b) >= 2:  # another type, known or not
            b[0:2] = struct.pack("<H", rng.choice(TYPES))
        elif op == 2:  # cut it short, maybe inside the header
            b = b[:rng.randrange(len(b) + 1)]
        elif op == 3:  # random bytes appended
            b += rng.randbytes(rng.randrange(64))
        elif op == 4 and len(b) >= EXEC.itemsize:  # exec lengths and flags
            off = rng.choice(EXEC_LENS)
            b[off:off + 4] = struct.pack("<I", rng.choice(INTERESTING))
        elif op == 5 and len(b) >= SYS.itemsize:  # syscall, string lengths and kinds
            off = rng.choice(SYS_AIMS) + rng.randrange(8)
            b[off] = rng.choice(INTERESTING) & 0xFF
        elif op == 6 and len(b) > HEADER.itemsize:  # hostile bytes in the strings
            at = rng.randrange(HEADER.itemsize, len(b))
            h = rng.choice(HOSTILE)
            b[at:at + len(h)] = h
        elif op == 7:  # spliced with another record
            other = rng.choice(pool)
            cut = rng.randrange(len(b) + 1)
            b = b[:cut] + other[rng.randrange(len(other) + 1):]
        elif op == 8 and len(b) >= HEADER.itemsize:  # header fields: pid, start, comm
            off = rng.randrange(8, HEADER.itemsize)
            b[off] = rng.randrange(256)
    return bytes(b)


def make_batch(rng: random.Random, pool: list[bytes]) -> list[bytes]:
    out = []
    for _ in range(PER_BATCH):
        r = rng.random()
        if r < 0.05:
            out.append(rng.randbytes(rng.randrange(200)))  # noise
        elif r < 0.15:
            out.append(rng.choice(pool))  # as recorded
        else:
            out.append(mutate(rng, rng.choice(pool), pool))
    return out


def check(enricher: Enricher, records: list[bytes]) -> None:
    b = decode(batch(records))
    before = enricher.malformed
    events = enricher.process(b)
    made = len(b) - (enricher.malformed - before)
    # Every record is an event (an exec by the kernel may add a usermode_helper)
    # or counted as malformed, by the decoder or the enricher.
    assert b.malformed + len(b) == len(records)
    assert len(events) >= made
    lines = JsonLines().encode(events).splitlines()
    assert len(lines) == len(events)
    for line in lines:
        orjson.loads(line)
    text = Text().encode(events).decode()
    assert len(text.splitlines()) == len(events)
    assert "\x1b" not in text and "\r" not in text


def test_fuzzed_ring_records_never_raise(tmp_path: Path) -> None:
    pool = fixture_records()
    rng = random.Random(SEED)
    enricher = make_enricher(tmp_path, Clock())
    done = 0
    n = 0
    while done < RECORDS:
        records = make_batch(rng, pool)
        try:
            check(enricher, records)
        except Exception as e:
            raise AssertionError(f"seed {SEED}, batch {n}: {e!r}") from e
        done += len(records)
        n += 1
    assert done >= 100_000
    # The fuzz did reach the enricher's guard and the decoder's count.
    assert enricher.malformed > 0


def test_every_type_survives_hostile_strings(tmp_path: Path) -> None:
    """Each recorded record, with its strings' bytes replaced by hostile ones."""
    enricher = make_enricher(tmp_path, Clock())
    pool = fixture_records()
    for rec in pool:
        etype = int.from_bytes(rec[:2], "little")
        fixed = {EventType.EXEC: EXEC.itemsize}.get(etype, SYS.itemsize)
        if len(rec) <= fixed:
            continue
        tail = bytes(c if c in (0, 0x2F) else 0xFF for c in rec[fixed:])
        check(enricher, [rec[:fixed] + tail])


def test_a_record_that_contradicts_its_type_is_refused_and_counted(tmp_path: Path) -> None:
    from test_output import run_pipeline

    # A create whose path slot says "raw bytes": the kernel never sends that.
    bad = path_record(EventType.CREATE, b"/tmp/x", str_kind=[int(StrKind.BYTES), 0, 0, 0])
    good = path_record(EventType.CREATE, b"/tmp/y")
    enricher = make_enricher(tmp_path, Clock())
    events = enricher.process(decode(batch([bad, good])))
    assert [e["file"]["path"] for e in events] == ["/tmp/y"]
    assert enricher.malformed == 1
    final, _ = run_pipeline(tmp_path, batch([bad, good]), {})
    assert final["reader"]["refused"] == 1
