"""Fields a condition can read: event JSON paths, and fields derived from them.

A field resolves once, at compile time, to a getter: event dict -> value.
Values are scalars, lists (a list field matches when any element does, as
Falco's multi-value fields do) or None (absent).

Native names are the event's own dotted paths (docs/events.md), plus a few
derived ones (proc.cmdline, proc.pname, proc.aname[N]...). The Falco
dialect maps Falco's field names onto the same events where the meaning is
the same; a Falco field with no counterpart is reported by name.
"""

from __future__ import annotations

import difflib
import os.path
import re
from collections.abc import Callable
from typing import Any

from ktrail.events.registry import FIELDS, KINDS
from ktrail.units import Rfc3339Parser, TimeSyntaxError

Event = dict[str, Any]
Getter = Callable[[Event], Any]


class UnknownField(ValueError):
    pass


def path_getter(path: str) -> Getter:
    keys = tuple(path.split("."))
    if len(keys) == 2:
        a, b = keys

        def get2(e: Event) -> Any:
            o = e.get(a)
            return o.get(b) if isinstance(o, dict) else None
        return get2

    def get(e: Event) -> Any:
        o: Any = e
        for k in keys:
            if not isinstance(o, dict):
                return None
            o = o.get(k)
        return o
    return get


def _basename(p: Any) -> Any:
    return os.path.basename(p) if isinstance(p, str) else None


def _proc_name(p: dict[str, Any] | None) -> str | None:
    if not p:
        return None
    exe = p.get("exe")
    return os.path.basename(exe) if exe else p.get("comm")


def _cmdline(e: Event) -> str | None:
    args = e["proc"].get("args")
    return " ".join(args) if args else e["proc"].get("comm")


def _pname(e: Event) -> str | None:
    return _proc_name(e["proc"].get("parent"))


def _pcmdline(e: Event) -> str | None:
    p = e["proc"].get("parent") or {}
    args = p.get("args")
    return " ".join(args) if args else p.get("comm")


def _ancestors(e: Event) -> list[dict[str, Any]]:
    return e["proc"].get("ancestors") or []


def _aname_all(e: Event) -> list[str]:
    return [n for a in _ancestors(e) if (n := _proc_name(a))]


def _aexe_all(e: Event) -> list[str]:
    return [a["exe"] for a in _ancestors(e) if a.get("exe")]


def _file_name(e: Event) -> str | None:
    f = e.get("file")
    return _basename(f.get("path")) if f else None


def _file_dir(e: Event) -> str | None:
    f = e.get("file")
    p = f.get("path") if f else None
    return os.path.dirname(p) if isinstance(p, str) else None


def _dns_tld(e: Event) -> str | None:
    q = (e.get("dns") or {}).get("query")
    return q.rsplit(".", 1)[-1].lower() if q else None


_TIME = Rfc3339Parser()


def _proc_duration(e: Event) -> int | None:
    # Falco's proc.duration: ns from the process's start to this event.
    start, t = e["proc"].get("start_time"), e["evt"].get("time")
    if not start or not t:
        return None
    if isinstance(t, int) and isinstance(start, int):  # Times, in the sensor
        return t - start
    try:
        return _TIME(t) - _TIME(start)
    except TimeSyntaxError:
        return None


# Derived native fields.
DERIVED: dict[str, tuple[Getter, str]] = {
    "proc.cmdline": (_cmdline, "argv joined by spaces"),
    "proc.pname": (_pname, "name of the creating process"),
    "proc.pexe": (path_getter("proc.parent.exe"), "exe of the creating process"),
    "proc.pcmdline": (_pcmdline, "argv of the creating process, joined"),
    "proc.aname": (_aname_all, "names of all ancestors (any matches)"),
    "proc.aexe": (_aexe_all, "exes of all ancestors (any matches)"),
    "proc.duration": (_proc_duration, "ns from the process's start to the event"),
    "file.name": (_file_name, "basename of file.path"),
    "file.directory": (_file_dir, "directory of file.path"),
    "dns.tld": (_dns_tld, "last label of dns.query, lower case"),
}

# A `%field` in a rule's output template (checked when the rule loads).
TEMPLATE_FIELD = re.compile(r"%([A-Za-z_][A-Za-z0-9_.]*(?:\[\d+\])?)")
_INDEXED = re.compile(r"^(proc\.(?:aname|aexe|acomm|apid|aexec_id))\[(\d+)\]$")


def _ancestor_getter(what: str, n: int) -> Getter:
    # [0] is the process itself, [1] its creator, as in Falco.
    key = {"aname": None, "aexe": "exe", "acomm": "comm", "apid": "pid",
           "aexec_id": "exec_id"}[what]

    def get(e: Event) -> Any:
        if n == 0:
            p = e["proc"]
        else:
            anc = _ancestors(e)
            if n > len(anc):
                return None
            p = anc[n - 1]
        return _proc_name(p) if key is None else p.get(key)
    return get


