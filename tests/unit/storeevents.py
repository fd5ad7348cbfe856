"""Events shaped exactly like the enricher's (docs/events.md), for store tests.

As in engine/enrich.py, every event of one process image shares one context
dict: `proc` is the per-event fields updated with it, and `container` is
popped out to the top level.
"""

from __future__ import annotations

import time
from typing import Any

Event = dict[str, Any]
NS = 1_000_000_000


def rfc3339(ns: int) -> str:
    sec, frac = divmod(ns, NS)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:09d}Z"


class World:
    """Processes and a clock; each method returns one event."""

    def __init__(self, start_ns: int | None = None) -> None:
        self.now = start_ns if start_ns is not None else time.time_ns() - 60 * NS
        self.ctx: dict[str, dict[str, Any]] = {}
        self.uid: dict[str, int] = {}
        self.seq = 0

    def tick(self, ns: int = 1000) -> int:
        self.now += ns
        return self.now

    def process(self, pid: int, exe: str, args: list[str], parent: str | None = None,
                uid: int = 0, container: str | None = None, ticks: int | None = None) -> str:
        exec_id = f"{pid}:{ticks if ticks is not None else pid * 7}"
        par = self.ctx.get(parent) if parent else None
        ancestors = []
        if parent:
            ancestors = [{"exec_id": parent, "pid": int(parent.split(":")[0]),
                          "exe": par["exe"] if par else None,
                          "comm": par["name"] if par else None}]
            if par:
                ancestors += par["ancestors"]
        self.ctx[exec_id] = {
            "exec_id": exec_id, "start_time": rfc3339(self.tick()), "exe": exe,
            "name": exe.rsplit("/", 1)[-1], "args": args, "args_truncated": False,
            "cwd": "/root", "source": "exec",
            "parent": None if not parent else {
                "exec_id": parent, "pid": int(parent.split(":")[0]),
                "exe": par["exe"] if par else None, "comm": par["name"] if par else None,
                "args": par["args"] if par else None},
            "ancestors": ancestors,
            "container": None if not container else {"id": container[:12],
                                                     "full_id": container.ljust(64, "0")},
        }
        self.uid[exec_id] = uid
        return exec_id

    def event(self, exec_id: str, etype: str, **objs: Any) -> Event:
        ctx = self.ctx[exec_id]
        uid = self.uid[exec_id]
        pid = int(exec_id.split(":")[0])
        self.seq += 1
        proc = {"pid": pid, "tid": pid, "ppid": 1, "comm": ctx["name"][:15], "uid": uid,
                "gid": uid}
        proc.update(ctx)
        container = proc.pop("container")
        evt = {"type": etype, "time": rfc3339(self.tick()), "seq": self.seq, "cpu": 0}
        evt.update(objs.pop("evt", {}))
        ev = {"evt": evt, "proc": proc,
              "user": {"uid": uid, "name": {0: "root", 1000: "alice"}.get(uid)},
              "container": container}
        ev.update(objs)
        return ev

    def exec(self, exec_id: str, exe: str, args: list[str]) -> Event:
        """A successful exec: a new context for the same process."""
        old = self.ctx[exec_id]
        self.ctx[exec_id] = {**old, "exe": exe, "name": exe.rsplit("/", 1)[-1], "args": args,
                             "ancestors": list(old["ancestors"])}
        return self.event(exec_id, "exec", exec={
            "filename": exe, "args": args, "argc": len(args), "args_truncated": False,
            "filename_truncated": False, "retval": 0, "error": None, "kernel_spawned": False})

    def fork(self, parent: str, child_pid: int, ticks: int | None = None) -> tuple[Event, str]:
        par = self.ctx[parent]
        child = self.process(child_pid, par["exe"], par["args"], parent=parent,
                             uid=self.uid[parent], ticks=ticks,
                             container=par["container"]["full_id"] if par["container"] else None)
        self.ctx[child]["source"] = "fork"
        ev = self.event(parent, "fork", fork={
            "child": {"pid": child_pid, "tid": child_pid, "exec_id": child}, "thread": False})
        return ev, child

    def exit(self, exec_id: str, code: int = 0, signal: str | None = None) -> Event:
        return self.event(exec_id, "exit", exit={
            "code": None if signal else code, "signal": signal, "signo": 9 if signal else 0,
            "core_dumped": False, "status": 9 if signal else code << 8, "duration_ns": 1000})

    def file(self, exec_id: str, etype: str, path: str, new_path: str | None = None) -> Event:
        f: dict[str, Any] = {"path": path}
        if new_path:
            f["new_path"] = new_path
        return self.event(exec_id, etype, file=f,
                          evt={"syscall": etype, "retval": 0, "error": None})

    def connect(self, exec_id: str, addr: str, port: int) -> Event:
        return self.event(exec_id, "connect", evt={"syscall": "connect", "retval": 0,
                                                   "error": None},
                          net={"family": "ipv4", "type": "stream", "protocol": "tcp",
                               "saddr": "10.0.0.2", "sport": 40000, "daddr": addr,
                               "dport": port})


def alert(ev: Event, rule: str = "Test rule", priority: str = "WARNING") -> Event:
    return {"evt": {"type": "alert", "time": ev["evt"]["time"]},
            "alert": {"rule": rule, "priority": priority, "tags": ["test", "T1059"],
                      "mitre": ["T1059"], "output": f"{rule} fired", "events": [ev]},
            "proc": ev["proc"], "user": ev["user"], "container": ev["container"]}
