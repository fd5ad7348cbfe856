"""Bounded table of processes keyed by (pid, start_ticks).

A pid alone is not an identity: pids are reused, so every entry is keyed by the pid and
its start time in clock ticks since boot (field 22 of /proc/PID/stat). Entries come from
a /proc snapshot (`seed`), from kernel events (`on_fork`, `on_exec`, `on_exit`), or are
back-filled on demand (`resolve`) so that no event is ever dropped for lack of context.

Not thread-safe: meant to be driven by the single event-processing loop.
"""

from __future__ import annotations

import posixpath
from collections import OrderedDict
from dataclasses import dataclass
from sys import intern

from ktrail.memory import compacted

from .container import container_id_from_cgroup
from .procfs import ProcFS, ProcInfo
from .users import UserNames

Key = tuple[int, int]  # (pid, start_ticks)


def make_exec_id(pid: int, start_ticks: int) -> str:
    """Stable process identity string: "<pid>:<start_ticks>"."""
    return f"{pid}:{start_ticks}"


def parse_exec_id(exec_id: str) -> Key | None:
    """Inverse of make_exec_id; None when `exec_id` is malformed."""
    pid, sep, ticks = exec_id.partition(":")
    if not sep:
        return None
    try:
        return int(pid), int(ticks)
    except ValueError:
        return None


def _interned(args: list[str]) -> list[str]:
    """argv with each string interned: most processes share most of their
    words (programs, flags, paths), and 100k tracked processes would hold
    100k copies of each. Interned strings die with their last holder."""
    return [intern(a) for a in args]


@dataclass(slots=True)
class Process:
    pid: int
    start_ticks: int
    exec_id: str
    ppid: int  # last kernel-reported parent pid (changes on reparenting)
    parent_exec_id: str | None  # creator's exec_id: the ORIGINAL parent, kept after reparenting
    comm: str
    exe: str
    args: list[str]
    args_truncated: bool
    cwd: str
    uid: int  # -1 when unknown
    gid: int  # -1 when unknown
    user: str | None
    container_id: str | None
    ancestors: tuple[str, ...]  # exec_ids, parent first, bounded depth
    start_ns: int | None  # exact kernel start time when known (events), None for procfs seeds
    exit_ns: int | None = None
    exit_code: int | None = None
    source: str = "exec"  # "procfs" | "fork" | "exec" | "partial"
    kernel_thread: bool = False

    @property
    def exited(self) -> bool:
        return self.exit_ns is not None


