"""Reading the store: canned filters turned into SQL, and raw SQL kept read-only.

Connections come from schema.open_reader (read-only file, query_only); on
top of that an authorizer refuses anything but reading, so that a mistake
typed into `ktrail query` can never change the trail, and says what was
refused. Two SQL functions help with times: rfc3339(ns) and ns(text)
(`ns('10m')` is ten minutes ago, `ns('2026-11-21T10:00Z')` that instant).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ktrail.units import MAX_NS, MIN_NS, TimeSyntaxError, parse_when, to_rfc3339

EVENT_COLUMNS = ("id", "time", "type", "pid", "exec_id", "exe", "uid", "user", "container",
                 "path", "addr", "port")
ALERT_COLUMNS = ("id", "time", "rule", "priority", "tags", "exec_id", "output")
_GLOB = frozenset("*?[")

# Reading is all a query may do. Introspection pragmas take an argument
# (the table), every other pragma only when it is read, not set.
_ALLOWED = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
            getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
_INTROSPECTION = {"table_info", "table_xinfo", "index_list", "index_info", "index_xinfo",
                  "foreign_key_list"}
_ACTIONS = {getattr(sqlite3, n): n.removeprefix("SQLITE_").replace("_", " ")
            for n in dir(sqlite3) if n.startswith("SQLITE_") and n in {
                "SQLITE_INSERT", "SQLITE_UPDATE", "SQLITE_DELETE", "SQLITE_CREATE_TABLE",
                "SQLITE_CREATE_INDEX", "SQLITE_CREATE_VIEW", "SQLITE_CREATE_TRIGGER",
                "SQLITE_CREATE_TEMP_TABLE", "SQLITE_CREATE_TEMP_INDEX", "SQLITE_CREATE_TEMP_VIEW",
                "SQLITE_CREATE_TEMP_TRIGGER", "SQLITE_DROP_TABLE", "SQLITE_DROP_INDEX",
                "SQLITE_DROP_VIEW", "SQLITE_DROP_TRIGGER", "SQLITE_DROP_TEMP_TABLE",
                "SQLITE_DROP_TEMP_INDEX", "SQLITE_DROP_TEMP_VIEW", "SQLITE_DROP_TEMP_TRIGGER",
                "SQLITE_ALTER_TABLE", "SQLITE_ATTACH", "SQLITE_DETACH", "SQLITE_TRANSACTION",
                "SQLITE_ANALYZE", "SQLITE_REINDEX", "SQLITE_SAVEPOINT", "SQLITE_CREATE_VTABLE",
                "SQLITE_DROP_VTABLE", "SQLITE_PRAGMA"}}


class QueryError(ValueError):
    """Bad input to a query (filters, SQL); the message is for the user."""


class CorruptStore(QueryError):
    """The file broke under a query: a corrupt page, not the query's fault."""


