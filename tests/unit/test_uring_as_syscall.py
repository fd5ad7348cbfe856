"""Issue 13, class 1: work submitted through io_uring means to the rules what
the same syscall means. An io_uring open is an `open` (or `create`) event, a
connect a `connect`, with the `io_uring` object kept beside; the default
rules fire on them with no rule of their own."""

from __future__ import annotations

import socket
import struct
from pathlib import Path
from typing import Any

from fakeproc import make_enricher
from ringrecords import _first, _fixed, batch

from ktrail.decode.decoder import decode
from ktrail.decode.schema import SYS
from ktrail.events.model import StrKind, SysFlags
from ktrail.events.registry import EventType
from ktrail.events.values import IORING_OPS
from ktrail.rules import DEFAULT_RULES
from ktrail.rules.engine import Engine
from ktrail.rules.loader import load
from ktrail.store.rows import _columns

O_WRONLY, O_CREAT, O_TRUNC, O_APPEND = 0o1, 0o100, 0o1000, 0o2000
RULES = load([DEFAULT_RULES])


def _dpath(path: str) -> bytes:
    """A kernel-rebuilt path as the kernel sends it: components leaf first."""
    return b"".join(p.encode() + b"\0" for p in reversed([c for c in path.split("/") if c]))


def uring_record(op: str, *, path: str | None = None, base: str | None = None,
                 open_flags: int = 0, mode: int = 0, addr: tuple[str, int] | None = None,
                 new_path: str | None = None, new_base: str | None = None,
                 comm: bytes = b"prog", pid: int = 31337, sqpoll: bool = False) -> bytes:
    """An io_uring submission record as bpf/uring.bpf.c builds it."""
    slots: list[tuple[bytes, int]] = [(b"", 0)] * 4
    flags = 0
    if path is not None:
        slots[0] = (path.encode() + b"\0", int(StrKind.USER))
    if base is not None:
        slots[1] = (_dpath(base), int(StrKind.DPATH))
        flags |= int(SysFlags.PATH_ROOTED) << 1
    if addr is not None:
        ip, port = addr
        sa = struct.pack("<H", socket.AF_INET) + struct.pack(">H", port)
        sa += socket.inet_aton(ip) + bytes(8)
        tup = struct.pack("<HHHHH6x16s16s", socket.AF_INET, socket.SOCK_STREAM,
                          socket.IPPROTO_TCP, 40000, 0, socket.inet_aton("10.0.0.5"), b"")
        slots[2] = (sa, int(StrKind.BYTES))
        slots[3] = (tup, int(StrKind.BYTES))
    if new_path is not None:  # rename, link, symlink: the new name in slots 2-3
        slots[2] = (new_path.encode() + b"\0", int(StrKind.USER))
    if new_base is not None:
        slots[3] = (_dpath(new_base), int(StrKind.DPATH))
        flags |= int(SysFlags.PATH_ROOTED) << 3
    if sqpoll:
        flags |= int(SysFlags.SQPOLL)
    tail = b"".join(s for s, _ in slots)
    args = [IORING_OPS.index(op), (1 << 64) - 100 if path else 5, 7, mode, open_flags,
            (1 << 64) - 100]
    arr = _fixed(_first(EventType.IO_URING), SYS, comm=comm, pid=pid, tid=pid, retval=0,
                 syscall=0, args=args, str_len=[len(s) for s, _ in slots],
                 str_kind=[k for _, k in slots], flags_sys=flags,
                 size=SYS.itemsize + len(tail))
    return arr.tobytes() + tail


def events(tmp_path: Path, *records: bytes) -> list[dict[str, Any]]:
    return make_enricher(tmp_path).process(decode(batch(list(records))))


def alerts(evs: list[dict[str, Any]]) -> list[str]:
    return sorted(a["alert"]["rule"] for a in Engine(RULES).process(evs))


