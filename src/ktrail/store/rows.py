"""Event dicts -> table rows: `event_log` and `contexts`, the upserts that
keep `processes` at one row per process, and `alerts`.

This runs in the store's writer thread for every event, so the common path
is plain dict lookups and one bytes search per event: the event's JSON (the
output's own encoding when it has one) is cut in two around its context
fragment, which is written once per context.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from ktrail.events.registry import KINDS
from ktrail.memory import compacted
from ktrail.output.formats import dumps
from ktrail.process import Process
from ktrail.strings import text
from ktrail.units import NS_PER_TICK, Rfc3339Parser

Event = dict[str, Any]

# json is TEXT (so json_extract() works on it); CAST reinterprets orjson's
# UTF-8 bytes in SQLite instead of decoding them in Python.
INSERT_EVENT = (
    "INSERT INTO event_log (time, type, ctx, path, addr, port, json, ctx_at) "
    "VALUES (?, ?, ?, ?, ?, ?, CAST(? AS TEXT), ?)"
)
INSERT_CONTEXT = (
    "INSERT INTO contexts (id, boot, exec_id, pid, exe, uid, user, container, time, fragment) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, CAST(? AS TEXT))"
)
INSERT_ALERT = (
    "INSERT INTO alerts (time, rule, priority, tags, exec_id, output, json) "
    "VALUES (?, ?, ?, ?, ?, ?, CAST(? AS TEXT))"
)
# proc fields of each event's own; every other proc field is the context's.
# (`comm_b64`: the exact bytes of a comm that is not UTF-8, ktrail.strings.)
PER_EVENT = ("pid", "tid", "ppid", "comm", "comm_b64", "uid", "gid")

_PROC_COLUMNS = ("boot, exec_id, pid, parent_exec_id, start_time, exe, args, comm, cwd, uid, "
                 "user, container, source")
_PROC_VALUES = "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
_FILL = ", ".join(f"{c} = coalesce(processes.{c}, excluded.{c})" for c in (
    "parent_exec_id", "start_time", "exe", "args", "comm", "cwd", "uid", "user", "container"))
# First sighting (any event, a fork's child, a /proc seed): fill what is
# unknown, never overwrite what an exec already said.
UPSERT_SEEN = (f"INSERT INTO processes ({_PROC_COLUMNS}) VALUES ({_PROC_VALUES}) "
               f"ON CONFLICT (boot, exec_id) DO UPDATE SET {_FILL}")
# A successful exec: a new image for the same process.
UPSERT_EXEC = (
    f"INSERT INTO processes ({_PROC_COLUMNS}) VALUES ({_PROC_VALUES}) "
    "ON CONFLICT (boot, exec_id) DO UPDATE SET exe = excluded.exe, args = excluded.args, "
    "comm = excluded.comm, cwd = excluded.cwd, uid = excluded.uid, user = excluded.user, "
    "container = excluded.container, source = excluded.source, "
    "start_time = coalesce(excluded.start_time, processes.start_time), "
    "parent_exec_id = coalesce(processes.parent_exec_id, excluded.parent_exec_id)"
)
UPSERT_EXIT = (
    f"INSERT INTO processes ({_PROC_COLUMNS}, end_time, exit_code, exit_signal) "
    f"VALUES ({_PROC_VALUES}, ?, ?, ?) "
    "ON CONFLICT (boot, exec_id) DO UPDATE SET end_time = excluded.end_time, "
    "exit_code = excluded.exit_code, exit_signal = excluded.exit_signal"
)

# Where each type keeps its main path (the `path` column): (object, key).
_PATH_OF: dict[str, tuple[str, str]] = {
    k.name: (obj, key) for k in KINDS if k.path for obj, key in [k.path.split(".", 1)]
}


def _dumps_list(v: list[str] | None) -> str | None:
    return None if v is None else orjson.dumps(v).decode()


# Types whose rows need the whole process context (process rows).
_LIFECYCLE = frozenset({"exec", "fork", "exit"})


def _columns(e: Event, t: str) -> tuple[Any, Any, Any]:
    """The event's path, remote address and port columns."""
    where = _PATH_OF.get(t)
    obj = e.get(where[0]) if where else None
    n = e.get("net")
    return (obj.get(where[1]) if obj else None, n.get("daddr") if n is not None else None,
            n.get("dport") if n is not None else None)


def _cut(blob: bytes, i: int, fragment: bytes) -> tuple[bytes, int]:
    """The JSON without the context fragment at `i` (and the comma before it),
    and where it was, in characters as SQLite's substr() counts them."""
    at = i - 1
    slim = blob[:at] + blob[i + len(fragment):]
    if not blob.isascii():
        at = len(blob[:at].decode("utf-8", "replace"))
    return slim, at


def _holds(blob: bytes, at: int, fragment: bytes) -> bool:
    """The event's JSON has exactly this context fragment at `at`, closing proc."""
    end = at + len(fragment)
    return at > 0 and blob.startswith(fragment, at) and blob[end:end + 1] == b"}"


