"""`ktrail query`: search the audit trail store, by filters or in SQL."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from ktrail.cli.errors import EXIT_ERROR, CliError, check_range
from ktrail.config import ConfigError
from ktrail.config import load as load_config
from ktrail.loader.catalog import CATALOG
from ktrail.store import DEFAULT_PATH, StoreError
from ktrail.store.query import CorruptStore, Filters, QueryError, build, prepare, run_sql
from ktrail.store.schema import open_reader
from ktrail.strings import printable
from ktrail.units import ID_MAX, TimeSyntaxError, parse_when, to_rfc3339

FORMATS = ("auto", "table", "json", "csv")
DEFAULT_TIMEOUT_S = 30.0
MAX_LIMIT = 1_000_000_000  # SQLite takes 64-bit integers; 0 means all anyway
EXAMPLES = """examples:
  ktrail query --type exec --since 10m --exe /usr/bin/ssh-keygen
  ktrail query --path '/etc/*' --since 1d --format csv
  ktrail query --addr 203.0.113.7 --since 2026-11-21T00:00Z --until 2026-11-22
  ktrail query --rule '*' --since 1h                  # alerts
  ktrail query "select exe, count(*) n from events where time > ns('1h') group by exe"
tables and views: events, processes, alerts, contexts, event_log, boots (docs/store.md)"""


def add_store_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", metavar="PATH",
                   help=f"the store to read (default: the configuration's store.path, else "
                        f"{DEFAULT_PATH})")


def store_path(args: argparse.Namespace) -> str:
    if args.store:
        return str(args.store)
    try:
        config = load_config(None)
    except ConfigError as e:
        raise CliError(str(e)) from None
    return config.store.path or DEFAULT_PATH


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "query", help="search the audit trail store",
        description="Search the trail `ktrail run` stores, while it runs or after: with "
                    "filters (combined with AND; a repeated filter matches any of its values; "
                    "* and ? are wildcards), or with one read-only SQL statement. Filters "
                    "show the latest --limit matches, oldest first.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sql", nargs="?", help="one read-only SQL statement, instead of filters")
    add_store_option(p)
    p.add_argument("--type", action="append", default=[], metavar="TYPE",
                   help="event type (exec, connect, create...; comma-separated or repeated)")
    p.add_argument("--since", metavar="WHEN",
                   help="from WHEN: a duration back from now (90s, 10m, 1h, 2d) or a "
                        "timestamp (2026-11-21T21:45:00Z, 2026-11-21 21:45, 2026-11-21)")
    p.add_argument("--until", metavar="WHEN", help="up to WHEN (same forms as --since)")
    p.add_argument("--user", action="append", default=[], metavar="NAME|UID",
                   help="user name or uid")
    p.add_argument("--exe", action="append", default=[], metavar="PATH",
                   help="the process's executable")
    p.add_argument("--path", action="append", default=[], metavar="PATH",
                   help="the file an event is about (file events, exec, mount, io_uring)")
    p.add_argument("--addr", action="append", default=[], metavar="ADDR",
                   help="remote address (connect, accept, dns...)")
    p.add_argument("--container", action="append", default=[], metavar="ID",
                   help="container id (12 hex characters)")
    p.add_argument("--exec-id", action="append", default=[], metavar="EXEC_ID",
                   help="one process, by its identity PID:START")
    p.add_argument("--rule", action="append", default=[], metavar="NAME",
                   help="alerts of this rule instead of events ('*' for every alert)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="with filters, the latest N matches (default: 1000; 0: all)")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="table on a terminal, JSON lines otherwise (default: auto); with "
                        "filters, JSON lines are the events as the sensor wrote them")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
                   help="stop a query that runs longer than this; 0 = no limit "
                        f"(default: {DEFAULT_TIMEOUT_S:g})")
    p.set_defaults(func=query)


def _filters(args: argparse.Namespace) -> Filters:
    types = [t.strip() for v in args.type for t in v.split(",") if t.strip()]
    for t in types:
        if t not in CATALOG:
            raise CliError(f"--type: unknown event type {t!r}; known: {', '.join(CATALOG)}")
    f = Filters(types=types, users=args.user, exes=args.exe, paths=args.path,
                addrs=args.addr, containers=args.container, exec_ids=args.exec_id,
                rules=args.rule)
    for name in ("since", "until"):
        text = getattr(args, name)
        if text is not None:
            try:
                setattr(f, name, parse_when(text))
            except TimeSyntaxError as e:
                raise CliError(f"--{name}: {e}") from None
    if f.since is not None and f.until is not None and f.since > f.until:
        raise CliError("--since is after --until")
    for u in args.user:
        if u.isascii() and u.isdigit():
            check_range("--user", int(u), 0, ID_MAX)
    if args.limit is not None:
        if args.limit < 0:
            raise CliError("--limit must be 0 (all) or more")
        check_range("--limit", args.limit, 0, MAX_LIMIT)
        f.limit = args.limit or None
    return f


def _has_filters(args: argparse.Namespace) -> bool:
    return bool(args.type or args.since or args.until or args.user or args.exe or args.path
                or args.addr or args.container or args.exec_id or args.rule
                or args.limit is not None)


def query(args: argparse.Namespace) -> int:
    if args.sql is not None and _has_filters(args):
        raise CliError("give either an SQL statement or filters, not both")
    if args.sql is not None and not args.sql.strip():
        raise CliError("the SQL statement is empty")
    f = None if args.sql is not None else _filters(args)
    if not 0 <= args.timeout < math.inf:
        raise CliError(f"--timeout must be 0 (no limit) or more seconds, not {args.timeout}")
    fmt = args.format
    if fmt == "auto":
        fmt = "table" if sys.stdout.isatty() else "json"
    path = store_path(args)
    try:
        conn = open_reader(path)
    except StoreError as e:
        raise CliError(str(e)) from None
    try:
        guard = prepare(conn, args.timeout or None)
        if f is None:
            names, rows = run_sql(conn, guard, args.sql)
            _print_sql(fmt, names, rows)
            return 0
        sql, params, columns = build(f)
        names, rows = run_sql(conn, guard, sql, params)
        found = list(rows)
        if f.limit is not None and len(found) > f.limit:
            found = found[:f.limit]
            print(f"ktrail: showing the latest {f.limit} matches; --limit N shows more, "
                  "--limit 0 all", file=sys.stderr)
        found.reverse()
        _print_matches(fmt, columns, found, alerts=f.alerts)
        return 0
    except CorruptStore as e:
        raise CliError(f"store {path}: {e}", code=EXIT_ERROR) from None
    except QueryError as e:
        raise CliError(str(e), code=EXIT_ERROR) from None
    finally:
        conn.close()


# ---- output -------------------------------------------------------------------------


def _cell(v: Any) -> Any:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _detail(row: dict[str, Any]) -> str:
    if row.get("path"):
        return str(row["path"])
    if row.get("addr"):
        addr = row["addr"]
        return f"[{addr}]:{row['port']}" if ":" in addr else f"{addr}:{row['port']}"
    return ""


def _print_matches(fmt: str, columns: tuple[str, ...], rows: list[tuple],
                   alerts: bool) -> None:
    out = sys.stdout
    if fmt == "json":
        # The stored JSON: each line as the sensor wrote it.
        for r in rows:
            out.write(r[-1])
            out.write("\n")
        return
    dicts = [dict(zip(columns, r[:-1], strict=True)) for r in rows]
    for d in dicts:
        d["time"] = to_rfc3339(d["time"])
    if fmt == "csv":
        _csv(columns, ([d[c] for c in columns] for d in dicts))
        return
    if alerts:
        shown = ("time", "priority", "rule", "exec_id", "output")
        _table(shown, ([d[c] for c in shown] for d in dicts))
    else:
        shown = ("time", "type", "user", "pid", "exe", "detail", "exec_id")
        _table(shown, ([d["time"], d["type"], d["user"] if d["user"] is not None else d["uid"],
                        d["pid"], d["exe"], _detail(d), d["exec_id"]] for d in dicts))


def _print_sql(fmt: str, names: list[str], rows: Iterator[tuple]) -> None:
    if fmt == "csv":
        _csv(names, ([_cell(v) for v in r] for r in rows))
    elif fmt == "json":
        out = sys.stdout.buffer
        for r in rows:
            obj = {}
            for name, v in zip(names, r, strict=True):
                v = _cell(v)
                # Stored JSON is shown as JSON, not as a string of it.
                if name == "json" and isinstance(v, str) and v[:1] in "{[":
                    v = orjson.Fragment(v)
                obj[name] = v
            out.write(orjson.dumps(obj) + b"\n")
        out.flush()
    else:
        _table(names, ([_cell(v) for v in r] for r in rows))


def _csv(names: Iterable[str], rows: Iterable[list[Any]]) -> None:
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(list(names))
    for r in rows:
        w.writerow(["" if v is None else v for v in r])


def _table(names: Iterable[str], rows: Iterable[list[Any]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    for n in names:
        table.add_column(printable(n), overflow="fold")
    count = 0
    for r in rows:
        # Cells are data others chose (file names, argv): escaped, and plain
        # Text so that "[...]" in a name is not read as rich markup.
        table.add_row(*[Text("" if v is None else printable(str(v))) for v in r])
        count += 1
    console = Console(soft_wrap=False, width=None if sys.stdout.isatty() else 200,
                      highlight=False)
    console.print(table)
    if sys.stdout.isatty():
        console.print(f"[dim]{count} row{'s' if count != 1 else ''}[/dim]")
