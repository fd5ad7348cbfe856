"""The store's tables, their versions, and opening a store file safely.

A store is an SQLite database marked as ktrail's by `PRAGMA application_id`;
its schema version is `PRAGMA user_version`, and MIGRATIONS brings an older
file up to date in one transaction. A file that is not SQLite, an SQLite
database of another program, a corrupt file, or a store written by a newer
ktrail is refused with a StoreError naming the path, and never modified.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from urllib.parse import quote

from ktrail.output.private import (
    PrivateFileError,
    check_foreign,
    check_path,
    make_dirs,
    open_private,
)

APPLICATION_ID = 0x6B74726C  # "ktrl"
SQLITE_MAGIC = b"SQLite format 3\x00"

# An event's JSON is stored in two parts. What every event of a process
# repeats (proc.exec_id, start_time, exe, args, cwd, parent, ancestors: about
# two thirds of the bytes) is kept once per context in `contexts.fragment`;
# `event_log.json` is the rest, and `event_log.ctx_at` the offset where the
# fragment goes back in. The `events` view rebuilds the exact JSON. A context
# is one process image as seen with one user and container: an exec, a
# setuid or a new name starts a new one.
SCHEMA_V1 = [
    """CREATE TABLE boots (
        id INTEGER PRIMARY KEY,
        boot_id TEXT NOT NULL UNIQUE,   -- /proc/sys/kernel/random/boot_id
        booted INTEGER NOT NULL         -- boot time, ns since the epoch
    )""",
    """CREATE TABLE contexts (
        id INTEGER PRIMARY KEY,
        boot INTEGER NOT NULL,
        exec_id TEXT,                   -- null for the kernel (device events)
        pid INTEGER NOT NULL,
        exe TEXT,
        uid INTEGER,
        user TEXT,
        container TEXT,
        time INTEGER NOT NULL,          -- first event seen with it
        fragment TEXT NOT NULL          -- JSON members of proc, without braces
    )""",
    "CREATE INDEX contexts_exec_id ON contexts (exec_id, boot)",
    "CREATE INDEX contexts_exe ON contexts (exe)",
    "CREATE INDEX contexts_user ON contexts (user)",
    "CREATE INDEX contexts_uid ON contexts (uid)",
    "CREATE INDEX contexts_container ON contexts (container) WHERE container IS NOT NULL",
    """CREATE TABLE event_log (
        id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, even after retention
        time INTEGER NOT NULL,          -- evt.time, ns since the epoch
        type TEXT NOT NULL,
        ctx INTEGER NOT NULL,           -- contexts.id
        path TEXT,                      -- the type's main file path
        addr TEXT,                      -- net.daddr: the remote address
        port INTEGER,                   -- net.dport
        json TEXT NOT NULL,             -- the event without its context fragment
        ctx_at INTEGER                  -- where the fragment goes; null: json is whole
    )""",
    "CREATE INDEX event_log_time ON event_log (time)",
    "CREATE INDEX event_log_type ON event_log (type, time)",
    "CREATE INDEX event_log_ctx ON event_log (ctx, time)",
    # Most events have no path or no remote address: partial indexes cost
    # nothing for those.
    "CREATE INDEX event_log_path ON event_log (path) WHERE path IS NOT NULL",
    "CREATE INDEX event_log_addr ON event_log (addr) WHERE addr IS NOT NULL",
    """CREATE VIEW events AS
        SELECT e.id, e.time, e.type, c.pid, c.exec_id, c.exe, c.uid, c.user, c.container,
               e.path, e.addr, e.port,
               CASE WHEN e.ctx_at IS NULL THEN e.json
                    ELSE substr(e.json, 1, e.ctx_at) || ',' || c.fragment
                         || substr(e.json, e.ctx_at + 1) END AS json,
               c.boot, e.ctx
        FROM event_log e JOIN contexts c ON c.id = e.ctx""",
    """CREATE TABLE processes (
        id INTEGER PRIMARY KEY,
        boot INTEGER NOT NULL REFERENCES boots (id),
        exec_id TEXT NOT NULL,          -- "<pid>:<start ticks>", unique within a boot
        pid INTEGER NOT NULL,
        parent_exec_id TEXT,            -- the creator, same boot
        start_time INTEGER,
        end_time INTEGER,               -- exit, or when it was found gone (exit_* null)
        exit_code INTEGER,
        exit_signal TEXT,
        exe TEXT,                       -- the latest image
        args TEXT,                      -- JSON list
        comm TEXT,
        cwd TEXT,
        uid INTEGER,
        user TEXT,
        container TEXT,
        source TEXT,                    -- exec, fork, procfs, partial
        UNIQUE (boot, exec_id)
    )""",
    "CREATE INDEX processes_parent ON processes (boot, parent_exec_id)",
    "CREATE INDEX processes_pid ON processes (pid)",
    "CREATE INDEX processes_end ON processes (end_time) WHERE end_time IS NOT NULL",
    """CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        time INTEGER NOT NULL,
        rule TEXT NOT NULL,
        priority TEXT,
        tags TEXT,                      -- JSON list
        exec_id TEXT,
        output TEXT,
        json TEXT NOT NULL
    )""",
    "CREATE INDEX alerts_time ON alerts (time)",
    "CREATE INDEX alerts_rule ON alerts (rule, time)",
    "CREATE INDEX alerts_exec_id ON alerts (exec_id, time)",
]

# MIGRATIONS[i] takes a store from version i to i + 1, inside one transaction.
Migration = list[str] | Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = [SCHEMA_V1]
LATEST = len(MIGRATIONS)

# Writer settings. WAL lets readers in other processes run while the sensor
# writes; synchronous=NORMAL syncs at checkpoints, not at every commit (a
# crash of the process loses nothing committed; a power cut may lose the
# last commits, never the file). Incremental auto-vacuum lets retention give
# freed pages back to the filesystem.
PAGE_SIZE = 4096
# Checkpoints copy the WAL into the file and sync both: every 64 MiB rather
# than SQLite's 4 MiB, fewer syncs and pages copied once per checkpoint
# instead of several times (about +20% throughput here).
CHECKPOINT_PAGES = 16384
WAL_LIMIT_BYTES = 64 << 20     # the -wal file is truncated to this after checkpoints
CACHE_KIB = 64 << 10
BUSY_TIMEOUT_MS = 5000


class StoreError(Exception):
    """A store that cannot be used; the message names the path and what to do.
    `disk_full`: nothing is wrong with the file, there is no room to write."""

    def __init__(self, message: str, disk_full: bool = False) -> None:
        super().__init__(message)
        self.disk_full = disk_full


def _full(e: BaseException) -> bool:
    return (getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or (isinstance(e, OSError) and e.errno == errno.ENOSPC))


def _describe(e: sqlite3.Error) -> str:
    text = str(e)
    if _full(e):
        return "disk full"
    code = getattr(e, "sqlite_errorcode", None)
    if code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or "malformed" in text:
        return f"the file is corrupt ({text})"
    return text


def read_error(path: str, e: Exception) -> StoreError:
    """What to tell the user when reading a store that opened fails: a page
    is corrupt (truncated file, overwritten bytes), a table is missing, or a
    stored JSON text does not parse."""
    if isinstance(e, sqlite3.Error):
        text = str(e)
        if text.startswith(("no such table", "no such column")):
            what = f"not a complete ktrail store ({text})"
        else:
            what = _describe(e)
    else:
        what = f"the file is corrupt (a stored event does not parse: {e})"
    return StoreError(f"store {path}: {what}; move it away or choose another --store PATH")


def check_header(path: str) -> bool:
    """True when `path` holds data (False: missing or empty, a new store).
    Raises StoreError when it is not an SQLite database at all."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    except OSError as e:
        raise StoreError(f"store {path}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise StoreError(f"store {path}: is a directory; give a file path (e.g. "
                         f"{os.path.join(path, 'trail.db')})")
    if st.st_size == 0:
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise StoreError(f"store {path}: cannot read: {e.strerror}") from None
    if head != SQLITE_MAGIC:
        raise StoreError(f"store {path}: not a ktrail store (not an SQLite database); it was "
                         "left untouched: move it away or choose another --store PATH")
    return True


def _tables(conn: sqlite3.Connection) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "ORDER BY name")]


