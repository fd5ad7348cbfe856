"""The run loop works through a large read in chunks, so it can look at the
clock (stats records, loss checks, a stop) between them."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any, cast

import orjson
from fakeproc import make_enricher
from test_output import FakeReader, FakeSensor

from ktrail.decode.decoder import RawBatch
from ktrail.engine.pipeline import Pipeline, RunOptions, chunks
from ktrail.loader.sensor import Sensor
from ktrail.output.formats import JsonLines
from ktrail.output.target import Stream
from ktrail.sinks.output import OutputSink


def test_chunks_cut_a_read_in_order_and_share_its_buffer(raw: RawBatch) -> None:
    n = len(raw)
    assert chunks(raw, n) == [raw]
    parts = chunks(raw, 5)
    assert [len(p) for p in parts] == [5] * (n // 5) + ([n % 5] if n % 5 else [])
    assert all(p.buf is raw.buf for p in parts)
    assert [o for p in parts for o in p.offsets] == raw.offsets
    assert [x for p in parts for x in p.lengths] == raw.lengths


def _pipeline(tmp_path: Path, raw: RawBatch, chunk: int) -> tuple[Pipeline, io.BytesIO]:
    out = io.BytesIO()
    p = Pipeline(cast(Sensor, FakeSensor([17, 6], {})), FakeReader([raw]), "mmap",
                 make_enricher(tmp_path), [OutputSink(JsonLines(), Stream(out))],
                 RunOptions(duration=0.0, stats_interval=0))
    p.chunk_records = chunk
    return p, out


def _untimed(x: Any) -> Any:
    # Each enricher has its own clock (boot to wall offset): times differ by a few ns.
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in ("time", "start_time")}
    if isinstance(x, list):
        return [_untimed(v) for v in x]
    return x


def _events(data: bytes) -> list[Any]:
    return [_untimed(e) for e in map(orjson.loads, data.splitlines())
            if e["evt"]["type"] != "stats"]


def test_chunked_drain_gives_the_same_events(tmp_path: Path, raw: RawBatch) -> None:
    whole, out1 = _pipeline(tmp_path / "a", raw, len(raw))
    cut, out2 = _pipeline(tmp_path / "b", raw, 3)
    f1, f2 = whole.run(), cut.run()
    assert _events(out1.getvalue()) == _events(out2.getvalue())
    assert len(_events(out2.getvalue())) == len(raw)
    assert f2["reader"]["records"] == f1["reader"]["records"] == len(raw)
    assert f2["reader"]["unreconciled"] == f1["reader"]["unreconciled"]
    assert cut.batches == -(-len(raw) // 3)


def test_drain_with_a_deadline_stops_between_chunks(tmp_path: Path, raw: RawBatch) -> None:
    p, out = _pipeline(tmp_path, raw, 3)
    # A deadline already past: one chunk, and the rest waits for the next turn.
    p.drain(until=time.monotonic())
    assert p.batches == 1
    assert _settled(out, 3) == 3
    p.drain()  # no deadline: everything
    assert _settled(out, len(raw)) == len(raw)


def _settled(out: io.BytesIO, want: int) -> int:
    # The output sink writes from its own thread: wait for it, not for ever.
    deadline = time.monotonic() + 10
    while len(_events(out.getvalue())) < want and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # anything more would be a fault: let it show
    return len(_events(out.getvalue()))
