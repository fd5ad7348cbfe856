"""Decoded records + process table -> events.

An event is a nested dict whose dotted paths are the field names rules use
(``proc.exec_id``, ``evt.type``...). docs/events.md documents every field.
This is the one place that updates the process table from kernel events, in
ring order, so a child's exec is always applied after its parent's fork.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict
from pathlib import PurePosixPath
from typing import Any

from ktrail.decode.decoder import Batch
from ktrail.decode.schema import EXEC, EXIT, FORK, SYS, ExecFlags, ForkFlags
from ktrail.events import model
from ktrail.events.kernel import uring_effect
from ktrail.events.model import Objects, SysFlags
from ktrail.events.registry import KINDS, SYSCALL_NAMES, EventType
from ktrail.events.values import errno_name, signal_name
from ktrail.loader.watch import DEFAULT_WATCH
from ktrail.memory import compacted
from ktrail.process import Process, ProcessTable, make_exec_id
from ktrail.strings import B64, COUNTS, b64, exact, for_json
from ktrail.strings import text as valid_text
from ktrail.units import Clock, ticks

Event = dict[str, Any]

# Tuple positions of each dtype's fields (records are handled as tuples from
# ndarray.tolist(), far cheaper than numpy scalar access per field).
_H = {n: i for i, n in enumerate(EXEC.names)}  # header fields share positions
_X = _H
_F = {n: i for i, n in enumerate(FORK.names)}
_E = {n: i for i, n in enumerate(EXIT.names)}
_S = {n: i for i, n in enumerate(SYS.names)}
S_RETVAL, S_SYSCALL, S_FLAGS = (_S[k] for k in ("retval", "syscall", "flags_sys"))
TYPE, TS, SEQ, START, CPU, PID, TID, PPID, UID, GID, COMM = (
    _H[k] for k in ("type", "ts_ns", "seq", "start_ns", "cpu", "pid", "tid", "ppid", "uid",
                    "gid", "comm")
)

EVENT_NAMES = {k.id: k.name for k in KINDS}
# Types whose object names another process, looked up when the event is made.
_TARGETED = frozenset({"kill", "ptrace", "process_vm"})
_PROC_MEM = int(model.SysFlags.PROC_MEM)
# Syscall-backed types: how their records decode.
DECODINGS: dict[int, tuple[str, model.Decoding]] = {
    k.id: (k.name, k.decoding) for k in KINDS if k.decoding is not None}
# Plain ints: IntFlag arithmetic is slow enough to show per event.
_ARGS_TRUNCATED = int(ExecFlags.ARGS_TRUNCATED)
_KERNEL_SPAWNED = int(ExecFlags.KERNEL_SPAWNED)
_FILENAME_TRUNCATED = int(ExecFlags.FILENAME_TRUNCATED)
_THREAD = int(ForkFlags.THREAD)
_SQPOLL = int(SysFlags.SQPOLL)
# What a record whose parts contradict each other (a string slot of another
# kind than its type's decoding reads, a bad length) raises while it is made
# into an event: such a record is counted as malformed and skipped, never
# allowed to stop the sensor. Any other exception is a bug and propagates.
_MALFORMED = (TypeError, ValueError, KeyError, IndexError, AttributeError, struct.error,
              OverflowError)


_s = model.text


_COMMS: dict[bytes, str] = {}


def _cstr(b: bytes) -> str:
    """A fixed-size C string field (comm): stop at the first NUL (bytes after it
    are stale). Cached: a host has few distinct comms, each seen per event.
    Lossless (ktrail.strings): the process table keeps the exact bytes."""
    s = _COMMS.get(b)
    if s is None:
        if len(_COMMS) >= 4096:  # bounded; refilled from the next events
            _COMMS.clear()
        s = _COMMS[b] = _s(b.split(b"\0", 1)[0])
    return s


def split_args(raw: bytes) -> list[str]:
    """NUL-separated argv -> list; a cut last argument is kept as it is."""
    if not raw:
        return []
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return [_s(a) for a in raw.split(b"\0")]


def decode_status(status: int) -> dict[str, Any]:
    """Wait status -> {code, signal, core_dumped}, as a shell would tell it."""
    sig = status & 0x7F
    if sig:
        return {"code": None, "signal": signal_name(sig), "signo": sig,
                "core_dumped": bool(status & 0x80), "status": status}
    return {"code": (status >> 8) & 0xFF, "signal": None, "signo": 0,
            "core_dumped": False, "status": status}


class PathWatch:
    """Whether a path is watched, by its text: the watch patterns (files, or
    directories and everything below), as the kernel's inode set holds them.

    For io_uring opens, recorded at submission, before the kernel has looked
    the path up: there is no inode yet to check. Compared lexically, so a
    symlink to a watched file or a `..` in the path is not recognised.
    """

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self.patterns = patterns

    def __call__(self, path: str) -> bool:
        p = PurePosixPath("/" + path.lstrip("/"))  # "//" and "/./" mean nothing
        return any(q.match(pat) for q in (p, *p.parents) for pat in self.patterns)


class _Context:
    """What every event of one process image repeats, and the last `proc`
    object made from it with the per-event fields that made it."""

    __slots__ = ("container", "fields", "key", "proc")

    def __init__(self, fields: dict[str, Any], container: dict[str, Any] | None) -> None:
        self.fields = fields
        self.container = container
        self.key: tuple | None = None
        self.proc: dict[str, Any] = {}


class Enricher:
    def __init__(self, table: ProcessTable, clock: Clock, usermode_helpers: bool = True,
                 exec_events: bool = True, max_contexts: int = 16384,
                 watch: tuple[str, ...] = DEFAULT_WATCH) -> None:
        self.table = table
        self.watched = PathWatch(watch)
        self.clock = clock
        # usermode_helper events are derived from exec records, which then
        # arrive even when exec itself is not selected.
        self.usermode_helpers = usermode_helpers
        self.exec_events = exec_events
        self.counts: dict[str, int] = {name: 0 for name in EVENT_NAMES.values()}
        # Event contexts of recently active processes, by exec_id. Bounded:
        # a context is ~2 KB, and most of a busy host's processes are idle,
        # so keeping one per tracked process would triple the table's memory.
        self._contexts: OrderedDict[str, _Context] = OrderedDict()
        self._users: dict[int, dict[str, Any]] = {}  # uid -> the `user` object, shared
        self.max_contexts = max_contexts
        self.context_evictions = 0
        self.malformed = 0  # records refused (see _MALFORMED): stats.reader.refused
        self._memo: dict[tuple, Objects] = {}  # one batch's decoded syscall objects
        # The sensor's own processes (itself, ktrail-store): a kill or ptrace
        # aimed at them is tamper, which a rule cannot tell from a pid alone.
        self.own_pids: frozenset[int] = frozenset({os.getpid()})

    def process(self, batch: Batch) -> list[Event]:
        if not len(batch):
            return []
        recs = {t: arr.tolist() for t, arr in batch.records.items()}
        # kt_sys_event's array members, as lists for the whole batch at once
        # (one numpy call per batch, not three per record).
        arrays = {t: (arr["args"].tolist(), arr["str_len"].tolist(), arr["str_kind"].tolist())
                  for t, arr in batch.records.items() if t in DECODINGS}
        out: list[Event] = []
        append = out.append
        tails = batch.tails
        decodings = DECODINGS
        # A flood is one process repeating one call: within a batch, records
        # with the same arguments and strings decode to the same objects,
        # which are then shared (events are read-only after this stage).
        self._memo.clear()
        for t, i in zip(batch.types.tolist(), batch.index.tolist(), strict=True):
            r = recs[t][i]
            try:
                if t in decodings:
                    args, lens, kinds = arrays[t]
                    append(self._sys(decodings[t], r, tails[t][i], args[i], lens[i],
                                     kinds[i]))
                elif t == EventType.EXEC:
                    ev = self._exec(r, tails[t][i])
                    if self.exec_events:
                        append(ev)
                    if ev["exec"]["kernel_spawned"] and self.usermode_helpers:
                        append(self._usermode_helper(ev))
                elif t == EventType.FORK:
                    append(self._fork(r))
                elif t == EventType.EXIT:
                    append(self._exit(r))
            except _MALFORMED:
                self.malformed += 1
        self.count(out)
        return out

    # --- per type ---

    def _actor(self, r: tuple) -> Process:
        return self.table.resolve(r[PID], ticks(r[START]), r[PPID], r[UID], r[GID], _cstr(r[COMM]))

    def _exec(self, r: tuple, data: bytes) -> Event:
        args_len = r[_X["args_len"]]
        flags = r[_X["flags_exec"]]
        args = split_args(data[:args_len])
        filename = _s(data[args_len:].split(b"\0", 1)[0])
        retval = r[_X["retval"]]
        truncated = bool(flags & _ARGS_TRUNCATED)
        if retval == 0:
            proc = self.table.on_exec(
                r[PID], ticks(r[START]), r[PPID], r[UID], r[GID], _cstr(r[COMM]),
                filename, args, truncated, r[TS],
            )
            self._contexts.pop(proc.exec_id, None)  # a new image: exe, args, cwd changed
        else:
            proc = self._actor(r)
        exec_: dict[str, Any] = {
            "filename": filename,
            "args": args,
            "argc": r[_X["argc"]],
            "args_truncated": truncated,
            "filename_truncated": bool(flags & _FILENAME_TRUNCATED),
            "retval": retval,
            "error": errno_name(-retval) if retval < 0 else None,
        }
        exec_["kernel_spawned"] = bool(flags & _KERNEL_SPAWNED)
        ev = self._base("exec", r, proc)
        # Strings not UTF-8: U+FFFD in the text, the exact bytes in `_b64` siblings.
        ev["exec"] = for_json(exec_) if COUNTS.undecodable else exec_
        auid = r[_X["auid"]]
        # Its own user object: the shared one has no effective ids.
        ev["user"] = {**ev["user"], "euid": r[_X["euid"]], "egid": r[_X["egid"]],
                      "auid": None if auid == 0xFFFFFFFF else auid}
        return ev

    def _fork(self, r: tuple) -> Event:
        parent = self._actor(r)
        thread = bool(r[_F["flags_fork"]] & _THREAD)
        child_pid, child_start = r[_F["child_pid"]], ticks(r[_F["child_start_ns"]])
        if not thread:
            child = self.table.on_fork(r[PID], ticks(r[START]), child_pid, child_start, r[TS])
            child.start_ns = r[_F["child_start_ns"]]
        ev = self._base("fork", r, parent)
        ev["fork"] = {
            "child": {
                "pid": child_pid,
                "tid": r[_F["child_tid"]],
                "exec_id": make_exec_id(child_pid, child_start),
            },
            "thread": thread,
        }
        return ev

    def _exit(self, r: tuple) -> Event:
        status = r[_E["exit_code"]]
        proc = self.table.on_exit(r[PID], ticks(r[START]), status, r[TS])
        if proc is None:
            proc = self._actor(r)
            self.table.on_exit(r[PID], ticks(r[START]), status, r[TS])
        ev = self._base("exit", r, proc)
        st = decode_status(status)
        # Null when the record's times contradict each other (never from a sane kernel).
        st["duration_ns"] = r[TS] - r[START] if r[TS] >= r[START] else None
        ev["exit"] = st
        return ev

    def _usermode_helper(self, exec_ev: Event) -> Event:
        ev = {k: v for k, v in exec_ev.items() if k != "exec"}
        ev["evt"] = {**exec_ev["evt"], "type": "usermode_helper"}
        x = exec_ev["exec"]
        helper = ev["usermode_helper"] = {"exe": x["filename"], "args": x["args"]}
        for mine, theirs in (("exe", "filename"), ("args", "args")):
            if theirs + B64 in x:
                helper[mine + B64] = x[theirs + B64]
        return ev

    def _target(self, obj: dict[str, Any]) -> None:
        """Names the process a kill or ptrace aims at, from the process table."""
        target = obj["target"]
        p = self.table.get_by_pid(target["pid"]) if target.get("pid") else None
        target["exec_id"] = p.exec_id if p else None
        target["exe"] = p.exe if p else None
        target["comm"] = p.comm if p else None
        target["is_ktrail"] = target.get("pid") in self.own_pids

    def _mem_target(self, target: dict[str, Any], pid: int) -> None:
        """Names the process of a /proc/PID/mem open: the kernel gave its
        exact identity (tgid and start), the table its program."""
        start_ns = target.pop("start_ns")
        exec_id = make_exec_id(target["pid"], ticks(start_ns)) if target["pid"] else None
        p = self.table.get_by_exec_id(exec_id) if exec_id else None
        target["exec_id"] = exec_id
        target["exe"] = p.exe if p else None
        target["comm"] = p.comm if p else None
        target["self"] = target["pid"] == pid

    def _sys(self, decoding: tuple[str, model.Decoding], r: tuple, tail: bytes,
             args: list[int], lens: list[int], kinds: list[int]) -> Event:
        name, how = decoding
        flags = r[S_FLAGS]
        uring = name == "io_uring"
        if uring:
            # Submitted by io_uring_enter, or by the ring's kernel thread (no
            # syscall at all).
            syscall: str | None = None if flags & _SQPOLL else "io_uring_enter"
        else:
            syscall = SYSCALL_NAMES.get(r[S_SYSCALL], str(r[S_SYSCALL]))
        if name in _TARGETED or flags & _PROC_MEM:
            # Named from the process table: not shared between events.
            objs = model.decode(how, args, model.slots(tail, lens, kinds, flags), flags, syscall)
            if flags & _PROC_MEM:
                self._mem_target(objs[how.obj]["mem_target"], r[PID])
            else:
                self._target(objs[name])
            if COUNTS.undecodable:
                objs = for_json(objs)
        else:
            key = (name, syscall, flags, tail, *args, *lens, *kinds)
            memo = self._memo.get(key)
            if memo is None:
                seen = COUNTS.undecodable
                objs = model.decode(how, args, model.slots(tail, lens, kinds, flags), flags,
                                    syscall)
                if COUNTS.undecodable != seen:  # a string was not UTF-8: made JSON-safe
                    objs = for_json(objs)
                if uring:
                    objs["io_uring"]["sqpoll"] = syscall is None
                    memo = uring_effect(objs, self.watched)
                else:
                    memo = (name, objs)
                self._memo[key] = memo
            name, objs = memo
        ev = self._base(name, r, self._actor(r))
        evt = ev["evt"]
        evt["syscall"] = syscall
        if uring:
            # Recorded at submission: the result is not known yet.
            evt["retval"] = evt["error"] = None
        else:
            retval = r[S_RETVAL]
            evt["retval"] = retval
            evt["error"] = errno_name(-retval) if retval < 0 else None
        ev.update(objs)
        return ev

    # --- shared parts ---

    def _context(self, p: Process, start_ns: int) -> _Context:
        """What every event of this process image repeats, built once.

        Parent and ancestors are described as they were when this process was
        first seen, i.e. who created it, even if an ancestor execs later.
        """
        table = self.table
        # The header carries the kernel's exact start time; /proc seeds only
        # know it to the 10 ms tick.
        p.start_ns = start_ns
        parent = table.get_by_exec_id(p.parent_exec_id) if p.parent_exec_id else None
        ancestors = []
        for exec_id, a in zip(p.ancestors, table.ancestry(p), strict=True):
            if a is None:
                ancestors.append({"exec_id": exec_id, "pid": None, "exe": None, "comm": None})
            else:
                ancestors.append({"exec_id": exec_id, "pid": a.pid, "exe": a.exe,
                                  "comm": a.comm})
        ctx = {
            "exec_id": p.exec_id,
            "start_time": self.clock.time(start_ns),
            "exe": p.exe,
            "name": os.path.basename(p.exe) if p.exe else p.comm,
            "args": p.args,
            "args_truncated": p.args_truncated,
            "cwd": p.cwd,
            "source": p.source,
            "parent": None if p.parent_exec_id is None else {
                "exec_id": p.parent_exec_id,
                "pid": parent.pid if parent else None,
                "exe": parent.exe if parent else None,
                "comm": parent.comm if parent else None,
                "args": parent.args if parent else None,
            },
            "ancestors": ancestors,
        }
        container = None if not p.container_id else {
            "id": p.container_id[:12], "full_id": p.container_id}
        # The table keeps exact bytes; the event gets valid text and `_b64` siblings.
        # (Until a string that is not UTF-8 has been seen, none can be in it.)
        if COUNTS.undecodable:
            ctx = for_json(ctx)
        c = self._contexts[p.exec_id] = _Context(ctx, container)
        if len(self._contexts) > self.max_contexts:
            self._contexts.popitem(last=False)
            self.context_evictions += 1
        return c

    def count(self, events: list[Event]) -> None:
        """Counts events by type (its own, and device events from uevents)."""
        for ev in events:
            self.counts[ev["evt"]["type"]] += 1

    def tick(self) -> None:
        """Housekeeping, about once a second: exited processes leave the
        table, with their contexts, and user objects are made again (a
        renamed user shows)."""
        gone: list[str] = []
        self.table.expire(self.clock.now_boot_ns(), gone)
        if gone:
            # A burst of short-lived processes would otherwise keep 16k
            # contexts (~2 KB each) of the dead until newer ones push them out.
            contexts = self._contexts
            for exec_id in gone:
                contexts.pop(exec_id, None)
            if (c := compacted(contexts)) is not None:
                self._contexts = c
        self._users.clear()

    def context_stats(self) -> dict[str, int]:
        return {"contexts": len(self._contexts), "contexts_max": self.max_contexts,
                "context_evictions": self.context_evictions}

    def _base(self, etype: str, r: tuple, p: Process) -> Event:
        c = self._contexts.get(p.exec_id)
        if c is None:
            c = self._context(p, r[START])
        else:
            self._contexts.move_to_end(p.exec_id)
        # Consecutive events of a thread share one `proc` object (and so one
        # JSON encoding per batch): made again only when a per-event field
        # differs. Events are read-only after this stage.
        key = (r[PID], r[TID], r[PPID], r[COMM], r[UID], r[GID])
        proc = c.proc
        if c.key != key:
            comm = _cstr(key[3])
            if exact(comm):
                proc = {"pid": key[0], "tid": key[1], "ppid": key[2], "comm": comm,
                        "uid": key[4], "gid": key[5]}
            else:  # a comm not UTF-8 (or cut inside a character at 15 bytes)
                proc = {"pid": key[0], "tid": key[1], "ppid": key[2],
                        "comm": valid_text(comm), "comm" + B64: b64(comm),
                        "uid": key[4], "gid": key[5]}
            proc.update(c.fields)
            c.key, c.proc = key, proc
        user = self._users.get(key[4])
        if user is None:
            if len(self._users) >= 4096:
                self._users.clear()
            user = self._users[key[4]] = {"uid": key[4], "name": self.table.users.name(key[4])}
        return {
            "evt": {
                "type": etype,
                "time": self.clock.time(r[TS]),
                "seq": r[SEQ],
                "cpu": r[CPU],
            },
            "proc": proc,
            "user": user,
            "container": c.container,
        }
