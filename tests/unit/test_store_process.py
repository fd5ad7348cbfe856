"""The store's writer in a process of its own (sinks/store.py StoreProcess):
what it is handed arrives byte for byte, Ctrl-C does not cut it short, a
crash is reported and counted, a bad file is refused at start."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import orjson
import pytest
from storeevents import World, alert

from ktrail.sinks.base import Batch
from ktrail.sinks.store import StoreProcess
from ktrail.store.schema import StoreError, open_reader


def shell_events(w: World, n: int) -> list[dict]:
    sh = w.process(4000, "/usr/bin/bash", ["bash"], uid=1000)
    return [w.file(sh, "create", f"/tmp/f{i}") for i in range(n)]


def test_batches_arrive_exactly_and_counts_come_back(tmp_path: Path) -> None:
    warn = io.StringIO()
    store = StoreProcess(str(tmp_path / "trail.db"), warn=warn)
    assert store.pid != os.getpid()
    store.start([])
    w = World()
    evs = shell_events(w, 300)
    batches = [Batch(evs[i:i + 100], [alert(evs[i])] if i == 0 else []) for i in (0, 100, 200)]
    for b in batches:
        store.submit(b)
    store.close()
    store.close()  # idempotent
    assert warn.getvalue() == ""
    st = store.stats()
    assert (st["written"], st["alerts"], st["shed"], st["failed"]) == (300, 1, 0, 0)
    assert st["process"]["alive"] is False
    rows = open_reader(str(tmp_path / "trail.db")).execute(
        "SELECT json FROM events ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [orjson.dumps(e).decode() for e in evs]


def test_sigint_to_the_group_does_not_cut_the_store_short(tmp_path: Path) -> None:
    store = StoreProcess(str(tmp_path / "trail.db"), warn=io.StringIO())
    store.start([])
    os.kill(store.pid, signal.SIGINT)   # what a Ctrl-C sends the whole process group
    os.kill(store.pid, signal.SIGTERM)
    w = World()
    store.submit(Batch(shell_events(w, 50)))
    time.sleep(0.2)
    store.tick()
    assert store.error is None
    store.close()
    assert store.stats()["written"] == 50


def test_a_dead_store_process_is_reported_and_what_it_held_counted(tmp_path: Path) -> None:
    warn = io.StringIO()
    store = StoreProcess(str(tmp_path / "trail.db"), warn=warn)
    store.start([])
    w = World()
    store.submit(Batch(shell_events(w, 40)))
    os.kill(store.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while store.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
        store.tick()
    assert store.error is not None and "exited with code -9" in store.error
    assert "stopping" in warn.getvalue()
    store.submit(Batch(shell_events(w, 10)))  # after its death: failed, not lost
    st = store.stats()
    # Every event handed over is written or counted as not stored.
    assert st["written"] + st["failed"] + st["shed"] == 50
    assert st["failed"] >= 10
    store.close()


def test_a_foreign_file_is_refused_at_start(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"not a database, and not ktrail's" * 100)
    with pytest.raises(StoreError) as e:
        StoreProcess(str(path), warn=io.StringIO())
    assert str(path) in str(e.value)
    assert path.read_bytes().startswith(b"not a database")  # never overwritten


def test_a_stalled_store_process_sheds_whole_batches_never_blocks(tmp_path: Path) -> None:
    warn = io.StringIO()
    store = StoreProcess(str(tmp_path / "trail.db"), max_bytes=256 << 10, warn=warn)
    store.start([])
    os.kill(store.pid, signal.SIGSTOP)  # the store cannot take anything
    w = World()
    try:
        t0 = time.monotonic()
        for _ in range(40):
            store.submit(Batch(shell_events(w, 100)))  # ~100 KiB of JSON each
        assert time.monotonic() - t0 < 2  # never waited for the store
        assert store.queued() <= 256 << 10  # the bound holds
    finally:
        os.kill(store.pid, signal.SIGCONT)
    store.close()
    st = store.stats()
    assert st["shed"] > 0 and "falling behind" in warn.getvalue()
    assert st["written"] + st["shed"] == 4000 and st["failed"] == 0
