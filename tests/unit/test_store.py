"""The store without root: schema and migrations, refusing foreign or corrupt
files, the writer (rows, contexts, processes, shedding, write errors) and
retention."""

from __future__ import annotations

import hashlib
import io
import os
import re
import sqlite3
import time
from pathlib import Path

import orjson
import pytest
from storeevents import NS, World, alert

from ktrail.process import Process
from ktrail.store import schema
from ktrail.store.retention import Retention
from ktrail.store.schema import LATEST, StoreError, open_reader, open_writer
from ktrail.store.writer import StoreWriter


def wait_idle(st: StoreWriter) -> None:
    deadline = time.monotonic() + 10
    while st.pending and time.monotonic() < deadline:
        time.sleep(0.005)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def writer(path: Path, **kw) -> tuple[StoreWriter, io.StringIO]:
    warn = io.StringIO()
    w = StoreWriter(str(path), warn=warn, **kw)
    return w, warn


def session(w: World, pid: int = 4000) -> list[dict]:
    """A shell that runs ssh-keygen and curl: fork, exec, file and net events, exits."""
    sh = w.process(pid, "/usr/bin/bash", ["bash"], uid=1000)
    evs = []
    fork, kid = w.fork(sh, pid + 1)
    evs.append(fork)
    evs.append(w.exec(kid, "/usr/bin/ssh-keygen", ["ssh-keygen", "-t", "ed25519"]))
    evs.append(w.file(kid, "create", "/home/alice/.ssh/id_ed25519"))
    evs.append(w.file(kid, "rename", "/tmp/a", "/tmp/b"))
    evs.append(w.exit(kid))
    fork, kid2 = w.fork(sh, pid + 2)
    evs.append(fork)
    evs.append(w.exec(kid2, "/usr/bin/curl", ["curl", "http://127.0.0.1:8080/"]))
    evs.append(w.connect(kid2, "127.0.0.1", 8080))
    evs.append(w.exit(kid2, code=7))
    return evs


# ---- schema -------------------------------------------------------------------------


