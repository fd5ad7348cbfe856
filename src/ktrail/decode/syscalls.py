"""What each syscall event's arguments and string slots mean, declared as data.

struct kt_sys_event carries arguments in one canonical order per event type
and up to four string slots; this table names them, so one generic decoder
serves every type and adding a type is a row here plus its BPF handler.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from ktrail.decode.schema import EventType, StrKind, SysFlags


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


@dataclass(frozen=True)
class SysSpec:
    name: str
    category: str            # the event's own object: "file", later "net", ...
    fields: tuple[Path | Str | Arg, ...]
    description: str


def _spec(name: str, category: str, description: str, *fields: Path | Str | Arg) -> SysSpec:
    return SysSpec(name, category, fields, description)


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
}

_O_FLAGS = [
    (0o1, "O_WRONLY"), (0o2, "O_RDWR"), (0o100, "O_CREAT"), (0o200, "O_EXCL"),
    (0o1000, "O_TRUNC"), (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"),
    (0o200000, "O_DIRECTORY"), (0o400000, "O_NOFOLLOW"), (0o2000000, "O_CLOEXEC"),
    (0o20200000, "O_TMPFILE"),
]
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def open_flags(flags: int) -> list[str]:
    names = [] if flags & 0o3 else ["O_RDONLY"]
    for bit, name in _O_FLAGS:
        if flags & bit == bit:
            names.append(name)
    return names


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _time(sec: int, nsec: int) -> str | int | None:
    nsec = _signed(nsec)
    if nsec == UTIME_NOW:
        return "now"
    if nsec == UTIME_OMIT:
        return None
    return _signed(sec) * 1_000_000_000 + nsec


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
            out[f.name] = _signed(args[f.index])
    return out
