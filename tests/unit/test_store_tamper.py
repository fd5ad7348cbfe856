"""Issue 12, finding 6: the store file deleted or replaced under the writer.

The writer (store/writer.py) checks about once a second whether its open
file is still what the path names. These tests drive a StoreWriter directly
(no kernel, no root); tests/integration/test_store_deleted.py does the
same through `ktrail run`.
"""

from __future__ import annotations

import io
import os
import sqlite3
import time
from pathlib import Path

import pytest
from storeevents import World

from ktrail.store.writer import StoreWriter


class Trail:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.warn = io.StringIO()
        self.w = World()
        self.sh = self.w.process(4000, "/usr/bin/bash", ["bash"])
        # A short check interval: the tests wait for it, never for a fixed time.
        self.writer = StoreWriter(str(path), warn=self.warn, file_check_s=0.05,
                                  housekeeping_s=0.05, linger_s=0.01)
        self.writer.start()

    def submit(self, n: int, marker: str) -> None:
        self.writer.submit([self.w.event(self.sh, "setsid", evt={
            "syscall": "setsid", "retval": 1, "error": marker}) for _ in range(n)])

    def wait(self, what: str, cond: object, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not cond():  # type: ignore[operator]
            assert time.monotonic() < deadline, f"{what}: {self.writer.stats()}"
            time.sleep(0.02)

    def committed(self, n: int) -> None:
        self.wait(f"{n} written", lambda: self.writer.written + self.writer.deleted >= n
                  and self.writer.pending == 0)


def markers(path: Path) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT json_extract(json, '$.evt.error'), count(*) "
                                 "FROM event_log GROUP BY 1"))
    finally:
        conn.close()


def remove_all(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def test_deleted_store_is_reported_once_counted_and_reopened(tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    t = Trail(path)
    t.submit(100, "before")
    t.committed(100)
    remove_all(path)
    t.wait("reopened", lambda: t.writer.reopened == 1)
    t.submit(30, "after")
    t.committed(130)
    t.writer.close()
    st = t.writer.stats()
    assert st["tamper"] == 1 and st["reopened"] == 1
    # What went with the deleted file is not claimed as written.
    assert st["deleted"] == 100 and st["written"] == 30
    assert markers(path) == {"after": 30}
    warnings = [line for line in t.warn.getvalue().splitlines() if "deleted" in line]
    assert len(warnings) == 1, t.warn.getvalue()
    assert f"store {path}: the file was deleted" in warnings[0]
    assert "100 events" in warnings[0] and "A new store is created" in warnings[0]
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_a_deletion_just_before_close_is_not_reported_as_stored(tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    t = Trail(path)
    t.writer.file_check_s = 3600.0   # only the check at close can see it
    t.writer._next_file_check = time.monotonic() + 3600
    t.submit(50, "x")
    t.committed(50)
    remove_all(path)
    t.writer.close()
    st = t.writer.stats()
    assert st["written"] == 0 and st["deleted"] == 50 and st["tamper"] == 1
    assert st["reopened"] == 0 and not path.exists()
    assert "The sensor is stopping" in t.warn.getvalue()


def test_a_file_moved_over_the_store_is_left_alone_and_the_store_stops(
        tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    t = Trail(path)
    t.submit(20, "before")
    t.committed(20)
    other = tmp_path / "notes.txt"
    other.write_text("not a store\n")
    os.replace(other, path)
    t.wait("noticed", lambda: t.writer.tamper == 1)
    t.submit(5, "after")
    # Shed (or failed, if already queued) as for any store that is off.
    t.wait("not stored", lambda: t.writer.shed + t.writer.failed == 5)
    t.writer.close()
    st = t.writer.stats()
    assert st["deleted"] == 20 and st["written"] == 0 and st["reopened"] == 0
    assert path.read_text() == "not a store\n"   # never written to
    err = t.warn.getvalue()
    assert "the path given to another file" in err and "not a ktrail store" in err
    assert "the store is off for the rest of this run" in err


def test_an_empty_file_moved_over_the_store_becomes_the_new_store(tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    t = Trail(path)
    t.submit(20, "before")
    t.committed(20)
    empty = tmp_path / "empty"
    empty.touch()
    os.replace(empty, path)
    t.wait("reopened", lambda: t.writer.reopened == 1)
    t.submit(7, "after")
    t.committed(27)
    t.writer.close()
    assert markers(path) == {"after": 7}
    assert t.writer.stats()["deleted"] == 20


def test_a_store_moved_away_keeps_its_events_and_a_new_one_starts(tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    t = Trail(path)
    t.submit(40, "before")
    t.committed(40)
    moved = tmp_path / "moved.db"
    os.rename(path, moved)
    t.wait("reopened", lambda: t.writer.reopened == 1)
    t.submit(9, "after")
    t.committed(49)
    t.writer.close()
    st = t.writer.stats()
    assert st["tamper"] == 1 and st["deleted"] == 0 and st["written"] == 49
    assert markers(moved) == {"before": 40}
    assert markers(path) == {"after": 9}
    assert "moved away or renamed" in t.warn.getvalue()


@pytest.mark.parametrize("times", [11])
def test_repeated_deletions_warn_a_bounded_number_of_times(tmp_path: Path,
                                                           times: int) -> None:
    path = tmp_path / "trail.db"
    t = Trail(path)
    for i in range(times):
        t.submit(1, f"n{i}")
        t.committed(i + 1)
        remove_all(path)
        t.wait("reopened", lambda i=i: t.writer.reopened == i + 1)
    t.writer.close()
    assert t.writer.tamper == times
    assert t.warn.getvalue().count("the file was deleted") == 10
