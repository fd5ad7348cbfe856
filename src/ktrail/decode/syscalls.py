"""What each syscall event's arguments and string slots mean, declared as data.

struct kt_sys_event carries arguments in one canonical order per event type
and up to four string slots; this table names them, so one generic decoder
serves every type and adding a type is a row here plus its BPF handler.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ktrail.decode import sockets, taskops
from ktrail.decode.schema import EventType, StrKind, SysFlags
from ktrail.decode.taskops import open_flags, signed64


@dataclass(frozen=True)
class Path:
    """A path argument: slot `slot`, resolved against slot `slot + 1`."""

    name: str
    slot: int


@dataclass(frozen=True)
class Str:
    """A string kept as given (a symlink target is never resolved)."""

    name: str
    slot: int


@dataclass(frozen=True)
class Arg:
    name: str
    index: int
    kind: str = "int"  # int | fd | oct | flags_open | time


Builder = Callable[[list[int], list[Any]], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class SysSpec:
    name: str
    category: str            # the event's own object: "file", "net", "dns"...
    fields: tuple[Path | Str | Arg, ...]
    description: str
    # For types whose slots need more than field-by-field decoding: returns
    # the event's objects by name (a DNS event has `dns` and `net`).
    build: Builder | None = None


def _spec(name: str, category: str, description: str, *fields: Path | Str | Arg) -> SysSpec:
    return SysSpec(name, category, fields, description)


def _connect(args: list[int], strs: list[Any]) -> dict[str, dict[str, Any]]:
    return {"net": sockets.net_fields(sockets.sockaddr(strs[0]), sockets.sock_tuple(strs[1]),
                                      asked_is_remote=True)}


def _bind(args: list[int], strs: list[Any]) -> dict[str, dict[str, Any]]:
    return {"net": sockets.net_fields(sockets.sockaddr(strs[0]), sockets.sock_tuple(strs[1]),
                                      asked_is_remote=False)}


def _accept(args: list[int], strs: list[Any]) -> dict[str, dict[str, Any]]:
    return {"net": sockets.net_fields(None, sockets.sock_tuple(strs[1]), asked_is_remote=True)}


def _listen(args: list[int], strs: list[Any]) -> dict[str, dict[str, Any]]:
    net = sockets.net_fields(None, sockets.sock_tuple(strs[1]), asked_is_remote=True)
    net["backlog"] = signed64(args[1])
    return {"net": net}


def _dns(args: list[int], strs: list[Any]) -> dict[str, dict[str, Any]]:
    sock = sockets.sock_tuple(strs[1])
    net = sockets.net_fields(sockets.sockaddr(strs[0]), sock, asked_is_remote=True)
    query = sockets.dns_query(strs[2], stream=net["type"] == "stream")
    return {"dns": query or {"id": None, "query": None, "qtype": None}, "net": net}


_NET = {
    EventType.CONNECT: ("connect", "an outgoing connection (its result too)", _connect),
    EventType.ACCEPT: ("accept", "an incoming connection accepted; net.daddr is the peer",
                       _accept),
    EventType.BIND: ("bind", "a socket bound to a local address", _bind),
    EventType.LISTEN: ("listen", "a socket listening for connections", _listen),
    EventType.DNS: ("dns", "a DNS query sent to port 53", _dns),
}


SPECS: dict[int, SysSpec] = {
    EventType.OPEN: _spec("open", "file", "open for writing, or of a watched path",
                          Path("path", 0), Arg("flags", 1, "flags_open"), Arg("mode", 2, "oct")),
    EventType.CREATE: _spec("create", "file", "a file created by open/openat/creat",
                            Path("path", 0), Arg("flags", 1, "flags_open"),
                            Arg("mode", 2, "oct")),
    EventType.UNLINK: _spec("unlink", "file", "a file removed", Path("path", 0)),
    EventType.RMDIR: _spec("rmdir", "file", "a directory removed", Path("path", 0)),
    EventType.RENAME: _spec("rename", "file", "a file moved or renamed",
                            Path("path", 0), Path("new_path", 2), Arg("flags", 2)),
    EventType.LINK: _spec("link", "file", "a hard link made", Path("path", 0),
                          Path("new_path", 2), Arg("flags", 2)),
    EventType.SYMLINK: _spec("symlink", "file", "a symbolic link made", Str("target", 0),
                             Path("path", 2)),
    EventType.CHMOD: _spec("chmod", "file", "permissions changed", Path("path", 0),
                           Arg("mode", 1, "oct"), Arg("flags", 2)),
    EventType.CHOWN: _spec("chown", "file", "owner changed", Path("path", 0), Arg("uid", 1),
                           Arg("gid", 2), Arg("flags", 3)),
    EventType.UTIMES: _spec("utimes", "file", "timestamps set (timestomping)",
                            Path("path", 0), Arg("atime", 1, "time"), Arg("mtime", 3, "time")),
    EventType.TRUNCATE: _spec("truncate", "file", "a file truncated", Path("path", 0),
                              Arg("length", 1)),
    **{t: SysSpec(name, "dns" if t == EventType.DNS else "net", (), desc, build)
       for t, (name, desc, build) in _NET.items()},
    EventType.SETSID: SysSpec("setsid", "setsid", (), "a new session (daemonising, detaching "
                              "from a terminal)", taskops.setsid),
    EventType.PRCTL: SysSpec("prctl", "prctl", (), "process renamed with PR_SET_NAME",
                             taskops.prctl),
    EventType.KILL: SysSpec("kill", "kill", (), "a signal sent (kill, tkill, tgkill)",
                            taskops.kill),
    EventType.PTRACE: SysSpec("ptrace", "ptrace", (), "ptrace: attach, seize and memory "
                              "writes (every request in the full profile)", taskops.ptrace),
    EventType.MEMFD_CREATE: SysSpec("memfd_create", "memfd", (), "an anonymous in-memory file "
                                    "(fileless execution)", taskops.memfd),
    EventType.EXEC_MEMORY: SysSpec("exec_memory", "memory", (), "executable memory mapped "
                                   "anonymously or made executable (mmap, mprotect)",
                                   taskops.exec_memory),
    EventType.SETUID: SysSpec("setuid", "setuid", (), "uid/gid changes (setuid, setreuid, "
                              "setresuid, setfsuid and the gid calls) and capset",
                              taskops.setuid),
    EventType.PRIVILEGE_ESCALATION: SysSpec(
        "privilege_escalation", "privilege_escalation", (),
        "a traced syscall returned with euid 0 to a caller that entered with another euid",
        taskops.escalation),
    EventType.MODULE_LOAD: SysSpec("module_load", "module", (), "kernel module load or unload "
                                   "(init_module, finit_module, delete_module)", taskops.module),
    EventType.BPF: SysSpec("bpf", "bpf", (), "BPF program loads and attachments",
                           taskops.bpf),
    EventType.MOUNT: SysSpec("mount", "mount", (Path("target", 2),), "a filesystem mounted",
                             taskops.mount),
    EventType.UMOUNT: SysSpec("umount", "mount", (Path("target", 0),), "a filesystem "
                              "unmounted", taskops.umount),
    EventType.NAMESPACE: SysSpec("namespace", "namespace", (), "namespaces entered or created "
                                 "(setns, unshare)", taskops.namespace),
    EventType.IO_URING: SysSpec("io_uring", "io_uring", (), "io_uring requests submitted: "
                                "opens, connects, renames... (every opcode in full)",
                                taskops.io_uring),
}

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def _time(sec: int, nsec: int) -> str | int | None:
    nsec = signed64(nsec)
    if nsec == UTIME_NOW:
        return "now"
    if nsec == UTIME_OMIT:
        return None
    return signed64(sec) * 1_000_000_000 + nsec


def slots(tail: bytes, lens: list[int], kinds: list[int], flags: int) -> list[Any]:
    """The string slots of one record: str, an absolute path str, bytes or None."""
    out: list[Any] = []
    pos = 0
    for i, (n, kind) in enumerate(zip(lens, kinds, strict=True)):
        raw = tail[pos : pos + n]
        pos += n
        if kind == StrKind.USER:
            out.append(raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace"))
        elif kind == StrKind.DPATH:
            parts = raw.split(b"\0")
            if parts and parts[-1] == b"":
                parts.pop()
            path = "/" + "/".join(p.decode("utf-8", "backslashreplace") for p in reversed(parts))
            if not flags & (SysFlags.PATH_ROOTED << i):
                path = "..." + path  # the walk stopped before the root
            out.append(path)
        elif kind == StrKind.BYTES:
            out.append(raw)
        else:
            out.append(None)
    return out


def resolve(given: str | None, base: str | None) -> str | None:
    """A path as given (or a kernel path), made absolute against its base directory.

    Not normalised: "a/../b" can differ from "b" when "a" is a symlink, and an
    audit trail must not claim more than the kernel was asked.
    """
    if given is None or given.startswith("/") or base is None:
        return given
    return posixpath.join(base, given)


def decode(spec: SysSpec, args: list[int], strs: list[Any], flags: int) -> dict[str, dict]:
    """The event's own objects, by name (`file`, `net`, `dns`...)."""
    if spec.build is not None:
        objs = spec.build(args, strs)
        if spec.fields:
            objs[spec.category].update(fields(spec, args, strs, flags))
        return objs
    obj = fields(spec, args, strs, flags)
    if flags & SysFlags.CREATED:
        obj["created"] = True
    if flags & SysFlags.WATCHED:
        obj["watched"] = True
    return {spec.category: obj}


def fields(spec: SysSpec, args: list[int], strs: list[Any], flags: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in spec.fields:
        if isinstance(f, Path):
            given, base = strs[f.slot], strs[f.slot + 1] if f.slot + 1 < len(strs) else None
            out[f.name] = resolve(given, base)
            if flags & (SysFlags.TRUNCATED << f.slot) or (
                f.slot + 1 < len(strs) and flags & (SysFlags.TRUNCATED << (f.slot + 1))
            ):
                out[f.name + "_truncated"] = True
        elif isinstance(f, Str):
            out[f.name] = strs[f.slot]
        elif f.kind == "time":
            out[f.name] = _time(args[f.index], args[f.index + 1])
        elif f.kind == "oct":
            out[f.name] = f"{args[f.index] & 0o7777:04o}"
        elif f.kind == "flags_open":
            out[f.name] = open_flags(args[f.index])
        else:
            out[f.name] = signed64(args[f.index])
    return out
