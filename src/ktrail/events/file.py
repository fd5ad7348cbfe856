"""File events: opens of watched paths (every open for writing in `full`),
creates, removals, renames, links, permission, owner, timestamp and size
changes. bpf/file.bpf.c builds them; paths are absolute, rebuilt in the kernel."""

from __future__ import annotations

from typing import Any

from ktrail.events.model import (
    Arg,
    Decoding,
    Event,
    EventKind,
    Field,
    Objects,
    Path,
    Str,
    text_slot,
)
from ktrail.events.values import signed64

PATH = Field("file.path", "string", "the file (for `link` the existing one, for `symlink` the "
             "new link)")
PATH_TRUNCATED = Field("file.path_truncated", "bool", "present when `file.path` was longer "
                       "than 4096 bytes or 64 components (it then starts with `...`)")
NEW_PATH = Field("file.new_path", "string", "`rename`: the new name; `link`: the new link")
NEW_PATH_TRUNCATED = Field("file.new_path_truncated", "bool", "as `file.path_truncated`, for "
                           "`file.new_path`")
FLAGS_OPEN = Field("file.flags", "list of strings or int", "opens: the `O_*` flags; `rename`, "
                   "`link`, `chmod`, `chown`: the call's flags argument")
MODE = Field("file.mode", "string", "permission bits as an octal string (`4755` for setuid)")
CREATED = Field("file.created", "bool", "present when the open created the file")
WATCHED = Field("file.watched", "bool", "present when the path is watched (sensitive)")
PATHS = (PATH, PATH_TRUNCATED)
PAIR = (*PATHS, NEW_PATH, NEW_PATH_TRUNCATED, FLAGS_OPEN)


def _path(e: Event) -> str:
    return str(e["file"].get("path"))


def _pair(e: Event) -> str:
    f = e["file"]
    return f"{f.get('path')} -> {f.get('new_path')}"


_OPEN = (Path("path", 0), Arg("flags", 1, "flags_open"), Arg("mode", 2, "oct"))
_OPENS = ("open", "openat", "openat2", "creat")


def by_handle(args: list[int], strs: list[Any]) -> Objects:
    """open_by_handle_at: the handle as given, and the mount it was opened on."""
    raw = strs[2] if isinstance(strs[2], bytes) else b""
    htype = args[3] & 0xFFFFFFFF  # an int in struct file_handle
    return {"file": {"handle": {"type": htype - (1 << 32) if htype >= 1 << 31 else htype,
                                "size": args[4], "bytes": raw.hex(),
                                "mount_fd": signed64(args[0]),
                                "mount_path": text_slot(strs[3])}}}


_HANDLE = (
    Field("file.handle.type", "int", "`open_by_handle_at`: the handle's type (1: ext4/xfs inode "
          "and generation, as Shocker forges...)"),
    Field("file.handle.size", "int", "`open_by_handle_at`: the handle's length as the caller "
          "declared it"),
    Field("file.handle.bytes", "string", "`open_by_handle_at`: the handle's bytes, hex (at most "
          "128, the kernel's limit)"),
    Field("file.handle.mount_fd", "int", "`open_by_handle_at`: the fd naming the mount "
          "(-100: the working directory)"),
    Field("file.handle.mount_path", "string or null", "`open_by_handle_at`: that fd's path"),
)
_MEM_TARGET = (
    Field("file.mem_target.pid", "int or null", "`/proc/PID/mem` opens: the process whose "
          "memory it is (its tgid, whichever of `/proc/self`, `/proc/PID/task/TID` was used); "
          "null when it had exited"),
    Field("file.mem_target.exec_id", "string or null", "that process's identity, from the "
          "kernel"),
    Field("file.mem_target.exe", "string or null", "its program, from the process table"),
    Field("file.mem_target.comm", "string or null", "its comm, from the process table"),
    Field("file.mem_target.self", "bool", "the process opened its own memory"),
)


