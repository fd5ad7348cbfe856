"""`ktrail tree`: a process's ancestry and descendants, with what each did."""

from __future__ import annotations

import argparse
import shlex
import sqlite3
import sys
from typing import Any

import orjson

from ktrail.cli.errors import EXIT_ERROR, CliError, check_range
from ktrail.cli.query import add_store_option, store_path
from ktrail.store import StoreError
from ktrail.store.query import prepare
from ktrail.store.schema import open_reader, read_error
from ktrail.store.tree import Node, Tree, TreeError, build, resolve
from ktrail.strings import printable
from ktrail.units import to_rfc3339

MAX_COUNT = 1_000_000  # --events, --max-nodes: more would not fit on a screen anyway


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tree", help="a process's ancestry and descendants, from the store",
        description="Show where a process came from (its ancestors, up to the oldest the "
                    "store knows) and everything it started, each with its command line, "
                    "user, lifetime and key events: executions, files created, renamed or "
                    "deleted, connections, alerts.")
    p.add_argument("target", metavar="EXEC_ID|PID",
                   help="the process: its exec_id (PID:START, as in proc.exec_id), or a pid "
                        "(the running process with that pid, else the candidates are listed)")
    add_store_option(p)
    p.add_argument("--format", choices=("auto", "text", "json"), default="auto",
                   help="an indented tree (default), or JSON")
    p.add_argument("--events", type=int, default=20, metavar="N",
                   help="key events listed per process; the rest are counted (default: 20)")
    p.add_argument("--max-nodes", type=int, default=500, metavar="N",
                   help="descendants shown at most; the rest are counted (default: 500)")
    p.set_defaults(func=tree)


def tree(args: argparse.Namespace) -> int:
    if args.events < 0 or args.max_nodes < 1:
        raise CliError("--events must be 0 or more and --max-nodes at least 1")
    check_range("--events", args.events, 0, MAX_COUNT)
    check_range("--max-nodes", args.max_nodes, 1, MAX_COUNT)
    path = store_path(args)
    try:
        conn = open_reader(path)
    except StoreError as e:
        raise CliError(str(e)) from None
    try:
        prepare(conn)
        boot, exec_id = resolve(conn, args.target)
        t = build(conn, boot, exec_id, max_nodes=args.max_nodes, max_events=args.events)
    except TreeError as e:
        raise CliError(str(e), code=EXIT_ERROR) from None
    except (sqlite3.Error, orjson.JSONDecodeError) as e:
        # The file opened as a ktrail store, but reading it failed.
        raise CliError(str(read_error(path, e))) from None
    finally:
        conn.close()
    if args.format == "json":
        sys.stdout.buffer.write(orjson.dumps(t.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    render(t)
    return 0


def _label(p: dict[str, Any]) -> str:
    name = p["comm"] or (p["exe"] or "?").rsplit("/", 1)[-1]
    cmd = shlex.join(p["args"]) if p["args"] else (p["exe"] or "")
    return f"{name}({p['pid']}) {cmd}"


def _lifetime(p: dict[str, Any]) -> str:
    start = to_rfc3339(p["start_time"]) or "?"
    if p["end_time"] is None:
        return f"{start} .. running"
    end = to_rfc3339(p["end_time"])
    if p["exit_signal"]:
        how = f"killed by {p['exit_signal']}"
    elif p["exit_code"] is not None:
        how = f"exit {p['exit_code']}"
    else:
        how = "gone (exit not seen)"
    return f"{start} .. {end} {how}"


def render(t: Tree) -> None:
    from rich.console import Console
    from rich.markup import escape as markup
    from rich.tree import Tree as RichTree

    def escape(s: Any) -> str:
        # Data others chose: control characters escaped (ktrail.strings), then
        # "[...]" kept from being read as rich markup.
        return markup(printable(str(s)))

    def head(n: Node, target: bool = False) -> str:
        p = n.proc
        user = p["user"] if p["user"] is not None else p["uid"]
        mark = " [reverse] target [/reverse]" if target else ""
        exe = f" exe={escape(p['exe'])}" if p["exe"] and not (
            p["args"] and p["args"][0] == p["exe"]) else ""
        lines = [f"[bold]{escape(_label(p))}[/bold]{mark}",
                 f"[dim]{escape(p['exec_id'])} user={escape(user)}{exe} "
                 f"{escape(_lifetime(p))}"
                 + (f" container={escape(p['container'])}" if p["container"] else "")
                 + "[/dim]"]
        return "\n".join(lines)

    def body(n: Node) -> list[str]:
        lines = [f"[bold red]ALERT {escape(a['priority'])} {escape(a['rule'])}[/bold red]: "
                 f"{escape(a['output'] or '')}" for a in n.alerts]
        lines += [f"[dim]{escape(e['time'][11:23])}[/dim] {escape(e['summary'])}"
                  for e in n.events]
        if n.more:
            lines.append("[dim]+ " + escape(", ".join(f"{c} {t}" for t, c in n.more.items()))
                         + " more[/dim]")
        return lines

    def add(parent: RichTree, n: Node, target: bool = False) -> None:
        label = head(n, target)
        extra = body(n)
        if extra:
            label += "\n" + "\n".join(extra)
        branch = parent.add(label)
        for c in n.children:
            add(branch, c)

    console = Console(highlight=False, soft_wrap=False,
                      width=None if sys.stdout.isatty() else 200)
    chain = t.ancestors
    if chain:
        top = RichTree(head(chain[0]), guide_style="dim")
        cur = top
        for a in chain[1:]:
            cur = cur.add(head(a))
        add(cur, t.root, target=True)
    else:
        label = head(t.root, target=True)
        extra = body(t.root)
        if extra:
            label += "\n" + "\n".join(extra)
        top = RichTree(label, guide_style="dim")
        for c in t.root.children:
            add(top, c)
    console.print(top)
    if t.omitted:
        console.print(f"[dim]{t.omitted} more descendants not shown (--max-nodes)[/dim]")
