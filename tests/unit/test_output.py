"""Encoders (JSON lines, text), the stats summary and output targets."""

from __future__ import annotations

import copy
import io
import os
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson
from fakeproc import make_enricher

from ktrail.decode.decoder import RawBatch
from ktrail.decode.schema import TYPE_SLOTS
from ktrail.engine.enrich import Event
from ktrail.engine.pipeline import Pipeline, RunOptions
from ktrail.events.registry import EventType
from ktrail.loader.sensor import KernelStats, Sensor
from ktrail.output.formats import JsonLines, Text, make_format, stats_summary
from ktrail.output.target import RotatingFile, Stream
from ktrail.sinks.output import OutputSink
from ktrail.units import Clock


def find(events: list[Event], etype: str, **where: Any) -> Event:
    """The one event of `etype` whose section `etype` (or proc) has the given values."""
    out = []
    for e in events:
        if e["evt"]["type"] != etype:
            continue
        section = {**e["proc"], **e.get(etype, {})}
        if all(section.get(k) == v for k, v in where.items()):
            out.append(e)
    assert len(out) == 1, (etype, where, len(out))
    return out[0]


# --- a pipeline with fakes, to get real stats records ---------------------------------


class FakeSensor:
    def __init__(self, seq: list[int], drops: dict[tuple[int, EventType], int]) -> None:
        dropped = np.zeros((len(seq), TYPE_SLOTS), dtype=np.uint64)
        for (cpu, etype), n in drops.items():
            dropped[cpu, int(etype)] = n
        self.stats = KernelStats(np.array(seq, dtype=np.uint64), dropped, 0)

    def kernel_stats(self) -> KernelStats:
        return self.stats


class FakeReader:
    size = 1 << 20

    def __init__(self, batches: list[RawBatch]) -> None:
        self.batches = list(batches)

    def wait(self, timeout_s: float) -> None:
        pass

    def read(self) -> RawBatch:
        return self.batches.pop(0) if self.batches else RawBatch(b"", [], [])

    def close(self) -> None:
        pass


def run_pipeline(
    tmp_path: Path, raw: RawBatch, drops: dict[tuple[int, EventType], int]
) -> tuple[dict[str, Any], bytes]:
    out = io.BytesIO()
    # The fixture's highest seq per CPU: 17 on CPU 0, 6 on CPU 1.
    sensor = FakeSensor([17, 6], drops)
    pipeline = Pipeline(
        cast(Sensor, sensor), FakeReader([raw]), "mmap", make_enricher(tmp_path),
        [OutputSink(JsonLines(), Stream(out))], RunOptions(duration=0.0, stats_interval=0),
    )
    final = pipeline.run()
    return final, out.getvalue()


# --- JSON lines ----------------------------------------------------------------------


def test_json_lines_round_trip(events: list[Event]) -> None:
    data = JsonLines().encode(events)
    assert data.endswith(b"\n")
    lines = data.split(b"\n")[:-1]
    assert len(lines) == len(events) == 22
    back = [orjson.loads(line) for line in lines]
    # Times are integers inside the sensor and RFC 3339 text in the JSON.
    for b, e in zip(back, events, strict=True):
        assert b["evt"]["time"] == str(e["evt"]["time"])
        assert b["proc"]["start_time"] == str(e["proc"]["start_time"])
        b["evt"]["time"], b["proc"]["start_time"] = e["evt"]["time"], e["proc"]["start_time"]
    assert back == events


def test_json_lines_empty() -> None:
    assert JsonLines().encode([]) == b""


def test_json_lines_one_line_per_event_despite_odd_bytes(events: list[Event]) -> None:
    odd = copy.deepcopy(events[0])
    odd["proc"]["args"] = ["a\nb", "c\0d", "\\xff", "é"]
    data = JsonLines().encode([odd, odd])
    assert data.count(b"\n") == 2
    assert orjson.loads(data.split(b"\n")[0])["proc"]["args"] == odd["proc"]["args"]


def test_pipeline_writes_events_then_final_stats(tmp_path: Path, raw: RawBatch) -> None:
    final, data = run_pipeline(tmp_path, raw, {(1, EventType.EXEC): 1})
    lines = [orjson.loads(line) for line in data.splitlines()]
    assert len(lines) == 23
    assert [e["evt"]["type"] for e in lines[:22]].count("exec") == 7
    stats = lines[-1]
    assert stats["evt"]["type"] == "stats"
    assert stats["stats"] == final
    assert final["final"] is True
    assert final["events_total"] == 22
    assert {k: v for k, v in final["events"].items() if v} == {"exec": 7, "fork": 7, "exit": 8}
    assert final["kernel"]["dropped_total"] == 1
    assert final["reader"]["records"] == 22
    assert final["reader"]["seq_gaps"] == 1
    assert final["reader"]["unreconciled"] == 0


# --- text ----------------------------------------------------------------------------


def test_text_exec(events: list[Event]) -> None:
    ev = find(events, "exec", filename="/bin/echo")
    line = Text().line(ev)
    assert str(ev["evt"]["time"])[11:26] in line
    assert " exec " in line
    assert "root" in line
    assert "echo(6780) < sh(6779)" in line
    assert line.endswith("/bin/echo a b c")
    assert "\n" not in line