class ProcessTable:
    def __init__(
        self,
        procfs: ProcFS,
        users: UserNames,
        max_entries: int = 65536,
        max_depth: int = 16,
        linger_ns: int = 5_000_000_000,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.procfs = procfs
        self.users = users
        self.max_entries = max_entries
        self.max_depth = max(0, max_depth)
        self.linger_ns = linger_ns
        self._procs: dict[Key, Process] = {}
        # Live entries in LRU order (oldest first); touched on lookup.
        self._live: OrderedDict[Key, None] = OrderedDict()
        # Dead entries in exit order -> time their linger started.
        self._exited: OrderedDict[Key, int] = OrderedDict()
        # pid -> key of the newest process known with that pid.
        self._pid_key: dict[int, Key] = {}
        # Newest event timestamp seen: stands in for the unknown exit time of entries
        # found dead because their pid was reused.
        self._last_ns = 0
        self.evictions = 0
        self.evictions_live = 0
        self.expired = 0
        self.seeded = 0  # entries created from /proc: seed() and lazy look-ups
        self.partial = 0  # entries created from an event header alone
        self.procfs_lookups = 0
        self.procfs_probes = 0

    def __len__(self) -> int:
        return len(self._procs)

    # ---- lookups ------------------------------------------------------------------

    def get(self, pid: int, start_ticks: int) -> Process | None:
        """Entry with exactly this identity (live or lingering after exit)."""
        key = (pid, start_ticks)
        proc = self._procs.get(key)
        if proc is not None and key in self._live:
            self._live.move_to_end(key)
        return proc

    def get_by_exec_id(self, exec_id: str) -> Process | None:
        key = parse_exec_id(exec_id)
        return None if key is None else self.get(*key)

    def get_by_pid(self, pid: int, include_exited: bool = False) -> Process | None:
        """Newest process with this pid; exited ones only if `include_exited`."""
        key = self._pid_key.get(pid)
        if key is None:
            return None
        if key in self._live:
            self._live.move_to_end(key)
            return self._procs[key]
        return self._procs[key] if include_exited else None

    def processes(self) -> list[Process]:
        """Every entry, live or lingering."""
        return list(self._procs.values())

    def ancestry(self, proc: Process) -> list[Process | None]:
        """Entries for proc.ancestors, parent first; None where evicted or never seen."""
        # Going through get() keeps ancestors of active processes hot in the LRU.
        return [self.get_by_exec_id(e) for e in proc.ancestors]

    # ---- events -------------------------------------------------------------------

    def on_fork(
        self,
        parent_pid: int,
        parent_start_ticks: int,
        child_pid: int,
        child_start_ticks: int,
        ts_ns: int,
    ) -> Process:
        self._note(ts_ns)
        parent = self.get(parent_pid, parent_start_ticks)
        if parent is None:
            info = self._procfs_read(parent_pid, parent_start_ticks)
            if info is not None:
                parent = self._adopt(info)
        if parent is not None:
            parent_exec_id, ancestors = self._lineage(parent)
        else:
            parent_exec_id = make_exec_id(parent_pid, parent_start_ticks)
            ancestors = (parent_exec_id,)[: self.max_depth]

        child = self.get(child_pid, child_start_ticks)
        if child is not None:
            # exec or a /proc read got here first: keep its data, add what fork knows.
            if child.source == "partial":
                if parent is not None:
                    self._copy_image(parent, child)
                    child.source = "fork"
                child.parent_exec_id, child.ancestors = parent_exec_id, ancestors
            elif child.parent_exec_id is None:
                child.parent_exec_id, child.ancestors = parent_exec_id, ancestors
            if child.start_ns is None:
                child.start_ns = ts_ns
            return child

        if parent is not None:
            child = self._blank(child_pid, child_start_ticks, parent_pid, "fork")
            self._copy_image(parent, child)
        else:
            # Parent unknown and gone: the child's own /proc entry is the best image.
            info = self._procfs_read(child_pid, child_start_ticks)
            if info is not None:
                child = self._from_info(info, None, "procfs")
                child.ppid = parent_pid
                self.seeded += 1
            else:
                child = self._blank(child_pid, child_start_ticks, parent_pid, "partial")
                self.partial += 1
        child.parent_exec_id, child.ancestors = parent_exec_id, ancestors
        child.start_ns = ts_ns
        return self._insert(child)

    def on_exec(
        self,
        pid: int,
        start_ticks: int,
        ppid: int,
        uid: int,
        gid: int,
        comm: str,
        exe: str,
        args: list[str],
        args_truncated: bool,
        ts_ns: int,
        cwd: str | None = None,
        container_id: str | None = None,
    ) -> Process:
        self._note(ts_ns)
        proc = self.get(pid, start_ticks)
        parent = None
        if proc is None or proc.parent_exec_id is None:
            parent = self._find_parent(pid, ppid, start_ticks)
        base = proc if proc is not None else parent

        if cwd is None or container_id is None:
            # /proc first: cwd and cgroup may have changed since fork (chdir, `docker
            # exec` joining the container's cgroup before exec).
            probe_cwd, probe_cgroup = self._probe(
                pid, start_ticks, want_cwd=cwd is None, want_cgroup=container_id is None
            )
            if cwd is None:
                cwd = probe_cwd if probe_cwd is not None else (base.cwd if base else "")
            if container_id is None:
                if probe_cgroup is not None:
                    container_id = container_id_from_cgroup(probe_cgroup)
                elif base is not None:
                    container_id = base.container_id
        exe = _absolute(exe, cwd)

        if proc is None:
            proc = self._insert(self._blank(pid, start_ticks, ppid, "exec"))
        if proc.parent_exec_id is None:
            proc.parent_exec_id, proc.ancestors = self._lineage(parent)
        proc.ppid = ppid
        proc.comm = intern(comm)
        proc.exe = intern(exe)
        proc.args = _interned(args)
        proc.args_truncated = args_truncated
        proc.cwd = intern(cwd)
        proc.uid = uid
        proc.gid = gid
        proc.user = self._user(uid)
        proc.container_id = container_id
        proc.source = "exec"
        # Usermode helpers start as kernel threads and become user processes by exec.
        proc.kernel_thread = False
        return proc

    def on_exit(self, pid: int, start_ticks: int, exit_code: int, ts_ns: int) -> Process | None:
        """Mark exited; the entry lingers `linger_ns` so late events still resolve."""
        self._note(ts_ns)
        key = (pid, start_ticks)
        proc = self._procs.get(key)
        if proc is None:
            return None
        if proc.exit_ns is None:
            proc.exit_ns = ts_ns
            proc.exit_code = exit_code
        if key in self._live:
            del self._live[key]
            self._exited[key] = ts_ns
        return proc

    def reparent(self, pid: int, start_ticks: int, new_ppid: int) -> Process | None:
        """Track the new parent pid; parent_exec_id keeps naming the creator."""
        proc = self.get(pid, start_ticks)
        if proc is not None:
            proc.ppid = new_ppid
        return proc

    def resolve(
        self, pid: int, start_ticks: int, ppid: int, uid: int, gid: int, comm: str
    ) -> Process:
        """Entry for any event's process, created from /proc or the event header."""
        proc = self.get(pid, start_ticks)
        if proc is not None:
            return proc
        info = self._procfs_read(pid, start_ticks)
        if info is not None:
            return self._adopt(info)
        parent = self._find_parent(pid, ppid, start_ticks)
        proc = self._blank(pid, start_ticks, ppid, "partial")
        proc.parent_exec_id, proc.ancestors = self._lineage(parent)
        proc.comm = comm
        proc.uid = uid
        proc.gid = gid
        proc.user = self._user(uid)
        self.partial += 1
        return self._insert(proc)

    # ---- snapshot and housekeeping ------------------------------------------------

    def seed(self) -> int:
        """Load every process in /proc; returns the number of entries created."""
        infos: list[ProcInfo] = []
        for pid in self.procfs.pids():
            info = self.procfs.read(pid)
            if info is not None:
                infos.append(info)
        # Parents start no later than their children.
        infos.sort(key=lambda i: (i.start_ticks, i.pid))
        by_pid = {i.pid: i for i in infos}
        placed: dict[int, Process] = {}
        created = 0
        for info in infos:
            if info.pid in placed:
                continue
            # Equal start_ticks (same 10 ms tick) can still sort a child first: insert
            # any unplaced ancestors from this snapshot before it.
            chain = [info]
            seen = {info.pid}
            cur = info
            while True:
                up = by_pid.get(cur.ppid)
                if (
                    up is None
                    or up.pid in placed
                    or up.pid in seen
                    or up.start_ticks > cur.start_ticks
                ):
                    break
                chain.append(up)
                seen.add(up.pid)
                cur = up
            for item in reversed(chain):
                proc = self._procs.get((item.pid, item.start_ticks))
                if proc is None:
                    parent = placed.get(item.ppid)
                    if parent is None or parent.start_ticks > item.start_ticks:
                        parent = self._known_parent(item.ppid, item.start_ticks)
                    proc = self._insert(self._from_info(item, parent, "procfs"))
                    created += 1
                placed[item.pid] = proc
        self.seeded += created
        return created

    def expire(self, now_ns: int, gone: list[str] | None = None) -> int:
        """Drop exited entries whose linger period has passed; returns how many.
        Their exec_ids are appended to `gone`, if given."""
        dropped = 0
        while self._exited:
            key, since = next(iter(self._exited.items()))
            if now_ns - since <= self.linger_ns:
                break  # exit order: everything behind is younger (modulo CPU skew)
            del self._exited[key]
            proc = self._drop(key)
            if gone is not None and proc is not None:
                gone.append(proc.exec_id)
            dropped += 1
        self.expired += dropped
        if dropped:
            self._compact()
        return dropped

    def _compact(self) -> None:
        # After a burst has expired the maps are mostly empty slots, which a
        # dict never gives back: rebuild them (a few times per burst at most).
        if (m := compacted(self._procs)) is not None:
            self._procs = m
        if (o := compacted(self._live)) is not None:
            self._live = o
        if (x := compacted(self._exited)) is not None:
            self._exited = x
        if (k := compacted(self._pid_key)) is not None:
            self._pid_key = k

    def stats(self) -> dict[str, int]:
        return {
            "size": len(self._procs),
            "live": len(self._live),
            "exited": len(self._exited),
            "max_entries": self.max_entries,
            "evictions": self.evictions,
            "evictions_live": self.evictions_live,
            "expired": self.expired,
            "seeded": self.seeded,
            "partial": self.partial,
            "procfs_lookups": self.procfs_lookups,
            "procfs_probes": self.procfs_probes,
        }

    # ---- internals ----------------------------------------------------------------

    def _note(self, ts_ns: int) -> None:
        self._last_ns = max(self._last_ns, ts_ns)

    def _user(self, uid: int) -> str | None:
        return None if uid < 0 else self.users.name(uid)

    def _lineage(self, parent: Process | None) -> tuple[str | None, tuple[str, ...]]:
        if parent is None:
            return None, ()
        return parent.exec_id, (parent.exec_id, *parent.ancestors)[: self.max_depth]

    def _blank(self, pid: int, start_ticks: int, ppid: int, source: str) -> Process:
        return Process(
            pid=pid,
            start_ticks=start_ticks,
            exec_id=make_exec_id(pid, start_ticks),
            ppid=ppid,
            parent_exec_id=None,
            comm="",
            exe="",
            args=[],
            args_truncated=False,
            cwd="",
            uid=-1,
            gid=-1,
            user=None,
            container_id=None,
            ancestors=(),
            start_ns=None,
            source=source,
        )

    @staticmethod
    def _copy_image(src: Process, dst: Process) -> None:
        # fork duplicates the process image and credentials; none of these change.
        dst.comm = src.comm
        dst.exe = src.exe
        dst.args = src.args  # shared: a process's args list is replaced, never changed
        dst.args_truncated = src.args_truncated
        dst.cwd = src.cwd
        dst.uid = src.uid
        dst.gid = src.gid
        dst.user = src.user
        dst.container_id = src.container_id
        dst.kernel_thread = src.kernel_thread

    def _from_info(self, info: ProcInfo, parent: Process | None, source: str) -> Process:
        parent_exec_id, ancestors = self._lineage(parent)
        return Process(
            pid=info.pid,
            start_ticks=info.start_ticks,
            exec_id=make_exec_id(info.pid, info.start_ticks),
            ppid=info.ppid,
            parent_exec_id=parent_exec_id,
            comm=intern(info.comm),
            exe=intern(info.exe),
            args=_interned(info.args),
            args_truncated=info.args_truncated,
            cwd=intern(info.cwd),
            uid=info.uid,
            gid=info.gid,
            user=self._user(info.uid),
            container_id=container_id_from_cgroup(info.cgroup),
            ancestors=ancestors,
            start_ns=None,
            source=source,
            kernel_thread=info.is_kernel_thread,
        )

    def _procfs_read(self, pid: int, start_ticks: int | None = None) -> ProcInfo | None:
        """/proc snapshot of pid, only if it is still the process we mean."""
        self.procfs_lookups += 1
        info = self.procfs.read(pid)
        if info is None or (start_ticks is not None and info.start_ticks != start_ticks):
            return None
        return info

    def _probe(
        self, pid: int, start_ticks: int, want_cwd: bool, want_cgroup: bool
    ) -> tuple[str | None, str | None]:
        """(cwd, cgroup text) from /proc, or Nones if gone or no longer this process."""
        self.procfs_probes += 1
        cwd = self.procfs.cwd(pid) if want_cwd else None
        cgroup = self.procfs.cgroup(pid) if want_cgroup else None
        if cwd is None and cgroup is None:
            return None, None
        # Checked after reading: a reuse before or during the reads shows up here.
        if self.procfs.start_ticks(pid) != start_ticks:
            return None, None
        return cwd, cgroup

    def _known_parent(self, ppid: int, child_start_ticks: int) -> Process | None:
        key = self._pid_key.get(ppid)
        if key is None:
            return None
        parent = self._procs[key]
        # A parent never starts after its child; otherwise the pid was reused.
        return parent if parent.start_ticks <= child_start_ticks else None

    def _parent_step(
        self, child_pid: int, ppid: int, child_start_ticks: int
    ) -> tuple[Process | None, ProcInfo | None]:
        """Parent of a child as (table entry, None) or (None, /proc snapshot to adopt)."""
        if ppid <= 0 or ppid == child_pid:
            return None, None
        known = self._known_parent(ppid, child_start_ticks)
        if known is not None and not known.exited:
            return known, None
        # Unknown, or only a dead namesake: a newer process may hold that pid now.
        info = self._procfs_read(ppid)
        if (
            info is not None
            and info.start_ticks <= child_start_ticks
            and (known is None or info.start_ticks != known.start_ticks)
        ):
            return None, info
        return known, None

    def _find_parent(self, child_pid: int, ppid: int, child_start_ticks: int) -> Process | None:
        """Resolve a kernel-reported ppid to an entry, from the table or /proc."""
        known, info = self._parent_step(child_pid, ppid, child_start_ticks)
        return self._adopt(info) if info is not None else known

    def _adopt(self, info: ProcInfo) -> Process:
        """Insert a /proc-read process, reading unknown ancestors from /proc too."""
        existing = self._procs.get((info.pid, info.start_ticks))
        if existing is not None:
            return existing
        chain = [info]
        seen = {info.pid}
        parent: Process | None = None
        cur = info
        # Stop after max_depth levels: deeper ancestors would be truncated away anyway.
        while cur.ppid not in seen and len(chain) <= self.max_depth:
            parent, up = self._parent_step(cur.pid, cur.ppid, cur.start_ticks)
            if up is None:
                break
            chain.append(up)
            seen.add(up.pid)
            cur = up
        for item in reversed(chain):
            proc = self._procs.get((item.pid, item.start_ticks))
            if proc is None:
                proc = self._insert(self._from_info(item, parent, "procfs"))
                self.seeded += 1
            parent = proc
        assert parent is not None
        return parent

    def _insert(self, proc: Process) -> Process:
        key = (proc.pid, proc.start_ticks)
        existing = self._procs.get(key)
        if existing is not None:
            return existing
        while len(self._procs) >= self.max_entries:
            self._evict_one()
        self._procs[key] = proc
        current = self._pid_key.get(proc.pid)
        if current is not None and current[1] > proc.start_ticks:
            # Late record of a process whose pid already belongs to a newer one: dead.
            self._exited[key] = self._last_ns
            return proc
        self._live[key] = None
        if current is not None and current != key and current in self._live:
            # Live pids are unique, so the older holder must have died unseen.
            del self._live[current]
            self._exited[current] = self._last_ns
        self._pid_key[proc.pid] = key
        return proc

    def _evict_one(self) -> None:
        if self._exited:
            key, _ = self._exited.popitem(last=False)
        else:
            key, _ = self._live.popitem(last=False)
            self.evictions_live += 1
        self.evictions += 1
        self._drop(key)

    def _drop(self, key: Key) -> Process | None:
        proc = self._procs.pop(key, None)
        if self._pid_key.get(key[0]) == key:
            del self._pid_key[key[0]]
        return proc


def _absolute(exe: str, cwd: str) -> str:
    # execve resolves a relative path against the caller's cwd (no PATH search).
    if not exe or exe.startswith("/") or not cwd:
        return exe
    return posixpath.normpath(posixpath.join(cwd, exe))
