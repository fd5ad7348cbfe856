"""Decoded records + process table -> events.

An event is a nested dict whose dotted paths are the field names rules use
(``proc.exec_id``, ``evt.type``...). docs/events.md documents every field.
This is the one place that updates the process table from kernel events, in
ring order, so a child's exec is always applied after its parent's fork.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import OrderedDict
from typing import Any

from ktrail.decode import syscalls
from ktrail.decode.decoder import Batch
from ktrail.decode.schema import (
    EXEC,
    EXIT,
    FORK,
    SYS,
    EventType,
    ExecFlags,
    ForkFlags,
    Syscall,
)
from ktrail.engine.clock import Clock
from ktrail.process import Process, ProcessTable, make_exec_id
from ktrail.units import ticks

Event = dict[str, Any]

# Tuple positions of each dtype's fields (records are handled as tuples from
# ndarray.tolist(), far cheaper than numpy scalar access per field).
_H = {n: i for i, n in enumerate(EXEC.names)}  # header fields share positions
_X = _H
_F = {n: i for i, n in enumerate(FORK.names)}
_E = {n: i for i, n in enumerate(EXIT.names)}
_S = {n: i for i, n in enumerate(SYS.names)}
S_RETVAL, S_ARGS, S_SYSCALL, S_LEN, S_KIND, S_FLAGS = (
    _S[k] for k in ("retval", "args", "syscall", "str_len", "str_kind", "flags_sys")
)
SYSCALL_NAMES = {int(s): s.name for s in Syscall}
TYPE, TS, SEQ, START, CPU, PID, TID, PPID, UID, GID, COMM = (
    _H[k] for k in ("type", "ts_ns", "seq", "start_ns", "cpu", "pid", "tid", "ppid", "uid",
                    "gid", "comm")
)

EVENT_NAMES = {int(t): t.name.lower() for t in EventType}
# Plain ints: IntFlag arithmetic is slow enough to show per event.
_ARGS_TRUNCATED = int(ExecFlags.ARGS_TRUNCATED)
_KERNEL_SPAWNED = int(ExecFlags.KERNEL_SPAWNED)
_FILENAME_TRUNCATED = int(ExecFlags.FILENAME_TRUNCATED)
_THREAD = int(ForkFlags.THREAD)


def _s(b: bytes) -> str:
    return b.decode("utf-8", "backslashreplace")


def _cstr(b: bytes) -> str:
    """A fixed-size C string field: stop at the first NUL (bytes after it are stale)."""
    return _s(b.split(b"\0", 1)[0])


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"E{code}")


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"SIG{num}"


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


class Enricher:
    def __init__(self, table: ProcessTable, clock: Clock, usermode_helpers: bool = True,
                 exec_events: bool = True, max_contexts: int = 16384) -> None:
        self.table = table
        self.clock = clock
        # usermode_helper events are derived from exec records, which then
        # arrive even when exec itself is not selected.
        self.usermode_helpers = usermode_helpers
        self.exec_events = exec_events
        self.counts: dict[str, int] = {name: 0 for name in EVENT_NAMES.values()}
        # Event contexts of recently active processes, by exec_id. Bounded:
        # a context is ~2 KB, and most of a busy host's processes are idle,
        # so keeping one per tracked process would triple the table's memory.
        self._contexts: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.max_contexts = max_contexts
        self.context_evictions = 0

    def process(self, batch: Batch) -> list[Event]:
        if not len(batch):
            return []
        recs = {t: arr.tolist() for t, arr in batch.records.items()}
        out: list[Event] = []
        append = out.append
        tails = batch.tails
        specs = syscalls.SPECS
        for t, i in zip(batch.types.tolist(), batch.index.tolist(), strict=True):
            r = recs[t][i]
            if t in specs:
                append(self._sys(specs[t], r, tails[t][i]))
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
        for ev in out:
            self.counts[ev["evt"]["type"]] += 1
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
        ev = self._base("exec", r, proc)
        ev["exec"] = exec_
        exec_["kernel_spawned"] = bool(flags & _KERNEL_SPAWNED)
        ev["user"]["euid"] = r[_X["euid"]]
        ev["user"]["egid"] = r[_X["egid"]]
        auid = r[_X["auid"]]
        ev["user"]["auid"] = None if auid == 0xFFFFFFFF else auid
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
        st["duration_ns"] = r[TS] - r[START]
        ev["exit"] = st
        return ev

    def _usermode_helper(self, exec_ev: Event) -> Event:
        ev = {k: v for k, v in exec_ev.items() if k != "exec"}
        ev["evt"] = {**exec_ev["evt"], "type": "usermode_helper"}
        ev["usermode_helper"] = {"exe": exec_ev["exec"]["filename"],
                                 "args": exec_ev["exec"]["args"]}
        return ev

    def _target(self, obj: dict[str, Any]) -> None:
        """Names the process a kill or ptrace aims at, from the process table."""
        target = obj["target"]
        p = self.table.get_by_pid(target["pid"]) if target.get("pid") else None
        target["exec_id"] = p.exec_id if p else None
        target["exe"] = p.exe if p else None
        target["comm"] = p.comm if p else None

    def _sys(self, spec: syscalls.SysSpec, r: tuple, tail: bytes) -> Event:
        flags = r[S_FLAGS]
        # Sub-array fields stay numpy arrays through ndarray.tolist().
        strs = syscalls.slots(tail, r[S_LEN].tolist(), r[S_KIND].tolist(), flags)
        objs = syscalls.decode(spec, r[S_ARGS].tolist(), strs, flags)
        for name in ("kill", "ptrace"):
            if name in objs:
                self._target(objs[name])
        ev = self._base(spec.name, r, self._actor(r))
        retval = r[S_RETVAL]
        evt = ev["evt"]
        evt["syscall"] = SYSCALL_NAMES.get(r[S_SYSCALL], str(r[S_SYSCALL]))
        evt["retval"] = retval
        evt["error"] = errno_name(-retval) if retval < 0 else None
        ev.update(objs)
        return ev

    # --- shared parts ---

    def _context(self, p: Process, start_ns: int) -> dict[str, Any]:
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
            "start_time": self.clock.rfc3339(start_ns),
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
            "container": None if not p.container_id else {
                "id": p.container_id[:12], "full_id": p.container_id,
            },
        }
        self._contexts[p.exec_id] = ctx
        if len(self._contexts) > self.max_contexts:
            self._contexts.popitem(last=False)
            self.context_evictions += 1
        return ctx

    def context_stats(self) -> dict[str, int]:
        return {"contexts": len(self._contexts), "contexts_max": self.max_contexts,
                "context_evictions": self.context_evictions}

    def _base(self, etype: str, r: tuple, p: Process) -> Event:
        ctx = self._contexts.get(p.exec_id)
        if ctx is None:
            ctx = self._context(p, r[START])
        else:
            self._contexts.move_to_end(p.exec_id)
        uid = r[UID]
        proc = {
            "pid": r[PID],
            "tid": r[TID],
            "ppid": r[PPID],
            "comm": _cstr(r[COMM]),
            "uid": uid,
            "gid": r[GID],
        }
        proc.update(ctx)
        container = proc.pop("container")
        return {
            "evt": {
                "type": etype,
                "time": self.clock.rfc3339(r[TS]),
                "seq": r[SEQ],
                "cpu": r[CPU],
            },
            "proc": proc,
            "user": {"uid": uid, "name": self.table.users.name(uid)},
            "container": container,
        }
