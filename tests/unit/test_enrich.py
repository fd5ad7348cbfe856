"""Enricher over the decoded lifecycle fixture, with an empty fake /proc."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
from fakeproc import make_enricher

from ktrail.decode.decoder import Batch, RawBatch, decode
from ktrail.engine.enrich import Enricher, Event, decode_status, split_args
from ktrail.events.registry import EventType
from ktrail.output.formats import dumps
from ktrail.units import Clock, ticks

RFC3339_NS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{9}Z$")
EXEC_ID = re.compile(r"^\d+:\d+$")


# --- helpers -------------------------------------------------------------------------


def of_type(events: list[Event], etype: str) -> list[Event]:
    return [e for e in events if e["evt"]["type"] == etype]


def exec_of(events: list[Event], filename: str) -> Event:
    found = [e for e in of_type(events, "exec") if e["exec"]["filename"] == filename]
    assert len(found) == 1, filename
    return found[0]


def top_exec(events: list[Event]) -> Event:
    return exec_of(events, "/bin/sh")


def exit_of(events: list[Event], exec_id: str) -> Event:
    found = [e for e in of_type(events, "exit") if e["proc"]["exec_id"] == exec_id]
    assert len(found) == 1, exec_id
    return found[0]


def fork_of(events: list[Event], child_exec_id: str) -> Event:
    found = [e for e in of_type(events, "fork")
             if e["fork"]["child"]["exec_id"] == child_exec_id]
    assert len(found) == 1, child_exec_id
    return found[0]


def header_rows(batch: Batch) -> list[Any]:
    """Decoded records in ring order (numpy rows), parallel to the enricher's events."""
    return [batch.records[t][i] for t, i in zip(batch.types.tolist(), batch.index.tolist(),
                                                strict=True)]


# --- the whole run -------------------------------------------------------------------


def test_one_event_per_record_in_ring_order(events: list[Event], batch: Batch) -> None:
    assert len(events) == len(batch) == 22
    names = {int(t): t.name.lower() for t in EventType}
    assert [e["evt"]["type"] for e in events] == [names[t] for t in batch.types.tolist()]
    assert [e["evt"]["seq"] for e in events] == [int(r["seq"]) for r in header_rows(batch)]


def test_counts(enricher: Enricher, events: list[Event]) -> None:
    assert {k: v for k, v in enricher.counts.items() if v} == {"exec": 7, "fork": 7, "exit": 8}


def test_common_fields(events: list[Event], batch: Batch) -> None:
    for ev, rec in zip(events, header_rows(batch), strict=True):
        evt, proc, user = ev["evt"], ev["proc"], ev["user"]
        assert evt["type"] in ("exec", "fork", "exit")
        assert RFC3339_NS.match(str(evt["time"])), evt["time"]
        assert isinstance(evt["seq"], int) and evt["seq"] == int(rec["seq"])
        assert evt["cpu"] == int(rec["cpu"])
        assert EXEC_ID.match(proc["exec_id"]), proc["exec_id"]
        assert proc["exec_id"] == f"{int(rec['pid'])}:{ticks(int(rec['start_ns']))}"
        assert proc["pid"] == int(rec["pid"])
        assert RFC3339_NS.match(str(proc["start_time"])), proc["start_time"]
        assert user["uid"] == 0
        assert user["name"] == "root"
        assert ev["container"] is None


def test_event_time_is_the_record_timestamp(tmp_path: Path, batch: Batch) -> None:
    clock = Clock()
    clock.offset_ns = 0
    evs = make_enricher(tmp_path, clock).process(batch)
    for ev, rec in zip(evs, header_rows(batch), strict=True):
        ts = int(rec["ts_ns"])
        frac = ts % 1_000_000_000
        assert ev["evt"]["time"] == ts  # an integer until the encoder
        assert str(ev["evt"]["time"]).endswith(f".{frac:09d}Z")
        assert orjson.loads(dumps(ev))["evt"]["time"] == str(ev["evt"]["time"])


def test_json_serialisable(events: list[Event]) -> None:
    for ev in events:
        back = orjson.loads(dumps(ev))
        assert back["evt"]["time"] == str(ev["evt"]["time"])
        assert back["proc"]["start_time"] == str(ev["proc"]["start_time"])


def test_comm_is_cut_at_first_nul(events: list[Event]) -> None:
    # The kernel's comm is a NUL-terminated string; bytes after the NUL are not part of it.
    for ev in events:
        assert "\0" not in ev["proc"]["comm"], ev["proc"]
        for a in ev["proc"]["ancestors"]:
            assert a["comm"] is None or "\0" not in a["comm"], a
        parent = ev["proc"]["parent"]
        assert parent is None or parent["comm"] is None or "\0" not in parent["comm"]
    failed = [e for e in of_type(events, "exec") if e["exec"]["retval"] != 0]
    assert [e["proc"]["comm"] for e in failed] == ["sh"]


# --- exec ----------------------------------------------------------------------------