def test_new_store_has_the_latest_schema_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "trail.db"
    conn, fd = open_writer(str(path))
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST
        assert conn.execute("PRAGMA application_id").fetchone()[0] == schema.APPLICATION_ID
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"events", "event_log", "contexts", "processes", "alerts", "boots",
                "event_log_time", "event_log_type", "event_log_path", "event_log_addr",
                "contexts_exe", "contexts_user", "contexts_container"} <= names
    finally:
        conn.close()
        os.close(fd)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_migrations_run_in_order_and_roll_back_on_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "trail.db")
    conn, fd = open_writer(path)
    conn.close()
    os.close(fd)
    v2 = ["CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)"]
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, v2])
    monkeypatch.setattr(schema, "LATEST", LATEST + 1)
    conn, fd = open_writer(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST + 1
    conn.execute("SELECT * FROM notes")
    conn.close()
    os.close(fd)
    # A migration that fails leaves the store as it was.
    bad = ["CREATE TABLE more (x)", "THIS IS NOT SQL"]
    monkeypatch.setattr(schema, "MIGRATIONS", [*schema.MIGRATIONS, bad])
    monkeypatch.setattr(schema, "LATEST", LATEST + 2)
    with pytest.raises(StoreError, match=r"trail\.db"):
        open_writer(path)
    c = sqlite3.connect(path)
    assert c.execute("PRAGMA user_version").fetchone()[0] == LATEST + 1
    assert not c.execute("SELECT name FROM sqlite_master WHERE name = 'more'").fetchall()
    c.close()


def test_store_from_a_newer_ktrail_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    conn, fd = open_writer(str(path))
    conn.execute(f"PRAGMA user_version = {LATEST + 3}")
    conn.close()
    os.close(fd)
    before = digest(path)
    for opener in (open_writer, open_reader):
        with pytest.raises(StoreError, match=f"{path}.*newer ktrail.*version {LATEST + 3}"):
            opener(str(path))
    assert digest(path) == before


@pytest.mark.parametrize("kind", ["text", "foreign sqlite", "corrupt", "directory"])
def test_foreign_or_corrupt_file_is_refused_and_left_alone(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "trail.db"
    if kind == "text":
        path.write_text("not a database\n" * 100)
        needle = "not an SQLite database"
    elif kind == "foreign sqlite":
        c = sqlite3.connect(path)
        c.execute("CREATE TABLE accounts (id, name)")
        c.commit()
        c.close()
        needle = "not a ktrail store.*accounts"
    elif kind == "corrupt":
        w, _ = writer(path)
        w.start()
        w.submit(session(World()))
        w.close()
        data = bytearray(path.read_bytes())
        data[100:4096] = os.urandom(3996)  # page 1 past the header: the schema
        path.write_bytes(bytes(data))
        needle = "corrupt|malformed|not a database"
    else:
        path.mkdir()
        needle = "is a directory"
    before = None if kind == "directory" else digest(path)
    for opener in (open_writer, open_reader):
        with pytest.raises(StoreError) as exc:
            opener(str(path))
        msg = str(exc.value)
        assert str(path) in msg
        assert re.search(needle, msg), msg
        assert "\n" not in msg
    if before is not None:
        assert digest(path) == before
        assert not Path(str(path) + "-wal").exists() or kind == "corrupt"


def test_second_writer_is_refused(tmp_path: Path) -> None:
    w, _ = writer(tmp_path / "trail.db")
    try:
        with pytest.raises(StoreError, match="in use by another"):
            StoreWriter(str(tmp_path / "trail.db"))
    finally:
        w.close()
    StoreWriter(str(tmp_path / "trail.db")).close()  # the lock went with the first


def test_reader_of_a_missing_store_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"no store at .*nope\.db"):
        open_reader(str(tmp_path / "nope.db"))


# ---- the writer ---------------------------------------------------------------------


def test_events_round_trip_exactly_and_contexts_are_shared(tmp_path: Path) -> None:
    w = World()
    evs = session(w)
    sh = "4000:28000"
    evs += [w.file(sh, "create", f"/tmp/f{i}") for i in range(50)]
    st, warn = writer(tmp_path / "trail.db")
    st.start()
    blobs = [orjson.dumps(e) for e in evs]
    st.submit(evs[:10])               # the writer encodes
    st.submit(evs[10:], lines=b"\n".join(blobs[10:]) + b"\n")  # the output's lines
    st.close()
    assert warn.getvalue() == ""
    c = open_reader(str(tmp_path / "trail.db"))
    rows = c.execute("SELECT json, type, exe, user, path, addr, port FROM events "
                     "ORDER BY id").fetchall()
    assert [r[0] for r in rows] == [b.decode() for b in blobs]
    assert {r[1] for r in rows} >= {"fork", "exec", "create", "rename", "connect", "exit"}
    connect = next(r for r in rows if r[1] == "connect")
    assert connect[4:] == (None, "127.0.0.1", 8080)
    assert next(r for r in rows if r[1] == "rename")[4] == "/tmp/a"
    # The shell's 52 events share one context; each stored part is small.
    assert c.execute("SELECT count(*) FROM contexts").fetchone()[0] <= 6
    assert c.execute("SELECT count(*) FROM event_log WHERE ctx_at IS NULL").fetchone()[0] == 0
    stored = c.execute("SELECT sum(length(json)) FROM event_log").fetchone()[0]
    assert stored < sum(map(len, blobs)) * 0.6
    st_stats = st.stats()
    assert st_stats["written"] == len(evs) and st_stats["shed"] == 0
    assert st_stats["failed"] == 0 and st_stats["batches"] >= 1


def test_non_ascii_json_is_rebuilt_exactly(tmp_path: Path) -> None:
    w = World()
    p = w.process(77, "/usr/bin/vim", ["vim", "résumé.txt"])
    evs = [w.file(p, "create", "/home/zoë/résumé.txt"), w.file(p, "create", "/tmp/ok")]
    evs[0]["proc"]["comm"] = "vïm"
    st, _ = writer(tmp_path / "trail.db")
    st.start()
    st.submit(evs)
    st.close()
    c = open_reader(str(tmp_path / "trail.db"))
    got = [orjson.loads(r[0]) for r in c.execute("SELECT json FROM events ORDER BY id")]
    assert got == evs


def test_processes_one_row_each_with_lifetime_and_image(tmp_path: Path) -> None:
    w = World()
    evs = session(w)
    st, _ = writer(tmp_path / "trail.db")
    st.start()
    st.submit(evs[:4])
    st.submit(evs[4:])
    st.close()
    c = open_reader(str(tmp_path / "trail.db"))
    rows = {r[0]: r[1:] for r in c.execute(
        "SELECT exec_id, parent_exec_id, exe, args, end_time IS NOT NULL, exit_code, user "
        "FROM processes")}
    assert set(rows) == {"4000:28000", "4001:28007", "4002:28014"}
    assert rows["4001:28007"][:2] == ("4000:28000", "/usr/bin/ssh-keygen")
    assert orjson.loads(rows["4001:28007"][2]) == ["ssh-keygen", "-t", "ed25519"]
    assert rows["4002:28014"][3:] == (1, 7, "alice")
    assert rows["4000:28000"][3] == 0  # still running


def test_restart_upserts_processes_and_marks_the_vanished(tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    w = World()
    evs = session(w)
    st, _ = writer(path)
    st.start()
    st.submit(evs)
    st.close()
    first_ids = [r[0] for r in sqlite3.connect(path).execute("SELECT id FROM event_log")]
    # Restart: /proc shows the shell again (same identity), nothing else.
    seeded = Process(pid=4000, start_ticks=28000, exec_id="4000:28000", ppid=1,
                     parent_exec_id=None, comm="bash", exe="/usr/bin/bash", args=["bash"],
                     args_truncated=False, cwd="/root", uid=1000, gid=1000, user="alice",
                     container_id=None, ancestors=(), start_ns=None, source="procfs")
    other = World(start_ns=w.now)
    lone = other.process(5000, "/usr/bin/sleep", ["sleep", "9"])
    st, _ = writer(path)
    st.start([seeded])
    st.submit([other.event(lone, "setsid", evt={"syscall": "setsid", "retval": 5000,
                                                "error": None})])
    st.close()
    c = sqlite3.connect(path)
    assert c.execute("SELECT count(*), count(DISTINCT exec_id) FROM processes").fetchone() \
        == (4, 4)
    ids = [r[0] for r in c.execute("SELECT id FROM event_log ORDER BY id")]
    assert ids[:len(first_ids)] == first_ids and len(ids) == len(first_ids) + 1
    assert len(set(ids)) == len(ids)
    # The shell is alive again; nothing else from the first run is left "running".
    assert c.execute("SELECT end_time FROM processes WHERE exec_id = '4000:28000'"
                     ).fetchone()[0] is None
    assert c.execute("SELECT exec_id FROM processes WHERE end_time IS NULL").fetchall() \
        == [("4000:28000",), ("5000:35000",)]


def test_alerts_are_stored(tmp_path: Path) -> None:
    w = World()
    evs = session(w)
    st, _ = writer(tmp_path / "trail.db")
    st.start()
    st.submit(evs, [alert(evs[7], "Outbound to odd port")])
    st.close()
    c = open_reader(str(tmp_path / "trail.db"))
    row = c.execute("SELECT rule, priority, tags, exec_id, output, json FROM alerts").fetchone()
    assert row[:5] == ("Outbound to odd port", "WARNING", '["test","T1059"]', "4002:28014",
                       "Outbound to odd port fired")
    assert orjson.loads(row[5])["alert"]["events"][0]["evt"]["type"] == "connect"
    assert st.stats()["alerts"] == 1


def test_full_queue_sheds_whole_batches_and_counts_them(tmp_path: Path) -> None:
    w = World()
    sh = w.process(10, "/usr/bin/bash", ["bash"])
    batch = lambda n: [w.file(sh, "create", f"/tmp/x{i}") for i in range(n)]  # noqa: E731
    st, warn = writer(tmp_path / "trail.db", max_pending=15)
    # Not started: nothing drains the queue yet.
    assert st.submit(batch(10))          # an empty queue takes any batch
    assert not st.submit(batch(10))      # 20 > 15: shed whole
    assert st.submit(batch(5))           # 15 fits
    assert not st.submit(batch(1), [alert(batch(1)[0])])
    assert st.stats()["shed"] == 11 and st.stats()["shed_alerts"] == 1
    assert warn.getvalue().count("falling behind") == 1
    st.start()
    st.close()
    assert st.stats()["written"] == 15
    assert sqlite3.connect(tmp_path / "trail.db").execute(
        "SELECT count(*) FROM event_log").fetchone()[0] == 15


def test_disk_full_is_reported_once_counted_and_recovers(tmp_path: Path) -> None:
    w = World()
    sh = w.process(10, "/usr/bin/bash", ["bash"])
    st, warn = writer(tmp_path / "trail.db")
    st.start()
    pages = st.conn.execute("PRAGMA page_count").fetchone()[0]
    st.conn.execute(f"PRAGMA max_page_count = {pages + 2}")  # SQLite's own "disk full"
    for _ in range(3):
        st.submit([w.file(sh, "create", f"/tmp/{'x' * 200}{i}") for i in range(500)])
        wait_idle(st)
    deadline = time.monotonic() + 10
    while st.stats()["failed"] < 1500 and time.monotonic() < deadline:
        time.sleep(0.01)
    s = st.stats()
    assert s["failed"] == 1500 and s["errors"] == 3 and s["last_error"] == "disk full"
    assert warn.getvalue().count("disk full") == 1
    assert "stats.store.failed" in warn.getvalue() and "output stream goes on" in warn.getvalue()
    st.conn.execute("PRAGMA max_page_count = 1073741823")
    st.submit([w.file(sh, "create", "/tmp/after")])
    st.close()
    assert st.stats()["written"] == 1
    assert "writing again (1500 events were not stored)" in warn.getvalue()


# ---- retention ----------------------------------------------------------------------


def test_retention_by_age_deletes_old_rows_and_keeps_running_processes(tmp_path: Path) -> None:
    now = World().now
    old = World(start_ns=now - 3 * 3600 * NS)
    evs = session(old)
    new = World(start_ns=now)
    evs += session(new, pid=6000)
    st, _ = writer(tmp_path / "trail.db", retention=Retention(max_age_ns=3600 * NS))
    st.start()
    st.submit(evs)
    st.close()
    conn, fd = open_writer(str(tmp_path / "trail.db"))
    r = Retention(max_age_ns=3600 * NS)
    assert r.enforce(conn, now_ns=now + NS) == len(evs) // 2
    assert conn.execute("SELECT min(time) FROM event_log").fetchone()[0] >= now
    # The old shell never exited: kept as an ancestor. Its exited children went.
    left = {e for (e,) in conn.execute("SELECT exec_id FROM processes")}
    assert left == {"4000:28000", "6000:42000", "6001:42007", "6002:42014"}
    assert r.stats()["deleted_processes"] == 2
    assert r.stats()["deleted_events"] == len(evs) // 2
    # Every remaining event still resolves to its context.
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == len(evs) // 2
    conn.close()
    os.close(fd)


def test_retention_by_size_bounds_the_file(tmp_path: Path) -> None:
    path = tmp_path / "trail.db"
    w = World()
    sh = w.process(10, "/usr/bin/bash", ["bash", "-c", "x" * 300])
    limit = 6 << 20
    st, _ = writer(path, retention=Retention(max_age_ns=None, max_bytes=limit, interval_s=0,
                                             chunk=2000))
    st.start()
    for b in range(40):
        st.submit([w.file(sh, "create", f"/var/tmp/{b}/{'y' * 150}/{i}") for i in range(1000)])
        wait_idle(st)
    st.close()
    deleted = st.stats()["retention"]["deleted_events"]
    assert deleted > 0
    conn = sqlite3.connect(path)
    count, pages, size = (conn.execute(q).fetchone()[0] for q in (
        "SELECT count(*) FROM event_log", "PRAGMA page_count", "PRAGMA page_size"))
    assert count == 40000 - deleted
    assert pages * size <= limit * 1.15, (pages * size, limit)
    # What is left is the newest.
    assert conn.execute("SELECT min(id) FROM event_log").fetchone()[0] == deleted + 1


def test_rows_from_json_lines_alone_are_the_rows_from_events() -> None:
    """The store process builds rows from JSON lines (RowBuilder.lines), cutting a
    known context out of the text before decoding: it must give exactly what the
    events themselves give, context changes and first sightings included."""
    from ktrail.store.rows import RowBuilder

    w = World()
    evs = session(w)
    sh = "4000:28000"
    evs += [w.file(sh, "create", f"/tmp/é{i}") for i in range(20)]
    evs += [w.connect(sh, "10.0.0.1", 80 + i) for i in range(5)]
    evs.append(w.exec(sh, "/usr/bin/python3", ["python3", "-c", "pass"]))  # a new image
    evs += [w.file(sh, "unlink", f"/tmp/x{i}") for i in range(5)]
    lines = b"\n".join(orjson.dumps(e) for e in evs) + b"\n"
    from_events = RowBuilder(1).events(evs, lines)
    decoded = [orjson.loads(x) for x in lines.split(b"\n")[:-1]]
    from_decoded = RowBuilder(1).events(decoded, lines)
    from_lines = RowBuilder(1).lines(lines, len(evs))
    assert from_lines == from_events == from_decoded
    assert len(from_lines[0]) == len(evs)