def check_identity(conn: sqlite3.Connection, path: str) -> int:
    """The store's schema version; 0 for an empty database. Raises StoreError
    for another program's database or a newer ktrail's store."""
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = _tables(conn)
    except sqlite3.DatabaseError as e:
        raise StoreError(f"store {path}: {_describe(e)}; it was left untouched: move it "
                         "away or choose another --store PATH") from None
    if app_id != APPLICATION_ID:
        if app_id == 0 and not tables and version == 0:
            return 0
        what = f"tables: {', '.join(tables[:6])}" if tables else "no tables"
        raise StoreError(f"store {path}: an SQLite database that is not a ktrail store "
                         f"({what}); it was left untouched: move it away or choose another "
                         "--store PATH")
    if version > LATEST:
        raise StoreError(f"store {path}: written by a newer ktrail (schema version {version}; "
                         f"this ktrail knows up to {LATEST}); upgrade ktrail, or use another "
                         "--store PATH")
    return version


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back if anything in it fails (the
    connection is in autocommit mode, so transactions are explicit)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back by itself after some errors
        raise


def migrate(conn: sqlite3.Connection, path: str) -> int:
    """Brings the store to LATEST in one transaction; returns the version it had."""
    with transaction(conn):
        version = check_identity(conn, path)
        for step in range(version, LATEST):
            m = MIGRATIONS[step]
            if callable(m):
                m(conn)
            else:
                for stmt in m:
                    conn.execute(stmt)
        if version < LATEST:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {LATEST}")
    return version