def test_top_shell_exec(events: list[Event]) -> None:
    top = top_exec(events)
    assert events[0] is top
    assert top["proc"]["exe"] == "/bin/sh"
    assert top["proc"]["args"][:2] == ["/bin/sh", "-c"]
    assert top["proc"]["args"][2].endswith("exit 3")
    assert top["exec"]["argc"] == 3
    # Its parent (the recorder's python) is not in the fixture nor in the fake /proc.
    assert top["proc"]["parent"] is None
    assert top["proc"]["ancestors"] == []


def test_echo_exec(events: list[Event]) -> None:
    echo = exec_of(events, "/bin/echo")
    top = top_exec(events)
    proc = echo["proc"]
    assert proc["exe"] == "/bin/echo"
    assert proc["name"] == "echo"
    assert proc["comm"] == "echo"
    assert proc["args"] == ["/bin/echo", "a", "b", "c"]
    assert echo["exec"]["args"] == ["/bin/echo", "a", "b", "c"]
    assert echo["exec"]["argc"] == 4
    assert echo["exec"]["retval"] == 0
    assert echo["exec"]["error"] is None
    assert echo["exec"]["args_truncated"] is False
    assert proc["parent"]["exec_id"] == top["proc"]["exec_id"]
    assert proc["parent"]["pid"] == top["proc"]["pid"] == proc["ppid"]
    assert proc["parent"]["exe"] == "/bin/sh"
    assert proc["ancestors"][0]["exec_id"] == proc["parent"]["exec_id"]
    assert [a["exec_id"] for a in proc["ancestors"]] == [top["proc"]["exec_id"]]
    assert echo["user"]["euid"] == 0
    assert echo["user"]["auid"] is None  # 0xFFFFFFFF: no login uid


def test_grandchildren_have_two_ancestors(events: list[Event]) -> None:
    top = top_exec(events)
    head = exec_of(events, "/usr/bin/head")
    tr = exec_of(events, "/usr/bin/tr")
    for ev, args in ((head, ["head", "-c", "5000", "/dev/zero"]), (tr, ["tr", "\\0", "x"])):
        anc = [a["exec_id"] for a in ev["proc"]["ancestors"]]
        assert len(anc) == 2
        assert anc[0] == ev["proc"]["parent"]["exec_id"]
        assert anc[1] == top["proc"]["exec_id"]
        assert ev["proc"]["args"] == args
    assert head["proc"]["parent"]["exec_id"] == tr["proc"]["parent"]["exec_id"]


def test_failed_exec(events: list[Event]) -> None:
    failed = exec_of(events, "/nonexistent/prog")
    x = failed["exec"]
    assert x["error"] == "ENOENT"
    assert x["retval"] == -2
    assert x["filename"] == "/nonexistent/prog"
    assert x["args"] == ["/nonexistent/prog", "x", "y"]
    assert x["argc"] == 3
    # proc is the caller, still running the shell image it was forked with.
    top = top_exec(events)
    proc = failed["proc"]
    assert proc["exe"] == "/bin/sh"
    assert proc["args"] == top["proc"]["args"]
    assert proc["parent"]["exec_id"] == top["proc"]["exec_id"]
    fork = fork_of(events, proc["exec_id"])
    assert fork["proc"]["exec_id"] == top["proc"]["exec_id"]
    # ... and that image is what its exit reports too (exit 127: command not found).
    ex = exit_of(events, proc["exec_id"])
    assert ex["proc"]["exe"] == "/bin/sh"
    assert ex["exit"]["code"] == 127


def test_truncated_exec(events: list[Event]) -> None:
    ev = exec_of(events, "/bin/true")
    x = ev["exec"]
    assert x["args_truncated"] is True
    assert x["filename_truncated"] is False
    assert x["argc"] == 2
    # The cut last argument is kept as far as it was read.
    assert x["args"] == ["/bin/true", "x" * (4096 - len("/bin/true\0"))]
    assert ev["proc"]["args_truncated"] is True
    assert ev["proc"]["args"] == x["args"]


# --- exit ----------------------------------------------------------------------------


def test_exit_echo(events: list[Event]) -> None:
    echo = exec_of(events, "/bin/echo")
    ex = exit_of(events, echo["proc"]["exec_id"])["exit"]
    assert ex["code"] == 0
    assert ex["signal"] is None
    assert ex["core_dumped"] is False


def test_exit_top_shell(events: list[Event]) -> None:
    ev = exit_of(events, top_exec(events)["proc"]["exec_id"])
    assert events[-1] is ev
    ex = ev["exit"]
    assert ex["code"] == 3
    assert ex["signal"] is None
    assert ex["status"] == 768
    assert ev["proc"]["exe"] == "/bin/sh"


def test_exit_killed(events: list[Event]) -> None:
    killed = exec_of(events, "/usr/bin/sh")
    assert killed["exec"]["args"] == ["sh", "-c", "kill -9 $$"]
    ev = exit_of(events, killed["proc"]["exec_id"])
    ex = ev["exit"]
    assert ex["signal"] == "SIGKILL"
    assert ex["signo"] == 9
    assert ex["code"] is None
    assert ex["core_dumped"] is False
    assert ev["proc"]["exe"] == "/usr/bin/sh"


