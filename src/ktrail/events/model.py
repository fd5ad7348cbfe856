"""What an event type is: its kernel record, hooks, decoding, fields, summary.

One `EventKind` per type, declared next to its builders in the family
modules (`process`, `file`, `net`, `task`, `kernel`, `device`) and collected
in `registry`. Everything else — the loader's hook choice, the profiles, the
decoder, the text output, the store columns, the rule fields and
docs/events.md — reads it from there.
"""

from __future__ import annotations

import enum
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ktrail.events.values import open_flags, signed64
from ktrail.strings import decode as decode_text

Event = dict[str, Any]
Objects = dict[str, dict[str, Any]]


class StrKind(enum.IntEnum):
    """enum kt_str_kind: what a string slot of kt_sys_event holds."""

    NONE = 0
    USER = 1
    DPATH = 2
    BYTES = 3


class SysFlags(enum.IntFlag):
    """kt_sys_event.flags."""

    TRUNCATED = 1       # << slot
    PATH_ROOTED = 16    # << slot
    CREATED = 256
    WATCHED = 512
    SQPOLL = 1024       # io_uring: submitted by the ring's kernel thread
    PROC_MEM = 2048     # open: /proc/PID/mem; args[3], args[4] name its process


@dataclass(frozen=True)
class Field:
    """One event field: its dotted name, JSON type and a one-line meaning."""

    name: str
    type: str
    doc: str


@dataclass(frozen=True)
class Hook:
    mechanism: str           # a name from loader.features.MECHANISMS
    programs: tuple[str, ...]
    target: str              # what it attaches to, for reports
    # "category/name" of a tracepoint that must exist for this hook: names
    # change between kernel versions.
    tracepoint: str = ""


# --- decoding of struct kt_sys_event ------------------------------------------------


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
    kind: str = "int"  # int | oct | flags_open | time


Builder = Callable[[list[int], list[Any]], Objects]


@dataclass(frozen=True)
class Decoding:
    """How a kt_sys_event's canonical arguments and string slots become the
    event's objects: field by field into `obj`, and/or by a builder that
    returns the objects by name (a DNS event has `dns` and `net`)."""

    obj: str
    fields: tuple[Path | Str | Arg, ...] = ()
    build: Builder | None = None
    # Syscalls whose arguments mean something else (capset beside setuid).
    by_syscall: dict[str, Builder] | None = None


@dataclass(frozen=True)
class EventKind:
    name: str
    id: int                  # enum kt_event_type (bpf/ktrail.h)
    group: str               # docs/events.md section: process, file, net, task, kernel, device
    description: str
    # The C struct of its records (None: not a BPF record of its own).
    record: str | None = "kt_sys_event"
    # Hooks other than syscalls, alternatives best first: exactly one is used.
    choices: tuple[Hook, ...] = ()
    # The syscalls whose entry and exit produce it (for exec, its failures),
    # in enum kt_syscall order for new ones. Hooked by fentry/fexit on the
    # syscall function where the kernel allows, else by its tracepoints.
    syscalls: tuple[str, ...] = ()
    default: bool = True     # in the default profile (every type is in `full`)
    decoding: Decoding | None = None
    fields: tuple[Field, ...] = ()   # the type's own fields
    # The telling detail of one event, for text output and `ktrail tree`.
    summary: Callable[[Event], str] = lambda e: ""
    # Store columns: the dotted path of its main path, and whether it has a
    # remote address (net.daddr/dport).
    path: str | None = None
    addr: bool = False
    # Falco's names for it (`evt.type in (open, openat)`); None: its syscalls.
    falco: tuple[str, ...] | None = None

    @property
    def falco_names(self) -> tuple[str, ...]:
        return self.syscalls if self.falco is None else self.falco


# --- generic slot decoding ------------------------------------------------------------

UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2


def text(b: bytes) -> str:
    # Lossless: undecodable bytes survive joins and reach the event as
    # U+FFFD plus a `_b64` sibling with the exact bytes (ktrail.strings).
    return decode_text(b)