class ReadOnly:
    """The authorizer: SELECT and reading only; remembers what it refused.
    It also keeps the time limit of the running statement (`timeout_s`;
    None: none), checked by SQLite's progress handler."""

    def __init__(self, timeout_s: float | None = None) -> None:
        self.refused: str | None = None
        self.timeout_s = timeout_s
        self.deadline: float | None = None
        self.timed_out = False

    def start(self) -> None:
        self.refused = None
        self.timed_out = False
        self.deadline = None if not self.timeout_s else time.monotonic() + self.timeout_s

    def progress(self) -> int:
        """Nonzero stops the statement: a recursive CTE, a cross join of
        big tables, or a LIKE over every row must not run for ever."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
            return 1
        return 0

    def __call__(self, action: int, arg1: str | None, arg2: str | None,
                 db: str | None, source: str | None) -> int:
        if action in _ALLOWED:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_PRAGMA and (arg2 is None or arg1 in _INTROSPECTION):
            return sqlite3.SQLITE_OK
        what = _ACTIONS.get(action, f"action {action}")
        target = f" {arg1}" if arg1 else ""
        if action == sqlite3.SQLITE_PRAGMA:
            target = f" {arg1} = {arg2}"
        self.refused = f"{what}{target}"
        return sqlite3.SQLITE_DENY


def _rfc3339(ns: Any) -> str | None:
    # NULL, like SQLite's own date functions, for what is not a time.
    if not isinstance(ns, int | float) or not MIN_NS <= ns <= MAX_NS:
        return None
    return to_rfc3339(int(ns))


def _ns(text: Any) -> int | None:
    try:
        return parse_when(str(text))
    except TimeSyntaxError:
        return None


# SQLite calls the progress handler every this many virtual machine steps:
# about a millisecond of work, so the check costs nothing measurable.
PROGRESS_STEPS = 10_000


def prepare(conn: sqlite3.Connection, timeout_s: float | None = None) -> ReadOnly:
    """Installs the read-only authorizer, the time limit of each statement
    (None: no limit) and the time functions."""
    conn.create_function("rfc3339", 1, _rfc3339, deterministic=True)
    conn.create_function("ns", 1, _ns)
    guard = ReadOnly(timeout_s)
    conn.set_authorizer(guard)
    conn.set_progress_handler(guard.progress, PROGRESS_STEPS)
    return guard


def _failed(guard: ReadOnly, e: sqlite3.Error) -> QueryError:
    if guard.timed_out:
        return QueryError(f"the query ran longer than its time limit of {guard.timeout_s:g} s "
                          "and was stopped (--timeout SECONDS allows more; 0: no limit)")
    if getattr(e, "sqlite_errorcode", None) in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return CorruptStore(f"the store file is corrupt ({e}); move it away")
    return QueryError(f"SQL: {e}")


def run_sql(conn: sqlite3.Connection, guard: ReadOnly, sql: str,
            params: tuple | list = ()) -> tuple[list[str], Iterator[tuple]]:
    """Runs one statement; -> (column names, rows). QueryError on any mistake."""
    guard.start()
    try:
        cur = conn.execute(sql, params)
    except sqlite3.Warning as e:  # "You can only execute one statement at a time."
        raise QueryError(f"SQL: {e}") from None
    except sqlite3.Error as e:
        if guard.refused is not None:
            raise QueryError(f"the store is read-only here: {guard.refused} is refused "
                             "(only SELECT and read-only PRAGMAs)") from None
        text = str(e)
        if "readonly" in text or "read-only" in text:
            raise QueryError(f"the store is read-only here: {text}") from None
        raise _failed(guard, e) from None
    names = [d[0] for d in cur.description] if cur.description else []
    return names, _rows(cur, guard)


def _rows(cur: sqlite3.Cursor, guard: ReadOnly) -> Iterator[tuple]:
    try:
        yield from cur
    except sqlite3.Error as e:  # errors can surface while stepping through rows
        raise _failed(guard, e) from None


@dataclass
class Filters:
    types: list[str] = field(default_factory=list)
    since: int | None = None
    until: int | None = None
    users: list[str] = field(default_factory=list)
    exes: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    addrs: list[str] = field(default_factory=list)
    containers: list[str] = field(default_factory=list)
    exec_ids: list[str] = field(default_factory=list)
    rules: list[str] = field(default_factory=list)
    limit: int | None = 1000     # the most recent N; None: all

    @property
    def alerts(self) -> bool:
        return bool(self.rules)


def _match(column: str, values: list[str]) -> tuple[str, list[Any]]:
    """col = ? for each value, or col GLOB ? for a value with wildcards."""
    terms = []
    params: list[Any] = []
    for v in values:
        terms.append(f"{column} GLOB ?" if _GLOB & set(v) else f"{column} = ?")
        params.append(v)
    return "(" + " OR ".join(terms) + ")", params


def build(f: Filters) -> tuple[str, list[Any], tuple[str, ...]]:
    """Filters -> (SQL, parameters, column names before the trailing json).
    Rows come newest first (the caller reverses them), at most limit + 1 so
    that the caller knows when the limit cut the answer."""
    if f.alerts:
        for name, values in (("--type", f.types), ("--path", f.paths), ("--addr", f.addrs),
                             ("--exe", f.exes), ("--user", f.users),
                             ("--container", f.containers)):
            if values:
                raise QueryError(f"--rule queries alerts; {name} filters events and cannot "
                                 "go with it (alerts carry their events in `json`)")
        table, columns = "alerts", ALERT_COLUMNS
    else:
        table, columns = "events", EVENT_COLUMNS
    where: list[str] = []
    params: list[Any] = []
    if f.since is not None:
        where.append("time >= ?")
        params.append(f.since)
    if f.until is not None:
        where.append("time <= ?")
        params.append(f.until)
    if f.types:
        where.append("type IN (" + ", ".join("?" * len(f.types)) + ")")
        params += f.types
    for column, values in (("exe", f.exes), ("path", f.paths), ("addr", f.addrs),
                           ("container", f.containers), ("exec_id", f.exec_ids),
                           ("rule", f.rules)):
        if values:
            sql, p = _match(column, values)
            where.append(sql)
            params += p
    if f.users:
        terms = []
        for u in f.users:
            # isdigit() alone takes '²', which int() refuses.
            uid = u.isascii() and u.isdigit()
            terms.append("uid = ?" if uid else "user = ?")
            params.append(int(u) if uid else u)
        where.append("(" + " OR ".join(terms) + ")")
    sql = f"SELECT {', '.join(columns)}, json FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY time DESC, id DESC"
    if f.limit is not None:
        sql += " LIMIT ?"
        params.append(f.limit + 1)
    return sql, params, columns
