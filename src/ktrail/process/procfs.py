"""Read-only access to /proc for seeding and back-filling the process table.

Every method tolerates processes vanishing mid-read: they return None (or skip the
pid) instead of raising, because a process can exit between any two syscalls.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ktrail.strings import decode

# Errors that mean "this process is gone or hidden from us", never a bug.
_GONE: tuple[type[OSError], ...] = (FileNotFoundError, ProcessLookupError, PermissionError)

# task->flags bit set for kernel threads (include/linux/sched.h).
PF_KTHREAD = 0x00200000

# Field numbers (1-based, as in proc(5)) counted after the "(comm)" field.
_STAT_STATE = 3
_STAT_FLAGS = 9
_STAT_START = 22

_DELETED = " (deleted)"


def _decode(raw: bytes) -> str:
    # Process-controlled bytes: never fail, and lose no byte (ktrail.strings).
    return decode(raw)


@dataclass(slots=True, frozen=True)
class ProcStat:
    """The fields of /proc/PID/stat the sensor cares about."""

    pid: int
    comm: str
    state: str
    ppid: int
    start_ticks: int
    flags: int = 0


@dataclass(slots=True)
class ProcInfo:
    """Everything needed to seed one process-table entry from /proc."""

    pid: int
    ppid: int
    comm: str
    start_ticks: int
    exe: str
    exe_deleted: bool
    args: list[str]
    cwd: str
    uid: int  # real uid, -1 when status could not be read
    gid: int  # real gid, -1 when status could not be read
    cgroup: str
    is_kernel_thread: bool
    args_truncated: bool = False
    state: str = ""


def parse_stat(text: str) -> ProcStat | None:
    """Parse one /proc/PID/stat line; None when malformed.

    comm may contain spaces and ')' so it spans from the first '(' to the LAST ')'.
    """
    open_at = text.find("(")
    close_at = text.rfind(")")
    if open_at < 0 or close_at < open_at:
        return None
    rest = text[close_at + 1 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    if len(rest) < _STAT_START - 2:
        return None
    try:
        return ProcStat(
            pid=int(text[:open_at]),
            comm=text[open_at + 1 : close_at],
            state=rest[_STAT_STATE - 3],
            ppid=int(rest[4 - 3]),
            start_ticks=int(rest[_STAT_START - 3]),
            flags=int(rest[_STAT_FLAGS - 3]),
        )
    except ValueError:
        return None


class ProcFS:
    """Reader for a /proc tree; `root` is configurable so tests can use a fake tree."""

    def __init__(self, root: str = "/proc", max_args_bytes: int | None = None) -> None:
        self.root = root
        # Bound on cmdline bytes read per process; None reads it whole.
        self.max_args_bytes = max_args_bytes

    def _path(self, pid: int, name: str) -> str:
        return os.path.join(self.root, str(pid), name)

    def _read_bytes(self, pid: int, name: str, limit: int | None = None) -> bytes | None:
        try:
            with open(self._path(pid, name), "rb") as f:
                return f.read() if limit is None else f.read(limit)
        except _GONE:
            return None

    def _readlink(self, pid: int, name: str) -> str | None:
        try:
            # Bytes path so odd file names come back undamaged, then decode leniently.
            return _decode(os.readlink(os.fsencode(self._path(pid, name))))
        except _GONE:
            return None

    def pids(self) -> list[int]:
        """Numeric entries of the root (thread-group leaders), ascending."""
        try:
            names = os.listdir(self.root)
        except _GONE:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def stat(self, pid: int) -> ProcStat | None:
        raw = self._read_bytes(pid, "stat")
        return None if raw is None else parse_stat(_decode(raw))

    def start_ticks(self, pid: int) -> int | None:
        st = self.stat(pid)
        return None if st is None else st.start_ticks

    def exe(self, pid: int) -> tuple[str, bool] | None:
        """(path, deleted) of the executable; None for kernel threads or no access."""
        target = self._readlink(pid, "exe")
        if target is None:
            return None
        if target.endswith(_DELETED):
            return target[: -len(_DELETED)], True
        return target, False

    def cwd(self, pid: int) -> str | None:
        return self._readlink(pid, "cwd")

    def cgroup(self, pid: int) -> str | None:
        raw = self._read_bytes(pid, "cgroup")
        return None if raw is None else _decode(raw)

    def cmdline(self, pid: int) -> tuple[list[str], bool] | None:
        """(args, truncated); args are split on NUL with the trailing empty removed."""
        limit = None if self.max_args_bytes is None else self.max_args_bytes + 1
        raw = self._read_bytes(pid, "cmdline", limit)
        if raw is None:
            return None
        truncated = self.max_args_bytes is not None and len(raw) > self.max_args_bytes
        if truncated:
            raw = raw[: self.max_args_bytes]
        if not raw:
            return [], truncated
        parts = raw.split(b"\0")
        if parts[-1] == b"":
            parts.pop()
        return [_decode(p) for p in parts], truncated

    def ids(self, pid: int) -> tuple[int, int] | None:
        """Real (uid, gid) from the Uid:/Gid: lines of status."""
        raw = self._read_bytes(pid, "status")
        if raw is None:
            return None
        uid = gid = None
        for line in raw.split(b"\n"):
            if line.startswith(b"Uid:"):
                uid = _first_int(line)
            elif line.startswith(b"Gid:"):
                gid = _first_int(line)
        if uid is None or gid is None:
            return None
        return uid, gid

    def read(self, pid: int) -> ProcInfo | None:
        """Snapshot one process; None if it is gone or was replaced while reading."""
        st = self.stat(pid)
        if st is None:
            return None
        exe = self.exe(pid)
        cmd = self.cmdline(pid)
        cwd = self.cwd(pid)
        ids = self.ids(pid)
        cgroup = self.cgroup(pid)
        # Re-check identity: if the pid was reused mid-read the fields are a mix of two
        # processes. A vanished process keeps what was read before it went.
        again = self.stat(pid)
        if again is not None and again.start_ticks != st.start_ticks:
            return None
        args, truncated = cmd if cmd is not None else ([], False)
        exe_path, deleted = exe if exe is not None else ("", False)
        kthread = bool(st.flags & PF_KTHREAD) or st.pid == 2 or st.ppid == 2
        # Zombies also have an empty cmdline and no exe: don't mistake them for kthreads.
        if not kthread and not args and exe is None and st.state != "Z":
            kthread = cmd is not None
        uid, gid = ids if ids is not None else (-1, -1)
        return ProcInfo(
            pid=st.pid,
            ppid=st.ppid,
            comm=st.comm,
            start_ticks=st.start_ticks,
            exe=exe_path,
            exe_deleted=deleted,
            args=args,
            cwd=cwd or "",
            uid=uid,
            gid=gid,
            cgroup=cgroup or "",
            is_kernel_thread=kthread,
            args_truncated=truncated,
            state=st.state,
        )


def _first_int(line: bytes) -> int | None:
    fields = line.split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None