def test_an_io_uring_read_of_shadow_is_the_open_rules_know(tmp_path: Path) -> None:
    [ev] = events(tmp_path, uring_record("OPENAT", path="/etc/shadow", comm=b"python3"))
    assert ev["evt"]["type"] == "open"
    assert ev["file"] == {"path": "/etc/shadow", "flags": ["O_RDONLY"], "mode": "0000",
                          "watched": True}
    assert ev["io_uring"]["opcode"] == "IORING_OP_OPENAT"
    assert ev["io_uring"]["path"] == "/etc/shadow"
    assert alerts([ev]) == ["Sensitive file read by an unexpected program"]


def test_a_relative_open_and_openat2_resolve_and_match(tmp_path: Path) -> None:
    evs = events(tmp_path, uring_record("OPENAT2", path="shadow", base="/etc",
                                        comm=b"python3"))
    assert evs[0]["evt"]["type"] == "open" and evs[0]["file"]["path"] == "/etc/shadow"
    assert alerts(evs) == ["Sensitive file read by an unexpected program"]


def test_empty_and_dot_components_do_not_hide_the_file(tmp_path: Path) -> None:
    [ev] = events(tmp_path, uring_record("OPENAT", path="//etc/.//shadow", comm=b"python3"))
    assert ev["file"]["path"] == "/etc/shadow" and ev["file"]["watched"] is True
    assert ev["io_uring"]["path"] == "//etc/.//shadow"  # as given
    assert alerts([ev]) == ["Sensitive file read by an unexpected program"]


def test_benign_forms_stay_silent(tmp_path: Path) -> None:
    evs = events(tmp_path,
                 uring_record("OPENAT", path="/etc/shadow", comm=b"sshd"),
                 uring_record("OPENAT", path="/etc/hostname", comm=b"python3"),
                 uring_record("OPENAT", path="/tmp/x/shadow", comm=b"python3"))
    assert [e["evt"]["type"] for e in evs] == ["open", "io_uring", "io_uring"]
    assert alerts(evs) == []


def test_writes_and_creates_are_file_events(tmp_path: Path) -> None:
    evs = events(tmp_path,
                 uring_record("OPENAT", path="/etc/cron.d/job", open_flags=O_WRONLY | O_CREAT,
                              mode=0o644, comm=b"python3"),
                 uring_record("OPENAT", path="/root/.bashrc", open_flags=O_WRONLY | O_APPEND,
                              comm=b"python3"),
                 uring_record("OPENAT", path="/home/u/.bash_history",
                              open_flags=O_WRONLY | O_TRUNC, comm=b"python3"))
    assert [e["evt"]["type"] for e in evs] == ["create", "open", "open"]
    assert evs[0]["file"]["mode"] == "0644"
    assert evs[0]["file"]["flags"] == ["O_WRONLY", "O_CREAT"]
    assert alerts(evs[:1]) == ["Cron job written", "Write below /etc"]
    assert alerts(evs[1:2]) == ["Shell startup file changed"]
    assert alerts(evs[2:]) == ["Shell history tampered with"]


def test_an_io_uring_connect_is_a_connect(tmp_path: Path) -> None:
    [ev] = events(tmp_path, uring_record("CONNECT", addr=("10.1.2.3", 4444), comm=b"bash"))
    assert ev["evt"]["type"] == "connect"
    assert (ev["net"]["daddr"], ev["net"]["dport"]) == ("10.1.2.3", 4444)
    assert ev["io_uring"]["opcode"] == "IORING_OP_CONNECT"
    assert alerts([ev]) == ["Reverse shell"]
    [quiet] = events(tmp_path, uring_record("CONNECT", addr=("10.1.2.3", 443), comm=b"curl"))
    assert quiet["evt"]["type"] == "connect" and alerts([quiet]) == []


