"""Fuzzing `ktrail replay`'s reader and the rules engine behind it (issue 12).

Real event lines (tests/fixtures/*.jsonl) are mutated, structurally (a value
replaced by one of another type, a key dropped or added, objects nested or
flattened) and as bytes (flipped, cut, spliced), and random JSON values are
made from scratch. Every input goes through the reader (rules.trail.Trail)
and whatever it accepts through the default rules, and the alerts through
the encoder, as `ktrail replay` does. The property: no exception, ever; an
input is either an event the engine handles or a reported bad line.

A seeded loop, not a fuzzing library: the same inputs on every run (a
failure reproduces with its seed and index), and fast (well under a minute
for over 100k inputs on a loaded 2-vCPU machine).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from ktrail.engine.detect import load_ruleset
from ktrail.output.formats import dumps
from ktrail.rules import DEFAULT_RULES
from ktrail.rules.engine import Engine
from ktrail.rules.trail import Trail, problem

FIXTURES = Path(__file__).parent.parent / "fixtures"
SEEDS = [line for f in sorted(FIXTURES.glob("*.jsonl"))
         for line in f.read_bytes().splitlines() if line.strip()]
INPUTS_PER_ROUND = 25_000
ROUNDS = 4   # 100k inputs in all
BATCH = 500

ODD_STRINGS = ["", " ", "\x00", "\n", "\u202e", "\ufffd", "A" * 5000, "../" * 50,
               "1970-01-01T00:00:00Z", "2026-02-30T00:00:00.000000000Z", "9999-99-99T99:99:99Z",
               "2026-01-01T00:00:00.abcZ", "2026-01-01T00:00:00.1234567891234Z", "exec",
               "open", "connect", "stats", "alert", "/etc/shadow", "/tmp/x", "10.0.0.1",
               "::1", "not an ip", "%proc.exe", "${jndi:x}", "0644", "-1", "1e309", "nan"]
ODD_NUMBERS = [0, -1, 1, 2**31, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**30), 0.5, -0.0,
               1e308, 4194304, 4294967295, 65535, 65536]


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    r = rng.random()
    if r < 0.12:
        return None
    if r < 0.2:
        return rng.random() < 0.5
    if r < 0.4:
        return rng.choice(ODD_NUMBERS)
    if r < 0.65:
        return rng.choice(ODD_STRINGS)
    if depth > 2:
        return rng.choice(ODD_STRINGS)
    if r < 0.82:
        return [odd_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["type", "exe", "path", "args", "pid", "time", "exec_id", "x"]):
            odd_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def _containers(o: Any, out: list[Any]) -> None:
    if isinstance(o, dict):
        out.append(o)
        for v in o.values():
            _containers(v, out)
    elif isinstance(o, list):
        out.append(o)
        for v in o:
            _containers(v, out)


def mutate_structure(rng: random.Random, seed: bytes) -> bytes:
    e = orjson.loads(seed)
    for _ in range(rng.randrange(1, 4)):
        places: list[Any] = []
        _containers(e, places)
        c = rng.choice(places)
        if isinstance(c, dict):
            if not c or rng.random() < 0.15:
                c[rng.choice(["evt", "proc", "file", "net", "x", "type", "ancestors"])] = \
                    odd_value(rng)
                continue
            k = rng.choice(list(c))
            op = rng.random()
            if op < 0.2:
                del c[k]
            elif op < 0.3:
                c[k] = {"nested": c[k]}
            else:
                c[k] = odd_value(rng)
        elif c:
            i = rng.randrange(len(c))
            if rng.random() < 0.3:
                del c[i]
            else:
                c[i] = odd_value(rng)
        else:
            c.append(odd_value(rng))
    if rng.random() < 0.05:
        e = rng.choice([[e], odd_value(rng), {"evt": e}])
    # json, not orjson: it writes integers past 64 bits too.
    return json.dumps(e, ensure_ascii=rng.random() < 0.5).encode() + b"\n"


def mutate_bytes(rng: random.Random, seed: bytes) -> bytes:
    b = bytearray(seed)
    for _ in range(rng.randrange(1, 6)):
        op = rng.random()
        pos = rng.randrange(len(b) + 1)
        if op < 0.3 and b:
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif op < 0.5:
            del b[pos:pos + rng.randrange(1, 40)]
        elif op < 0.7:
            b[pos:pos] = rng.choice([b'"', b"{", b"}", b"[", b"]", b",", b":", b"null",
                                     b"\\u0000", b"\xff", b"1e999", b"-", b'"x":'])
        else:
            other = rng.choice(SEEDS)
            q = rng.randrange(len(other))
            b[pos:pos] = other[q:q + rng.randrange(1, 80)]
    if rng.random() < 0.1:
        del b[rng.randrange(len(b) + 1):]   # a cut-off line
    return bytes(b).replace(b"\n", b" ") + b"\n"


def make_input(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.55:
        return mutate_structure(rng, rng.choice(SEEDS))
    if r < 0.9:
        return mutate_bytes(rng, rng.choice(SEEDS))
    if r < 0.97:
        return json.dumps(odd_value(rng)).encode() + b"\n"
    return rng.choice(SEEDS) + b"\n"


@pytest.fixture(scope="module")
def ruleset() -> Any:
    return load_ruleset([DEFAULT_RULES])


@pytest.mark.parametrize("round_", range(ROUNDS))
def test_replay_reader_and_rules_never_crash(round_: int, ruleset: Any) -> None:
    rng = random.Random(12_000 + round_)
    engine = Engine(ruleset)
    accepted = bad = alerts = 0
    for start in range(0, INPUTS_PER_ROUND, BATCH):
        lines = [make_input(rng) for _ in range(BATCH)]
        reported: list[int] = []
        trail = Trail(io.BytesIO(b"".join(lines)), lambda n, why, r=reported: r.append(n))
        try:
            events = list(trail)
            for a in engine.process(events):
                dumps(a)
                alerts += 1
        except Exception as e:  # the property under test: name the input that broke it
            raise AssertionError(f"seed {12_000 + round_}, inputs {start}..{start + BATCH}: "
                                 f"{type(e).__name__}: {e}") from e
        # Every line is an event, a reported bad line or a sensor record
        # passed over; accepted ones are exactly those problem() finds
        # nothing wrong with.
        assert (len(events) + len(reported) + trail.records
                == sum(1 for x in lines if x.strip()))
        assert trail.bad == len(reported)
        accepted += len(events)
        bad += len(reported)
    # The mutations reach the engine, not only the reader's refusals.
    assert accepted > INPUTS_PER_ROUND // 10 and bad > INPUTS_PER_ROUND // 10, (accepted, bad)


def test_every_fixture_line_is_an_event() -> None:
    assert SEEDS
    for line in SEEDS:
        assert problem(orjson.loads(line)) is None, line[:200]
