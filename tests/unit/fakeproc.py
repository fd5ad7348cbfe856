"""Builder for fake /proc trees under a temporary directory (no root, no real /proc)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ktrail.engine.enrich import Enricher
from ktrail.process import ProcessTable, ProcFS, UserNames
from ktrail.units import Clock

PF_KTHREAD = 0x00200000


def stat_line(pid: int, comm: str, state: str, ppid: int, start_ticks: int, flags: int = 0) -> str:
    """A 52-field /proc/PID/stat line; start_ticks lands in field 22."""
    fields = [str(pid), f"({comm})", state, str(ppid), str(pid), str(pid), "0", "-1"]
    fields.append(str(flags))  # field 9
    fields += ["0"] * 12  # fields 10..21
    fields.append(str(start_ticks))  # field 22
    fields += ["0"] * 30  # fields 23..52
    return " ".join(fields) + "\n"


class FakeProc:
    """Writes stat, status, cmdline, cgroup and exe/cwd symlinks per fake pid."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        # Real /proc has non-numeric entries that must be skipped.
        (root / "self").mkdir(exist_ok=True)
        (root / "sys").mkdir(exist_ok=True)
        (root / "meminfo").write_text("MemTotal: 1 kB\n")

    @property
    def path(self) -> str:
        return str(self.root)

    def add(
        self,
        pid: int,
        *,
        comm: str = "proc",
        ppid: int = 1,
        start_ticks: int = 100,
        state: str = "S",
        exe: str | None = "/usr/bin/proc",
        args: list[str] | None = None,
        cwd: str | None = "/",
        uid: int = 0,
        gid: int = 0,
        euid: int | None = None,
        cgroup: str = "0::/user.slice\n",
        flags: int = 0,
        cmdline: bytes | None = None,
    ) -> Path:
        d = self.root / str(pid)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        (d / "stat").write_text(stat_line(pid, comm, state, ppid, start_ticks, flags))
        e = uid if euid is None else euid
        (d / "status").write_text(
            f"Name:\t{comm}\nUmask:\t0022\nState:\t{state} (sleeping)\nTgid:\t{pid}\n"
            f"Pid:\t{pid}\nPPid:\t{ppid}\nTracerPid:\t0\n"
            f"Uid:\t{uid}\t{e}\t{e}\t{e}\nGid:\t{gid}\t{gid}\t{gid}\t{gid}\n"
        )
        if cmdline is None:
            argv = [exe or comm] if args is None else args
            cmdline = b"".join(a.encode() + b"\0" for a in argv)
        (d / "cmdline").write_bytes(cmdline)
        (d / "cgroup").write_text(cgroup)
        # readlink() works on dangling links, like /proc's magic links.
        if exe is not None:
            os.symlink(exe, d / "exe")
        if cwd is not None:
            os.symlink(cwd, d / "cwd")
        return d

    def add_kthread(
        self, pid: int, comm: str, *, ppid: int = 2, start_ticks: int = 0, flags: int = PF_KTHREAD
    ) -> Path:
        return self.add(
            pid,
            comm=comm,
            ppid=ppid,
            start_ticks=start_ticks,
            exe=None,
            cwd="/",
            cmdline=b"",
            cgroup="0::/\n",
            flags=flags,
        )

    def remove(self, pid: int) -> None:
        shutil.rmtree(self.root / str(pid), ignore_errors=True)


def make_enricher(tmp_path: Path, clock: Clock | None = None) -> Enricher:
    """An enricher over an empty fake /proc: nothing from the real /proc leaks in."""
    fake = FakeProc(tmp_path / "proc")
    table = ProcessTable(ProcFS(fake.path), UserNames(lookup={0: "root"}.get))
    return Enricher(table, clock or Clock())