# Every event field, from the registry (docs/events.md is checked against it).
# A typo in a rule must be an error, not a condition that never matches.
KNOWN = frozenset(FIELDS)
# Documented as RFC 3339 strings; a rule compares the text, as in the JSON.
_TIMES = frozenset(("evt.time", "proc.start_time"))


def _text(path: str) -> Getter:
    get = path_getter(path)

    def text(e: Event) -> Any:
        v = get(e)
        return None if v is None else str(v)
    return text


def native(name: str) -> Getter:
    if name in DERIVED:
        return DERIVED[name][0]
    m = _INDEXED.match(name)
    if m:
        return _ancestor_getter(m.group(1).split(".")[1], int(m.group(2)))
    if name in KNOWN:
        return _text(name) if name in _TIMES else path_getter(name)
    near = difflib.get_close_matches(name, sorted(KNOWN | DERIVED.keys()), n=3)
    hint = f"; did you mean {' or '.join(near)}?" if near else " (docs/events.md lists them)"
    raise UnknownField(f"unknown field {name!r}{hint}")


# --- the Falco dialect ---------------------------------------------------

# Falco's syscall names for each ktrail event type: `evt.type in (open,
# openat)` in a Falco rule means our open and create events.
FALCO_EVT_TYPES: dict[str, tuple[str, ...]] = {k.name: k.falco_names for k in KINDS
                                                if k.falco_names}
FALCO_TO_TYPES: dict[str, set[str]] = {}
for _t, _names in FALCO_EVT_TYPES.items():
    for _n in _names:
        FALCO_TO_TYPES.setdefault(_n, set()).add(_t)


def _falco_evt_type(e: Event) -> Any:
    sc = e["evt"].get("syscall")
    # Work submitted through io_uring (evt.syscall io_uring_enter, or none
    # under SQPOLL) is named by its effect, as the syscall would be.
    if sc and sc != "io_uring_enter":
        return "umount2" if sc == "umount" else sc
    return FALCO_EVT_TYPES.get(e["evt"]["type"], (e["evt"]["type"],))[0]


def _falco_args(e: Event) -> str | None:
    args = e["proc"].get("args") or []
    return " ".join(args[1:])


def _falco_cmdline(e: Event) -> str | None:
    args = e["proc"].get("args") or []
    name = e["proc"].get("name") or e["proc"].get("comm")
    return " ".join([name or "", *args[1:]])


def _falco_fd_name(e: Event) -> Any:
    f = e.get("file")
    if f:
        return f.get("new_path") if e["evt"]["type"] in ("rename", "link") else f.get("path")
    n = e.get("net")
    if n:
        if n.get("path"):
            return n["path"]
        return (f"{n.get('saddr')}:{n.get('sport')}->{n.get('daddr')}:{n.get('dport')}"
                if n.get("daddr") else None)
    return None


def _falco_container_id(e: Event) -> str:
    c = e.get("container")
    return c["id"] if c and c.get("id") else "host"


def _falco_res(e: Event) -> Any:
    err = e["evt"].get("error")
    if err:
        return err
    return "SUCCESS" if "retval" in e["evt"] else None


def _open_mode(write: bool) -> Getter:
    def get(e: Event) -> Any:
        flags = (e.get("file") or {}).get("flags")
        if e["evt"]["type"] not in ("open", "create") or not isinstance(flags, list):
            return None
        writes = "O_WRONLY" in flags or "O_RDWR" in flags
        return writes if write else (not writes or "O_RDWR" in flags)
    return get


# Falco's server and client ends: a process that connects (or sends a DNS
# query) is the client, so the server is the remote end; after accept, bind
# or listen it is the server.
_CLIENT_TYPES = frozenset({"connect", "dns"})


def _end(server: bool, what: str) -> Getter:
    def get(e: Event) -> Any:
        n = e.get("net")
        if not n:
            return None
        remote = (e["evt"]["type"] in _CLIENT_TYPES) == server
        return n.get(("d" if remote else "s") + what)
    return get


def _falco_ips(e: Event) -> list[str]:
    n = e.get("net") or {}
    return [a for a in (n.get("saddr"), n.get("daddr")) if a]


# Fields whose values are IP addresses compared as networks: `fd.net =
# "127.0.0.0/8"` asks whether the address is in 127.0.0.0/8.
NETWORK_FIELDS = frozenset({"fd.net", "fd.snet", "fd.cnet", "fd.rnet", "fd.lnet"})


def _falco_typechar(e: Event) -> Any:
    if e.get("file") is not None:
        return "f"
    n = e.get("net")
    if n:
        return {"ipv4": "4", "ipv6": "6", "unix": "u"}.get(n.get("family"), "o")
    return None


def _falco_fd_type(e: Event) -> Any:
    if e.get("file") is not None:
        return "file"
    n = e.get("net")
    if n:
        return {"ipv4": "ipv4", "ipv6": "ipv6", "unix": "unix"}.get(n.get("family"))
    return None


def _falco_fd_num(e: Event) -> Any:
    # The fd an open returned; the one a network call used is not kept.
    if e["evt"]["type"] in ("open", "create"):
        return e["evt"].get("retval")
    return None