class _Context:
    __slots__ = ("anchor", "container", "fragment", "id", "uid", "user")

    def __init__(self, ctx_id: int, anchor: object, uid: int, user: str | None,
                 container: str | None, fragment: bytes) -> None:
        self.id = ctx_id
        self.anchor = anchor
        self.uid = uid
        self.user = user
        self.container = container
        self.fragment = fragment


class RowBuilder:
    """Turns batches of events into rows. Remembers the current context of
    each process and which processes it has written a row for (both bounded;
    forgetting only costs a redundant context row or upsert)."""

    def __init__(self, boot: int, next_ctx_id: int = 1, max_entries: int = 65536) -> None:
        self.boot = boot
        self.parse_time = Rfc3339Parser()
        self.max_entries = max_entries
        self.next_ctx_id = next_ctx_id
        self.contexts: dict[str | None, _Context] = {}
        self.seen: dict[str, None] = {}

    def compact(self) -> None:
        """Gives back the room of entries deleted on exit (after a burst of
        short-lived processes the maps are mostly empty slots)."""
        if (c := compacted(self.contexts)) is not None:
            self.contexts = c
        if (s := compacted(self.seen)) is not None:
            self.seen = s

    def forget(self) -> None:
        """After a failed transaction: nothing it meant to write is there."""
        self.seen.clear()
        self.contexts.clear()

    def _context(self, p: dict[str, Any], uid: int, user: str | None, container: str | None,
                 time_ns: int, new: list[tuple], anchor: object) -> _Context:
        fragment = dumps({k: v for k, v in p.items() if k not in PER_EVENT})[1:-1]
        exec_id = p.get("exec_id")
        old = self.contexts.get(exec_id)
        if (old is not None and old.fragment == fragment and old.uid == uid
                and old.user == user and old.container == container):
            old.anchor = anchor  # same values, another object
            return old
        ctx = _Context(self.next_ctx_id, anchor, uid, user, container, fragment)
        self.next_ctx_id += 1
        self.contexts[exec_id] = ctx
        new.append((ctx.id, self.boot, exec_id, p["pid"], p.get("exe"), uid, user, container,
                    time_ns, fragment))
        return ctx

    def _proc_row(self, p: dict[str, Any], user: dict[str, Any] | None,
                  container: dict[str, Any] | None) -> tuple:
        parent = p.get("parent")
        start = p.get("start_time")
        return (
            self.boot, p["exec_id"], p["pid"], parent["exec_id"] if parent else None,
            self._time_ns(start) if start else None, p.get("exe"),
            _dumps_list(p.get("args")), p.get("comm"), p.get("cwd"),
            p.get("uid"), user.get("name") if user else None,
            container["id"] if container else None, p.get("source"),
        )

    def events(self, events: list[Event], lines: bytes | None = None, decoded: bool = False
               ) -> tuple[list[tuple], ...]:
        """-> (event rows, new context rows, first-seen process rows, exec rows,
        exit rows). `lines` are the events' JSON lines, one per event, when
        the output already encoded them; otherwise each is encoded here.
        `decoded`: the events were decoded from `lines` for this call alone."""
        rows: list[tuple] = []
        append = rows.append
        new_contexts: list[tuple] = []
        seen_rows: list[tuple] = []
        exec_rows: list[tuple] = []
        exit_rows: list[tuple] = []
        contexts = self.contexts
        seen = self.seen
        time_ns_of = self._time_ns
        # orjson's results take ~8 KiB of memory each whatever their length:
        # made one at a time (or split from one buffer), none is kept.
        blobs = lines.split(b"\n", len(events))[:len(events)] if lines is not None else None
        for k, e in enumerate(events):
            blob = blobs[k] if blobs is not None else dumps(e)
            evt = e["evt"]
            t = evt["type"]
            p = e["proc"]
            u = e["user"]
            c = e["container"]
            path, addr, port = _columns(e, t)
            exec_id = p["exec_id"]
            time_ns = time_ns_of(evt["time"])
            uid = u["uid"]
            uname = u["name"]
            cid = c["id"] if c else None
            # The context's fragment starts at proc's first "exec_id" key, the
            # first in the text (evt has none; a key's quotes cannot occur
            # inside a string), and ends where proc does.
            i = blob.find(b'"exec_id":')
            ctx = contexts.get(exec_id)
            # The sensor's own events share one ancestors list per context: the
            # same object means the same context. A decoded event's never
            # comes again, and holding it would pin a whole decoded tree per
            # process (~100 MB after a burst): no anchor, the text is compared.
            anchor = None if decoded else p.get("ancestors")
            if (ctx is None or ctx.uid != uid or ctx.user != uname or ctx.container != cid
                    or ((anchor is None or ctx.anchor is not anchor)
                        and not _holds(blob, i, ctx.fragment))):
                ctx = self._context(p, uid, uname, cid, time_ns, new_contexts, anchor)
            else:
                ctx.anchor = anchor  # decoded events: same text, another object
            # Cut the context's fragment (and the comma before it) out of the JSON.
            frag = ctx.fragment
            if i > 0 and blob[i - 1] == 44 and frag and blob.startswith(frag, i):  # ','
                append((time_ns, t, ctx.id, path, addr, port, *_cut(blob, i, frag)))
            else:
                append((time_ns, t, ctx.id, path, addr, port, blob, None))
            if t == "exec" and e["exec"]["retval"] == 0:
                exec_rows.append(self._proc_row(p, u, c))
                seen[exec_id] = None
            elif t == "fork":
                child = e["fork"]["child"]
                if not e["fork"]["thread"] and child["exec_id"] not in seen:
                    # Until it execs, a child runs its parent's image.
                    seen_rows.append((
                        self.boot, child["exec_id"], child["pid"], exec_id, time_ns, p["exe"],
                        _dumps_list(p["args"]), p["comm"], p.get("cwd"), p["uid"], uname,
                        cid, "fork"))
                    seen[child["exec_id"]] = None
            elif t == "exit":
                x = e["exit"]
                exit_rows.append((*self._proc_row(p, u, c), time_ns, x["code"], x["signal"]))
                # It will not be seen again: a late event costs one more context row.
                seen.pop(exec_id, None)
                contexts.pop(exec_id, None)
                continue
            if exec_id not in seen and p["pid"]:
                seen_rows.append(self._proc_row(p, u, c))
                seen[exec_id] = None
        if len(seen) > self.max_entries:
            seen.clear()
        if len(contexts) > self.max_entries:
            contexts.clear()
        return rows, new_contexts, seen_rows, exec_rows, exit_rows

    def lines(self, lines: bytes, n: int) -> tuple[list[tuple], ...]:
        """As events(), from JSON lines alone (the store process's case).

        An event of a known process whose context is unchanged is decoded
        without its context: the fragment is cut out of the text first, which
        is most of it. Others (first sightings, exec, fork, exit, a changed
        context) are decoded whole and go through events()."""
        out: tuple[list[tuple], ...] = ([], [], [], [], [])
        rows = out[0]
        loads = orjson.loads
        contexts = self.contexts
        seen = self.seen
        for blob in lines.split(b"\n", n)[:n]:
            row = None
            if blob.startswith(b'{"evt":{"type":"'):
                t = blob[16:blob.find(b'"', 16)].decode()
                i = blob.find(b'"exec_id":"')
                if t not in _LIFECYCLE and i > 0 and blob[i - 1] == 44:  # ','
                    exec_id = blob[i + 11:blob.find(b'"', i + 11)].decode()
                    ctx = contexts.get(exec_id)
                    if ctx is not None and exec_id in seen and _holds(blob, i, ctx.fragment):
                        slim, at = _cut(blob, i, ctx.fragment)
                        e = loads(slim)
                        u, c = e["user"], e["container"]
                        if (ctx.uid == u["uid"] and ctx.user == u["name"]
                                and ctx.container == (c["id"] if c else None)):
                            row = (self._time_ns(e["evt"]["time"]), t, ctx.id,
                                   *_columns(e, t), slim, at)
            if row is not None:
                rows.append(row)
                continue
            theirs = self.events([loads(blob)], blob, decoded=True)
            for mine, part in zip(out, theirs, strict=True):
                mine += part
        return out

    def _time_ns(self, tm: int | str) -> int:
        # An event made in this process carries a Time (an int). From JSON,
        # RFC 3339 with ns, as the sensor writes it: the parser's per-second
        # cache, consulted inline; anything else goes through the parser.
        if type(tm) is not str:
            return int(tm)
        sec = self.parse_time.seconds.get(tm[:19])
        return sec + int(tm[20:29]) if sec is not None and len(tm) == 30 else self.parse_time(tm)

    def alerts(self, alerts: Iterable[Event], now_ns: int) -> list[tuple]:
        out = []
        for a in alerts:
            body = a["alert"]
            t = a["evt"].get("time")
            p = a.get("proc") or {}
            tags = body.get("tags")
            out.append((self._time_ns(t) if t else now_ns, body["rule"], body.get("priority"),
                        None if tags is None else orjson.dumps(tags).decode(),
                        p.get("exec_id"), body.get("output"), dumps(a)))
        return out


def seed_rows(procs: Iterable[Process], boot: int, booted_ns: int) -> list[tuple]:
    """Rows for the processes found in /proc at start (UPSERT_SEEN). The
    table's strings keep undecodable bytes (ktrail.strings); SQLite takes
    valid text only, so those become U+FFFD here."""
    out = []
    for p in procs:
        start = booted_ns + p.start_ticks * NS_PER_TICK
        out.append((boot, p.exec_id, p.pid, p.parent_exec_id, start, text(p.exe) or None,
                    orjson.dumps([text(a) for a in p.args]).decode(), text(p.comm),
                    text(p.cwd) if p.cwd else None,
                    p.uid if p.uid >= 0 else None, p.user,
                    p.container_id[:12] if p.container_id else None, p.source))
    return out