def test_exit_duration_is_from_process_start(events: list[Event], batch: Batch) -> None:
    # Every record header carries the process's start_ns (start_boottime), so an exit's
    # duration is known exactly, however the process entered the table.
    wrong: dict[str, tuple[int | None, int]] = {}
    for ev, rec in zip(events, header_rows(batch), strict=True):
        if ev["evt"]["type"] != "exit":
            continue
        expected = int(rec["ts_ns"]) - int(rec["start_ns"])
        if ev["exit"]["duration_ns"] != expected:
            wrong[ev["proc"]["exec_id"]] = (ev["exit"]["duration_ns"], expected)
    assert wrong == {}, "exec_id: (duration_ns, exit ts_ns - start_ns)"


def test_decode_status() -> None:
    assert decode_status(0)["code"] == 0
    assert decode_status(768)["code"] == 3
    assert decode_status(32512)["code"] == 127
    s = decode_status(9)
    assert (s["code"], s["signal"], s["signo"], s["core_dumped"]) == (None, "SIGKILL", 9, False)
    s = decode_status(0x80 | 11)
    assert (s["signal"], s["core_dumped"]) == ("SIGSEGV", True)


def test_split_args() -> None:
    assert split_args(b"") == []
    assert split_args(b"a\0b\0") == ["a", "b"]
    assert split_args(b"a\0bc") == ["a", "bc"]
    assert split_args(b"\0") == [""]
    # Lossless (ktrail.strings): an undecodable byte is kept as U+DCFF.
    assert split_args(b"\xff\0") == ["\udcff"]


# --- fork ----------------------------------------------------------------------------


def test_forks(events: list[Event], batch: Batch) -> None:
    forks = of_type(events, "fork")
    assert len(forks) == 7
    execs = {e["proc"]["pid"]: e for e in of_type(events, "exec")}
    fork_recs = batch.records[int(EventType.FORK)]
    for ev, rec in zip(forks, fork_recs, strict=True):
        child = ev["fork"]["child"]
        assert ev["fork"]["thread"] is False
        assert child["pid"] == int(rec["child_pid"]) == child["tid"]
        assert child["exec_id"] == f"{child['pid']}:{ticks(int(rec['child_start_ns']))}"
        # Once the child execs (or fails to), its events carry that exec_id.
        later = [e for e in events if e["proc"]["pid"] == child["pid"]]
        assert later, child
        assert {e["proc"]["exec_id"] for e in later} == {child["exec_id"]}
        assert all(e["proc"]["parent"]["exec_id"] == ev["proc"]["exec_id"] for e in later)
        if child["pid"] in execs:
            assert execs[child["pid"]]["proc"]["exec_id"] == child["exec_id"]


def test_subshell_forks_without_exec(events: list[Event]) -> None:
    # The $(head | tr) subshell forks twice and never execs: it keeps the sh image.
    head = exec_of(events, "/usr/bin/head")
    sub_id = head["proc"]["parent"]["exec_id"]
    sub_forks = [e for e in of_type(events, "fork") if e["proc"]["exec_id"] == sub_id]
    assert len(sub_forks) == 2
    for f in sub_forks:
        assert f["proc"]["exe"] == "/bin/sh"
        assert f["proc"]["source"] == "fork"
    assert exit_of(events, sub_id)["exit"]["code"] == 0


# --- batching ------------------------------------------------------------------------


def test_same_events_one_record_at_a_time(tmp_path: Path, raw: RawBatch) -> None:
    clock = Clock()
    whole = make_enricher(tmp_path / "a", clock).process(decode(raw))
    single = make_enricher(tmp_path / "b", clock)
    split: list[Event] = []
    for off, n in zip(raw.offsets, raw.lengths, strict=True):
        split += single.process(decode(RawBatch(raw.buf[off : off + n], [0], [n])))
    assert split == whole


def test_empty_batch(enricher: Enricher) -> None:
    assert enricher.process(decode(RawBatch(b"", [], []))) == []
    assert not any(enricher.counts.values())


def test_event_contexts_are_bounded_and_rebuilt_the_same(tmp_path: Path, batch: Batch) -> None:
    # Unbounded, the same fixture gives the reference events.
    clock = Clock()
    ref = make_enricher(tmp_path, clock).process(batch)
    e = make_enricher(tmp_path, clock)
    e.max_contexts = 1
    events = e.process(batch)
    procs = {ev["proc"]["exec_id"] for ev in events}
    assert len(procs) > 2
    st = e.context_stats()
    assert st["contexts"] == 1
    assert st["context_evictions"] > 0
    # An evicted context is rebuilt from the table: the events do not change.
    assert [ev["proc"] for ev in events] == [ev["proc"] for ev in ref]