def test_text_exec_quotes_args(events: list[Event]) -> None:
    line = Text().line(find(events, "exec", filename="/usr/bin/sh"))
    assert line.endswith("sh -c 'kill -9 $$'")


def test_text_failed_exec(events: list[Event]) -> None:
    line = Text().line(find(events, "exec", filename="/nonexistent/prog"))
    assert "/nonexistent/prog FAILED ENOENT: /nonexistent/prog x y" in line


def test_text_truncated_exec(events: list[Event]) -> None:
    line = Text().line(find(events, "exec", filename="/bin/true"))
    assert line.endswith(" ...[2 args, truncated]")
    assert "/bin/true xxxx" in line


def test_text_fork(events: list[Event]) -> None:
    line = Text().line(find(events, "fork", pid=6779, child={"pid": 6780, "tid": 6780,
                                                            "exec_id": "6780:48725"}))
    assert " fork " in line
    assert "sh(6779)" in line
    assert line.endswith("-> child 6780")


def test_text_exits(events: list[Event]) -> None:
    text = Text()
    top = find(events, "exit", pid=6779)
    assert text.line(top).endswith("code 3")
    killed = find(events, "exit", pid=6782)
    assert text.line(killed).endswith("signal SIGKILL")
    echo = find(events, "exit", pid=6780)
    assert text.line(echo).endswith("code 0")
    failed = find(events, "exit", pid=6781)
    assert text.line(failed).endswith("code 127")


def test_text_core_dump_container_and_unknown_user(events: list[Event]) -> None:
    ev = copy.deepcopy(find(events, "exit", pid=6782))
    ev["exit"].update(signal="SIGSEGV", signo=11, core_dumped=True)
    ev["container"] = {"id": "3f4a9c2b1e8d", "full_id": "3f4a9c2b1e8d" + "0" * 52}
    ev["user"] = {"uid": 4242, "name": None}
    line = Text().line(ev)
    assert line.endswith("signal SIGSEGV (core dumped)")
    assert "[3f4a9c2b1e8d]" in line
    assert "4242" in line


def test_text_stats(tmp_path: Path, raw: RawBatch) -> None:
    _, data = run_pipeline(tmp_path, raw, {})
    stats = orjson.loads(data.splitlines()[-1])
    line = Text().line(stats)
    assert line.startswith("stats  events=22 lost=0 ")
    assert line == "stats  " + stats_summary(stats["stats"])


def test_text_encode(events: list[Event]) -> None:
    text = Text()
    data = text.encode(events)
    assert data.endswith(b"\n")
    assert data.decode().split("\n")[:-1] == [text.line(e) for e in events]
    assert text.encode([]) == b""


def test_text_color(events: list[Event]) -> None:
    ev = find(events, "exec", filename="/bin/echo")
    assert "\x1b[" not in Text().line(ev)
    colored = Text(color=True).line(ev)
    assert "\x1b[32mexec \x1b[0m" in colored


def test_make_format() -> None:
    assert isinstance(make_format("json"), JsonLines)
    assert isinstance(make_format("text"), Text)
    assert cast(Text, make_format("text", color=True)).color is True


# --- stats summary -------------------------------------------------------------------


def test_stats_summary_no_loss(tmp_path: Path, raw: RawBatch) -> None:
    final, _ = run_pipeline(tmp_path, raw, {})
    s = stats_summary(final)
    size = final["proc_table"]["size"]
    assert s == f"events=22 lost=0 procs={size} evicted=0"
    assert "lost_by_type" not in s


def test_stats_summary_with_loss(tmp_path: Path, raw: RawBatch) -> None:
    final, _ = run_pipeline(
        tmp_path, raw, {(0, EventType.EXEC): 2, (1, EventType.EXEC): 1, (1, EventType.EXIT): 4}
    )
    s = stats_summary(final)
    assert "events=22 lost=7 " in s
    assert "lost_by_type=exec:3,exit:4 " in s
    assert "fork:" not in s


# --- targets -------------------------------------------------------------------------


def batch_bytes(i: int, size: int) -> bytes:
    """A batch of JSON lines exactly `size` bytes long, tagged with `i`."""
    head = orjson.dumps({"batch": i, "pad": ""})
    line = orjson.dumps({"batch": i, "pad": "x" * (size - len(head) - 1)}) + b"\n"
    assert len(line) == size
    return line


def test_stream_target() -> None:
    buf = io.BytesIO()
    s = Stream(buf)
    s.write(b"")
    s.write(b"abc\n")
    s.flush()
    s.close()
    assert buf.getvalue() == b"abc\n"


def test_rotating_file_rotates_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=100, keep=5)
    batches = [batch_bytes(i, 60) for i in range(5)]
    for b in batches:
        rf.write(b)
    rf.close()
    assert rf.rotations == 4
    assert Path(path).read_bytes() == batches[4]
    for n in range(1, 5):
        assert Path(f"{path}.{n}").read_bytes() == batches[4 - n]
    assert not os.path.exists(f"{path}.5")