def open_writer(path: str) -> tuple[sqlite3.Connection, int]:
    """Opens (creating if needed) the store for the sensor, at the latest
    schema. Returns the connection and the descriptor of an exclusive lock
    that keeps a second sensor from writing the same store; close the
    descriptor after the connection."""
    try:
        # Before anything is read: a link or a file planted by another user
        # (the store, or SQLite's files beside it) is refused, not followed.
        real, _ = check_path(path)
        for extra in ("-wal", "-shm", "-journal"):
            check_foreign(real + extra)
    except PrivateFileError as e:
        raise StoreError(f"store {path}: {e.reason}") from None
    existing = check_header(path)  # before anything is created or locked
    try:
        if not existing:
            # The trail holds command lines and paths: root only. The file is
            # created 0600, its missing directories 0700, whatever the umask,
            # before SQLite opens it (SQLite would use 0644); SQLite gives its
            # -wal and -shm the database file's mode.
            make_dirs(os.path.dirname(real) or ".")
        fd, _ = open_private(real, os.O_RDONLY, make_parents=False)
    except PrivateFileError as e:
        raise StoreError(f"store {path}: {e.reason}") from None
    except OSError as e:
        raise StoreError(f"store {path}: {e.strerror}", disk_full=_full(e)) from None
    try:
        # flock, not fcntl: SQLite's own POSIX locks are not disturbed. The
        # descriptor stays open for the writer's lifetime (closing another
        # descriptor of the file would drop SQLite's locks).
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"store {path}: in use by another `ktrail run`; give this one "
                         "another --store PATH, or --no-store") from None
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as e:
        os.close(fd)
        raise StoreError(f"store {path}: cannot open: {_describe(e)}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if check_identity(conn, path) == 0:
            # Only possible before the first table exists.
            conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"store {path}: the filesystem does not support SQLite's WAL "
                             "mode (needed so that queries can run while the sensor writes); "
                             "choose a local filesystem")
        migrate(conn, path)
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {CHECKPOINT_PAGES}")
        conn.execute("PRAGMA temp_store = MEMORY")
    except (sqlite3.Error, StoreError) as e:
        conn.close()
        os.close(fd)
        if isinstance(e, StoreError):
            raise
        if _full(e):
            raise StoreError(f"store {path}: disk full", disk_full=True) from None
        raise StoreError(f"store {path}: {_describe(e)}; it was left untouched: move it "
                         "away or choose another --store PATH") from None
    return conn, fd


def open_reader(path: str) -> sqlite3.Connection:
    """A read-only connection for queries, safe while the sensor writes."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StoreError(f"no store at {path} (`ktrail run` creates it; --store PATH reads "
                         "another)") from None
    except OSError as e:
        raise StoreError(f"store {path}: {e.strerror}") from None
    if st.st_size == 0:
        raise StoreError(f"store {path}: empty; no trail has been written to it yet")
    check_header(path)
    if not os.access(path, os.R_OK):
        raise StoreError(f"store {path}: permission denied (the trail is readable by root "
                         "only)")
    uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA query_only = 1")
        version = check_identity(conn, path)
    except sqlite3.Error as e:
        raise StoreError(f"store {path}: cannot open: {_describe(e)}") from None
    if version < LATEST:
        conn.close()
        raise StoreError(f"store {path}: schema version {version}, older than this ktrail's "
                         f"{LATEST}; `ktrail run` upgrades it on its next start")
    return conn
