"""Memory given back after a burst: maps rebuilt after mass deletion, contexts
of the dead dropped, glibc's free heap trimmed, and RSS in the stats."""

from __future__ import annotations

import os
import sys
from collections import OrderedDict

from fakeproc import FakeProc

from ktrail.engine.enrich import Enricher, Event
from ktrail.memory import Trimmer, compacted, rss_bytes, tune_malloc
from ktrail.output.formats import dumps
from ktrail.process import ProcessTable
from ktrail.process.procfs import ProcFS
from ktrail.process.users import UserNames
from ktrail.store.rows import RowBuilder

S = 1_000_000_000


def test_compacted_rebuilds_a_mostly_empty_dict_in_order() -> None:
    d = {i: str(i) for i in range(200_000)}
    for i in range(199_900):
        del d[i]
    big = sys.getsizeof(d)
    c = compacted(d)
    assert c is not None and type(c) is dict
    assert list(c.items()) == list(d.items())
    assert sys.getsizeof(c) < big / 100


def test_compacted_keeps_an_ordered_dict_ordered() -> None:
    o = OrderedDict((i, None) for i in range(100_000))
    o.move_to_end(5)
    for i in range(6, 100_000):
        del o[i]
    c = compacted(o)
    assert isinstance(c, OrderedDict) and list(c) == [0, 1, 2, 3, 4, 5]


def test_compacted_leaves_full_and_small_dicts_alone() -> None:
    assert compacted({i: i for i in range(200_000)}) is None  # full: nothing to gain
    small = {i: i for i in range(1000)}
    for i in range(990):
        del small[i]
    assert compacted(small) is None  # under 1 MiB: not worth a copy


def test_table_expiry_reports_the_dead_and_shrinks_its_maps(fake: FakeProc) -> None:
    t = ProcessTable(ProcFS(fake.path), UserNames(lookup=lambda uid: None),
                     max_entries=200_000)
    n = 50_000
    for pid in range(1000, 1000 + n):
        t.on_fork(1, 1, pid, pid, 1 * S)
        t.on_exit(pid, pid, 0, 2 * S)
    peak = sys.getsizeof(t._procs)
    gone: list[str] = []
    assert t.expire(60 * S, gone) == n
    assert len(gone) == n and gone[0] == "1000:1000"
    assert len(t) <= 1
    assert sys.getsizeof(t._procs) < peak / 100
    assert sys.getsizeof(t._exited) < 10_000 and sys.getsizeof(t._pid_key) < 10_000


def test_enricher_drops_the_contexts_of_expired_processes(
        events: list[Event], enricher: Enricher) -> None:
    assert enricher.context_stats()["contexts"] > 0
    exited = {e["proc"]["exec_id"] for e in events if e["evt"]["type"] == "exit"}
    assert exited & set(enricher._contexts)
    # Long after every exit: the table lets them go, and their contexts go too.
    enricher.clock.now_boot_ns = lambda: 10**18  # type: ignore[method-assign]
    enricher.tick()
    assert not exited & set(enricher._contexts)


def test_store_rows_forget_a_process_at_its_exit(events: list[Event]) -> None:
    rows = RowBuilder(boot=1)
    lines = b"".join(dumps(e) + b"\n" for e in events)
    rows.lines(lines, len(events))
    exited = {e["proc"]["exec_id"] for e in events if e["evt"]["type"] == "exit"}
    assert exited and not exited & set(rows.contexts) and not exited & set(rows.seen)


def test_store_rows_keep_no_decoded_objects(events: list[Event]) -> None:
    # From JSON lines (the store process), a context keeps its text, not a
    # reference into a decoded event: that pinned ~100 MB after a burst.
    alive = [e for e in events if e["evt"]["type"] != "exit"]  # contexts stay
    rows = RowBuilder(boot=1)
    lines = b"".join(dumps(e) + b"\n" for e in alive)
    rows.lines(lines, len(alive))
    assert rows.contexts and all(c.anchor is None for c in rows.contexts.values())
    # The sensor's own events (the in-process writer) still use the shortcut.
    rows = RowBuilder(boot=1)
    rows.events(alive)
    assert any(c.anchor is not None for c in rows.contexts.values())


def test_rss_and_trim() -> None:
    rss = rss_bytes()
    assert rss is not None and rss > 1 << 20
    assert rss_bytes(os.getpid()) is not None
    assert rss_bytes(2**22 + 12345) is None  # no such process
    tune_malloc()
    t = Trimmer(threshold=8 << 20, every_s=3600.0)
    free0 = t.heap_free_bytes()
    assert free0 is not None  # glibc here
    t.trim()  # a clean start
    # 40 MB of heap blocks (under the 256 KiB mmap threshold); every other
    # one freed, so the free memory is in holes, not at the top of the heap.
    blocks = [bytearray(100_000) for _ in range(400)]
    # Measured with the blocks in place: they may have filled holes that
    # earlier tests of this process left.
    free1 = t.heap_free_bytes() or 0
    kept = blocks[::2]
    del blocks
    assert (t.heap_free_bytes() or 0) >= free1 + (8 << 20)
    before = rss_bytes() or 0
    t.tick()
    assert t.trims == 2
    assert (rss_bytes() or 0) < before - (8 << 20)  # the holes were given back
    t.tick()  # within every_s: not again
    assert t.trims == 2
    st = t.stats()
    assert st["rss_bytes"] and st["trims"] == 2 and st["trimmed_bytes"] >= 8 << 20
    assert len(kept) == 200