def test_the_submission_says_how_it_came_and_that_its_result_is_unknown(
        tmp_path: Path) -> None:
    entered, polled = events(tmp_path,
                             uring_record("OPENAT", path="/etc/shadow", comm=b"python3"),
                             uring_record("OPENAT", path="/etc/shadow", comm=b"python3",
                                          sqpoll=True))
    assert entered["evt"]["syscall"] == "io_uring_enter"
    assert entered["io_uring"]["sqpoll"] is False
    # SQPOLL: the ring's kernel thread submitted it; no syscall was made.
    assert polled["evt"]["syscall"] is None and polled["io_uring"]["sqpoll"] is True
    for ev in (entered, polled):
        assert ev["evt"]["retval"] is None and ev["evt"]["error"] is None
    # Opcodes with no syscall counterpart here stay io_uring events, likewise.
    [other] = events(tmp_path, uring_record("SOCKET"))
    assert other["evt"]["type"] == "io_uring"
    assert other["evt"]["syscall"] == "io_uring_enter" and other["evt"]["retval"] is None


def test_the_store_files_it_under_its_path(tmp_path: Path) -> None:
    [ev] = events(tmp_path, uring_record("OPENAT", path="//etc/shadow", comm=b"python3"))
    assert _columns(ev, ev["evt"]["type"])[0] == "/etc/shadow"


AT_REMOVEDIR = 0x200


def test_renames_links_symlinks_and_unlinks_are_file_events(tmp_path: Path) -> None:
    evs = events(tmp_path,
                 uring_record("RENAMEAT", path="job", base="/tmp", new_path="/etc/cron.d/job",
                              comm=b"python3"),
                 uring_record("LINKAT", path="/etc/shadow", new_path="s", new_base="/tmp",
                              comm=b"python3"),
                 uring_record("SYMLINKAT", path="/dev/null", new_path=".bash_history",
                              new_base="/root", comm=b"python3"),
                 uring_record("UNLINKAT", path="/var/log//auth.log", comm=b"python3"),
                 uring_record("UNLINKAT", path="/tmp/d", open_flags=AT_REMOVEDIR,
                              comm=b"python3"),
                 uring_record("MKDIRAT", path="d", base="/tmp", mode=0o700, comm=b"python3"))
    assert [e["evt"]["type"] for e in evs] == ["rename", "link", "symlink", "unlink", "rmdir",
                                               "io_uring"]
    rename, link, symlink, unlink, rmdir, mkdir = evs
    assert rename["file"] == {"path": "/tmp/job", "new_path": "/etc/cron.d/job", "flags": 0}
    assert link["file"]["path"] == "/etc/shadow" and link["file"]["new_path"] == "/tmp/s"
    assert symlink["file"] == {"target": "/dev/null", "path": "/root/.bash_history"}
    assert unlink["file"] == {"path": "/var/log/auth.log"}
    assert rmdir["file"] == {"path": "/tmp/d"}
    assert mkdir["io_uring"]["path"] == "/tmp/d" and mkdir["io_uring"]["mode"] == "0700"
    for e in evs:
        assert e["evt"]["syscall"] == "io_uring_enter" and e["evt"]["retval"] is None
    assert alerts([rename]) == ["Cron job written", "Write below /etc"]
    assert alerts([link]) == ["Link to a sensitive file", "Write below /etc"]
    assert alerts([symlink]) == ["Shell history tampered with"]
    assert alerts([unlink]) == ["Log file cleared"]
    assert alerts([rmdir, mkdir]) == []


def test_falco_rules_see_the_io_uring_open_as_an_open(tmp_path: Path) -> None:
    text = """
- rule: Shadow opened
  desc: t
  condition: evt.type in (open, openat, openat2) and fd.name = /etc/shadow
  output: "%proc.name opened %fd.name (%evt.type)"
  priority: WARNING
"""
    rs = load(["f.yaml"], texts={"f.yaml": text}, dialect="falco")
    evs = events(tmp_path, uring_record("OPENAT", path="/etc/shadow", comm=b"python3"),
                 uring_record("OPENAT", path="/etc/shadow", comm=b"python3", sqpoll=True))
    outs = [a["alert"]["output"] for a in Engine(rs).process(evs)]
    assert outs == ["python3 opened /etc/shadow (open)"] * 2
