"""A process's ancestry and descendants from the store, with what each did.

Processes are identified by (boot, exec_id): exec_ids restart with every
boot. A pid names a process only with its start time, so resolving one may
find several candidates (pid reuse); the live one in the running boot wins,
otherwise the caller gets the list.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Any

import orjson

from ktrail.events.registry import summary
from ktrail.units import PID_MAX_LIMIT, to_rfc3339

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
# Shown by the tree's shape, not as events.
STRUCTURAL = ("fork", "exit")
MAX_ANCESTORS = 64

_PROC_COLUMNS = ("boot", "exec_id", "pid", "parent_exec_id", "start_time", "end_time",
                 "exit_code", "exit_signal", "exe", "args", "comm", "cwd", "uid", "user",
                 "container", "source")


class TreeError(ValueError):
    """The target cannot be resolved; the message says why and what to try."""


@dataclass
class Node:
    proc: dict[str, Any]
    events: list[dict[str, Any]] = field(default_factory=list)
    more: dict[str, int] = field(default_factory=dict)   # events not listed, by type
    alerts: list[dict[str, Any]] = field(default_factory=list)
    children: list[Node] = field(default_factory=list)

    @property
    def exec_id(self) -> str:
        return self.proc["exec_id"]

    def to_json(self) -> dict[str, Any]:
        out = dict(self.proc)
        out["start_time"] = to_rfc3339(self.proc["start_time"])
        out["end_time"] = to_rfc3339(self.proc["end_time"])
        out["events"] = self.events
        out["more_events"] = self.more
        out["alerts"] = self.alerts
        out["children"] = [c.to_json() for c in self.children]
        return out


@dataclass
class Tree:
    boot_id: str
    ancestors: list[Node]        # root first, the target's parent last
    root: Node                   # the target, with its descendants
    omitted: int = 0             # descendants beyond max_nodes

    def to_json(self) -> dict[str, Any]:
        return {"boot_id": self.boot_id, "target": self.root.exec_id,
                "ancestors": [a.to_json() for a in self.ancestors],
                "tree": self.root.to_json(), "omitted_descendants": self.omitted}


def current_boot_id() -> str | None:
    try:
        with open(BOOT_ID_PATH) as f:
            return f.read().strip()
    except OSError:
        return None


def _proc(row: tuple) -> dict[str, Any]:
    p = dict(zip(_PROC_COLUMNS, row, strict=True))
    p["args"] = orjson.loads(p["args"]) if p["args"] else []
    return p


def _select(where: str) -> str:
    return f"SELECT {', '.join(_PROC_COLUMNS)} FROM processes WHERE {where}"


def resolve(conn: sqlite3.Connection, target: str) -> tuple[int, str]:
    """EXEC_ID or PID -> (boot, exec_id). TreeError when unknown or ambiguous."""
    boots = dict(conn.execute("SELECT boot_id, id FROM boots"))
    here = boots.get(current_boot_id() or "")
    t = target.strip()
    if ":" in t:
        rows = conn.execute(_select("exec_id = ? ORDER BY boot DESC"), (t,)).fetchall()
        if not rows:
            raise TreeError(f"no process {t} in the store")
        mine = [r for r in rows if r[0] == here]
        return (mine or rows)[0][0], t  # this boot's, else the latest boot's
    if not (t.isascii() and t.isdigit()):
        raise TreeError(f"{target!r} is neither an exec_id (PID:START, as in proc.exec_id) "
                        "nor a pid")
    if not 0 < int(t) <= PID_MAX_LIMIT:
        raise TreeError(f"pid {t} is out of range (Linux pids are 1 to {PID_MAX_LIMIT})")
    rows = conn.execute(_select("pid = ? ORDER BY boot DESC, start_time DESC"),
                        (int(t),)).fetchall()
    if not rows:
        raise TreeError(f"no process with pid {t} in the store")
    live = [r for r in rows if r[0] == here and r[5] is None]
    if live:
        return live[0][0], live[0][1]
    if len(rows) == 1:
        return rows[0][0], rows[0][1]
    lines = []
    for r in rows[:20]:
        p = _proc(r)
        lines.append(f"  {p['exec_id']}  {to_rfc3339(p['start_time']) or '?'} .. "
                     f"{to_rfc3339(p['end_time']) or 'running'}  {p['exe'] or p['comm']}"
                     + ("" if r[0] == here else "  (an earlier boot)"))
    more = f"\n  ... and {len(rows) - 20} more" if len(rows) > 20 else ""
    raise TreeError(f"pid {t} was {len(rows)} different processes (pids are reused) and none "
                    "of them is running; name one by its exec_id:\n" + "\n".join(lines) + more)


def summarise(e: dict[str, Any]) -> str:
    """One line for an event, as an investigator reads it."""
    return f"{e['evt']['type']} {summary(e)}".rstrip()


def _fill(conn: sqlite3.Connection, node: Node, boot: int, max_events: int) -> None:
    exec_id = node.exec_id
    counts = dict(conn.execute(
        "SELECT type, count(*) FROM events WHERE exec_id = ? AND boot = ? GROUP BY type",
        (exec_id, boot)))
    rows = conn.execute(
        "SELECT time, type, json FROM events WHERE exec_id = ? AND boot = ? AND type NOT IN "
        f"({', '.join('?' * len(STRUCTURAL))}) ORDER BY time, id LIMIT ?",
        (exec_id, boot, *STRUCTURAL, max_events)).fetchall()
    for time_ns, etype, js in rows:
        node.events.append({"time": to_rfc3339(time_ns), "type": etype,
                            "summary": summarise(orjson.loads(js))})
        counts[etype] -= 1
    node.more = {t: n for t, n in sorted(counts.items()) if n and t not in STRUCTURAL}
    start, end = node.proc["start_time"], node.proc["end_time"]
    # Alerts carry no boot: bound them by the process's lifetime.
    for time_ns, rule, priority, output in conn.execute(
            "SELECT time, rule, priority, output FROM alerts WHERE exec_id = ? AND time >= ? "
            "AND time <= ? ORDER BY time", (exec_id, (start or 0) - 10**9,
                                            end if end is not None else 2**62)):
        node.alerts.append({"time": to_rfc3339(time_ns), "rule": rule, "priority": priority,
                            "output": output})


def build(conn: sqlite3.Connection, boot: int, exec_id: str, max_nodes: int = 500,
          max_events: int = 20) -> Tree:
    row = conn.execute(_select("boot = ? AND exec_id = ?"), (boot, exec_id)).fetchone()
    if row is None:
        raise TreeError(f"no process {exec_id} in the store")
    boot_id = conn.execute("SELECT boot_id FROM boots WHERE id = ?", (boot,)).fetchone()[0]
    root = Node(_proc(row))
    ancestors: list[Node] = []
    parent = root.proc["parent_exec_id"]
    seen = {exec_id}
    while parent and parent not in seen and len(ancestors) < MAX_ANCESTORS:
        seen.add(parent)
        r = conn.execute(_select("boot = ? AND exec_id = ?"), (boot, parent)).fetchone()
        if r is None:
            break  # the root known to the store
        ancestors.append(Node(_proc(r)))
        parent = ancestors[-1].proc["parent_exec_id"]
    ancestors.reverse()
    # Descendants, breadth first, up to max_nodes.
    count, omitted = 1, 0
    level = [root]
    while level:
        by_id = {n.exec_id: n for n in level}
        ids = list(by_id)
        nxt: list[Node] = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            for r in conn.execute(
                    _select(f"boot = ? AND parent_exec_id IN ({', '.join('?' * len(chunk))}) "
                            "ORDER BY start_time, pid"), (boot, *chunk)):
                p = _proc(r)
                if p["exec_id"] in seen:
                    continue
                if count >= max_nodes:
                    omitted += 1
                    continue
                seen.add(p["exec_id"])
                child = Node(p)
                by_id[p["parent_exec_id"]].children.append(child)
                nxt.append(child)
                count += 1
        level = nxt
    stack = [root]
    while stack:
        n = stack.pop()
        _fill(conn, n, boot, max_events)
        stack.extend(n.children)
    return Tree(boot_id, ancestors, root, omitted)