FALCO: dict[str, Getter] = {
    "evt.type": _falco_evt_type,
    "evt.dir": lambda e: "<",
    "evt.res": _falco_res,
    "evt.rawres": path_getter("evt.retval"),
    "evt.failed": lambda e: bool(e["evt"].get("error")),
    "evt.is_open_write": _open_mode(True),
    "evt.is_open_read": _open_mode(False),
    "evt.time": _text("evt.time"),
    "evt.num": path_getter("evt.seq"),
    "fd.typechar": _falco_typechar,
    "fd.type": _falco_fd_type,
    "fd.num": _falco_fd_num,
    "proc.pexe": lambda e: ((e["proc"].get("parent") or {}).get("args") or [None])[0],
    "proc.is_exe_from_memfd": lambda e: str(e["proc"].get("exe") or "").startswith("/memfd:"),
    "evt.arg.mode": path_getter("file.mode"),
    "evt.arg.cmd": path_getter("bpf.cmd"),
    "proc.name": path_getter("proc.name"),
    "proc.exepath": path_getter("proc.exe"),
    "proc.exe": lambda e: (e["proc"].get("args") or [None])[0],
    "proc.args": _falco_args,
    "proc.cmdline": _falco_cmdline,
    "proc.pid": path_getter("proc.pid"),
    "proc.ppid": path_getter("proc.ppid"),
    "proc.cwd": path_getter("proc.cwd"),
    "proc.pname": _pname,
    "proc.pexepath": path_getter("proc.parent.exe"),
    "proc.pcmdline": _pcmdline,
    "proc.aname": _aname_all,
    "proc.aexepath": _aexe_all,
    "proc.duration": _proc_duration,
    "user.name": path_getter("user.name"),
    "user.uid": path_getter("user.uid"),
    "user.loginuid": path_getter("user.auid"),
    "group.gid": path_getter("proc.gid"),
    "container.id": _falco_container_id,
    "fd.name": _falco_fd_name,
    "fd.filename": lambda e: _basename(_falco_fd_name(e)),
    "fd.directory": lambda e: (os.path.dirname(n) if isinstance(n := _falco_fd_name(e), str)
                               and n.startswith("/") else None),
    "fd.nameraw": _falco_fd_name,
    "fd.ip": _falco_ips,
    "fd.sip": _end(True, "addr"),
    "fd.sport": _end(True, "port"),
    "fd.cip": _end(False, "addr"),
    "fd.cport": _end(False, "port"),
    "fd.rip": path_getter("net.daddr"),
    "fd.rport": path_getter("net.dport"),
    "fd.lip": path_getter("net.saddr"),
    "fd.lport": path_getter("net.sport"),
    "fd.port": lambda e: [x for x in ((e.get("net") or {}).get("sport"),
                                      (e.get("net") or {}).get("dport")) if x is not None],
    "fd.sockfamily": lambda e: {"ipv4": "ip", "ipv6": "ip", "unix": "unix"}.get(
        (e.get("net") or {}).get("family") or ""),
    "fd.net": _falco_ips,
    "fd.snet": _end(True, "addr"),
    "fd.cnet": _end(False, "addr"),
    "fd.rnet": path_getter("net.daddr"),
    "fd.lnet": path_getter("net.saddr"),
    "fd.l4proto": path_getter("net.protocol"),
    "evt.arg.newpath": path_getter("file.new_path"),
    "evt.arg.oldpath": path_getter("file.path"),
    "evt.arg.target": path_getter("file.target"),
    "evt.arg.linkpath": path_getter("file.path"),
    "evt.arg.name": lambda e: ((e.get("file") or {}).get("path")
                               or (e.get("memfd") or {}).get("name")),
    "evt.arg.path": path_getter("file.path"),
    "evt.arg.filename": path_getter("exec.filename"),
    "evt.arg.request": path_getter("ptrace.request"),
    "evt.arg.flags": path_getter("namespace.flags"),
}
_FALCO_INDEXED = re.compile(r"^proc\.(aname|aexepath|aexe|apid)\[(\d+)\]$")


def falco(name: str) -> Getter:
    if name in FALCO:
        return FALCO[name]
    m = _FALCO_INDEXED.match(name)
    if m:
        what = {"aname": "aname", "aexepath": "aexe", "aexe": "aexe", "apid": "apid"}[m.group(1)]
        return _ancestor_getter(what, int(m.group(2)))
    raise UnknownField(f"Falco field {name!r} has no ktrail counterpart")


def resolve(name: str, dialect: str = "ktrail") -> Getter:
    return falco(name) if dialect == "falco" else native(name)


def evt_types_for(field: str, values: list[str], dialect: str) -> set[str] | None:
    """The ktrail event types an `evt.type` test can match, for indexing."""
    if field != "evt.type":
        return None
    if dialect == "falco":
        out: set[str] = set()
        for v in values:
            out |= FALCO_TO_TYPES.get(v, set())
        return out
    return set(values)