def _kind(name: str, id_: int, description: str, syscalls: tuple[str, ...],
          decoding: tuple, fields: tuple[Field, ...], summary=_path, default: bool = True,
          falco: tuple[str, ...] | None = None) -> EventKind:
    return EventKind(name, id_, "file", description, syscalls=syscalls, default=default,
                     decoding=Decoding("file", decoding), fields=fields, summary=summary,
                     path="file.path", falco=falco)


KINDS = (
    EventKind("open", 10, "file", "open for writing, or of a watched path, or of another "
              "process's memory (`/proc/PID/mem`); every `open_by_handle_at`",
              syscalls=(*_OPENS, "open_by_handle_at"),
              decoding=Decoding("file", _OPEN, by_syscall={"open_by_handle_at": by_handle}),
              fields=(*PATHS, FLAGS_OPEN, MODE, WATCHED, *_MEM_TARGET, *_HANDLE),
              summary=_path, path="file.path"),
    _kind("create", 11, "a file created by open/openat/creat", _OPENS, _OPEN,
          (*PATHS, FLAGS_OPEN, MODE, CREATED)),
    _kind("unlink", 12, "a file removed", ("unlink", "unlinkat"), (Path("path", 0),), PATHS,
          default=False),
    _kind("rmdir", 13, "a directory removed", ("rmdir", "unlinkat"), (Path("path", 0),), PATHS,
          default=False),
    _kind("rename", 14, "a file moved or renamed", ("rename", "renameat", "renameat2"),
          (Path("path", 0), Path("new_path", 2), Arg("flags", 2)), PAIR, _pair),
    _kind("link", 15, "a hard link made", ("link", "linkat"),
          (Path("path", 0), Path("new_path", 2), Arg("flags", 2)), PAIR, _pair),
    _kind("symlink", 16, "a symbolic link made", ("symlink", "symlinkat"),
          (Str("target", 0), Path("path", 2)),
          (Field("file.target", "string", "`symlink`: what the link points to, stored as "
                 "given, never resolved"), *PATHS),
          lambda e: f"{e['file'].get('path')} -> {e['file'].get('target')}"),
    _kind("chmod", 17, "permissions changed", ("chmod", "fchmod", "fchmodat", "fchmodat2"),
          (Path("path", 0), Arg("mode", 1, "oct"), Arg("flags", 2)), (*PATHS, MODE, FLAGS_OPEN),
          lambda e: f"{e['file'].get('mode')} {e['file'].get('path')}",
          falco=("chmod", "fchmod", "fchmodat")),
    _kind("chown", 18, "owner changed", ("chown", "lchown", "fchown", "fchownat"),
          (Path("path", 0), Arg("uid", 1), Arg("gid", 2), Arg("flags", 3)),
          (*PATHS, Field("file.uid", "int", "`chown`: the new owner (-1: unchanged)"),
           Field("file.gid", "int", "`chown`: the new group (-1: unchanged)"), FLAGS_OPEN),
          lambda e: f"{e['file'].get('uid')}:{e['file'].get('gid')} {e['file'].get('path')}"),
    _kind("utimes", 19, "timestamps set (timestomping)",
          ("utime", "utimes", "utimensat", "futimesat"),
          (Path("path", 0), Arg("atime", 1, "time"), Arg("mtime", 3, "time")),
          (*PATHS, Field("file.atime", "int, string or null", "`utimes`: access time set, ns "
                         "since the epoch, `\"now\"`, or null (left unchanged); a time past "
                         "64 bits of ns (a caller may ask for any) as its decimal text"),
           Field("file.mtime", "int, string or null", "`utimes`: modification time set, as "
                 "`file.atime`")),
          falco=("utimes", "utimensat", "futimesat")),
    _kind("truncate", 20, "a file truncated", ("truncate", "ftruncate"),
          (Path("path", 0), Arg("length", 1)),
          (*PATHS, Field("file.length", "int", "`truncate`: the new length")),
          lambda e: f"{e['file'].get('path')} to {e['file'].get('length')} bytes",
          default=False),
)