def text_slot(v: Any) -> str | None:
    """A slot its type reads as text. A record whose slot kind says otherwise
    contradicts its type: TypeError, which the enricher counts as malformed."""
    if v is None or isinstance(v, str):
        return v
    raise TypeError(f"a text slot holds {type(v).__name__}")


_USER, _DPATH, _BYTES = int(StrKind.USER), int(StrKind.DPATH), int(StrKind.BYTES)
_NO_STRINGS: list[Any] = [None] * 4


def slots(tail: bytes, lens: list[int], kinds: list[int], flags: int) -> list[Any]:
    """The string slots of one record: str, an absolute path str, bytes or None."""
    if not tail and not any(kinds):
        return _NO_STRINGS[: len(kinds)]  # a new list
    out: list[Any] = []
    pos = 0
    for i, (n, kind) in enumerate(zip(lens, kinds, strict=True)):
        raw = tail[pos : pos + n]
        pos += n
        if kind == _USER:
            out.append(text(raw.split(b"\0", 1)[0]))
        elif kind == _DPATH:
            parts = raw.split(b"\0")
            if parts and parts[-1] == b"":
                parts.pop()
            path = "/" + "/".join(text(p) for p in reversed(parts))
            if not flags & (SysFlags.PATH_ROOTED << i):
                path = "..." + path  # the walk stopped before the root
            out.append(path)
        elif kind == _BYTES:
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


def _time(sec: int, nsec: int) -> str | int | None:
    nsec = signed64(nsec)
    if nsec == UTIME_NOW:
        return "now"
    if nsec == UTIME_OMIT:
        return None
    ns = signed64(sec) * 1_000_000_000 + nsec
    # A caller may ask for any second: past 64 bits JSON has no integer for
    # it, so it is written as its decimal text.
    return ns if -(1 << 63) <= ns < 1 << 63 else str(ns)


def decode_fields(d: Decoding, args: list[int], strs: list[Any], flags: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in d.fields:
        if isinstance(f, Path):
            given = text_slot(strs[f.slot])
            base = text_slot(strs[f.slot + 1]) if f.slot + 1 < len(strs) else None
            out[f.name] = resolve(given, base)
            if flags & (SysFlags.TRUNCATED << f.slot) or (
                f.slot + 1 < len(strs) and flags & (SysFlags.TRUNCATED << (f.slot + 1))
            ):
                out[f.name + "_truncated"] = True
        elif isinstance(f, Str):
            out[f.name] = text_slot(strs[f.slot])
        elif f.kind == "time":
            out[f.name] = _time(args[f.index], args[f.index + 1])
        elif f.kind == "oct":
            out[f.name] = f"{args[f.index] & 0o7777:04o}"
        elif f.kind == "flags_open":
            out[f.name] = open_flags(args[f.index])
        else:
            out[f.name] = signed64(args[f.index])
    return out


def decode(d: Decoding, args: list[int], strs: list[Any], flags: int,
           syscall: str | None = None) -> Objects:
    """The event's own objects, by name (`file`, `net`, `dns`...)."""
    build = d.by_syscall.get(syscall, d.build) if d.by_syscall and syscall else d.build
    if build is not None:
        objs = build(args, strs)
        if d.fields:
            objs[d.obj].update(decode_fields(d, args, strs, flags))
    else:
        objs = {d.obj: decode_fields(d, args, strs, flags)}
    if flags & (SysFlags.CREATED | SysFlags.WATCHED | SysFlags.PROC_MEM):
        obj = objs[d.obj]
        if flags & SysFlags.CREATED:
            obj["created"] = True
        if flags & SysFlags.WATCHED:
            obj["watched"] = True
        if flags & SysFlags.PROC_MEM:
            # The enricher names it (exec_id, exe, comm, self) from the table.
            obj["mem_target"] = {"pid": args[3] or None, "start_ns": args[4]}
    return objs