def test_rotating_file_keep_bound(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=100, keep=2)
    batches = [batch_bytes(i, 60) for i in range(7)]
    for b in batches:
        rf.write(b)
    rf.close()
    assert rf.rotations == 6
    assert sorted(os.listdir(tmp_path)) == ["trail.json", "trail.json.1", "trail.json.2"]
    assert Path(path).read_bytes() == batches[6]
    assert Path(f"{path}.1").read_bytes() == batches[5]
    assert Path(f"{path}.2").read_bytes() == batches[4]


def test_rotating_file_keep_one(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=100, keep=1)
    for i in range(4):
        rf.write(batch_bytes(i, 60))
    rf.close()
    assert sorted(os.listdir(tmp_path)) == ["trail.json", "trail.json.1"]
    assert Path(f"{path}.1").read_bytes() == batch_bytes(2, 60)


def test_rotating_file_keep_zero_deletes(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=100, keep=0)
    for i in range(3):
        rf.write(batch_bytes(i, 60))
    rf.close()
    assert rf.rotations == 2
    assert os.listdir(tmp_path) == ["trail.json"]
    assert Path(path).read_bytes() == batch_bytes(2, 60)


def test_rotating_file_never_splits_a_batch(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=1000, keep=50)
    sizes = [130, 700, 420, 999, 1000, 1, 64, 2500, 300, 300, 300, 5]
    written = [batch_bytes(i, n) if n >= 30 else b"\n" * n for i, n in enumerate(sizes)]
    for b in written:
        rf.write(b)
    rf.close()
    files = [path] + [f"{path}.{n}" for n in range(1, 50) if os.path.exists(f"{path}.{n}")]
    contents = [Path(f).read_bytes() for f in reversed(files)]  # oldest first
    assert b"".join(contents) == b"".join(written)
    # Each file is a run of whole batches, within the bound unless one batch alone is larger.
    i = 0
    for c in contents:
        start = i
        pos = 0
        while pos < len(c):
            assert c[pos : pos + len(written[i])] == written[i]
            pos += len(written[i])
            i += 1
        assert len(c) <= 1000 or i - start == 1
    assert i == len(written)


def test_rotating_file_exact_bound_does_not_rotate(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=100, keep=3)
    rf.write(batch_bytes(0, 40))
    rf.write(batch_bytes(1, 60))
    assert rf.rotations == 0
    rf.write(batch_bytes(2, 30))
    assert rf.rotations == 1
    rf.close()
    assert Path(f"{path}.1").read_bytes() == batch_bytes(0, 40) + batch_bytes(1, 60)


def test_rotating_file_oversized_batch_is_written_whole(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=100, keep=3)
    big = batch_bytes(0, 450)
    rf.write(big)
    assert rf.rotations == 0
    rf.write(batch_bytes(1, 40))
    rf.close()
    assert rf.rotations == 1
    assert Path(f"{path}.1").read_bytes() == big
    assert Path(path).read_bytes() == batch_bytes(1, 40)


def test_rotating_file_counts_existing_content(tmp_path: Path) -> None:
    path = tmp_path / "trail.json"
    path.write_bytes(b"old\n" * 20)  # 80 bytes from an earlier run
    rf = RotatingFile(str(path), max_bytes=100, keep=3)
    rf.write(batch_bytes(0, 30))
    rf.close()
    assert rf.rotations == 1
    assert Path(f"{path}.1").read_bytes() == b"old\n" * 20
    assert path.read_bytes() == batch_bytes(0, 30)


def test_rotating_file_unbounded_and_empty_writes(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=0, keep=3)
    for i in range(10):
        rf.write(batch_bytes(i, 100))
        rf.write(b"")
    rf.flush()
    assert Path(path).stat().st_size == 1000
    rf.close()
    assert rf.rotations == 0
    assert os.listdir(tmp_path) == ["trail.json"]


def test_rotating_file_flush_makes_data_visible(tmp_path: Path) -> None:
    path = str(tmp_path / "trail.json")
    rf = RotatingFile(path, max_bytes=1 << 20)
    rf.write(b"a\n")
    rf.flush()
    assert Path(path).read_bytes() == b"a\n"
    rf.close()


def test_uevent_parsing_and_text() -> None:
    from ktrail.output.formats import Text
    from ktrail.sources.uevents import parse, to_event

    msg = (b"add@/devices/pci0000:00/usb1/1-1\0ACTION=add\0DEVPATH=/devices/pci0000:00/usb1/1-1"
           b"\0SUBSYSTEM=usb\0DEVNAME=bus/usb/001/002\0DEVTYPE=usb_device\0PRODUCT=781/5567/100"
           b"\0SEQNUM=42\0")
    env = parse(msg)
    assert env is not None and env["PRODUCT"] == "781/5567/100"
    ev = to_event(env, Clock())
    assert ev["device"]["seqnum"] == 42 and ev["device"]["action"] == "add"
    assert "add usb /devices/pci0000:00/usb1/1-1 (/dev/bus/usb/001/002)" in Text().line(ev)
    assert parse(b"libudev\0\xfe\xed") is None and parse(b"garbage") is None
