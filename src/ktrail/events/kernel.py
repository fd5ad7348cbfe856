"""Kernel-facing events: module and BPF loads, mounts, namespaces and io_uring
requests (bpf/kernel.bpf.c, bpf/uring.bpf.c)."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from ktrail.events.model import (
    Decoding,
    Event,
    EventKind,
    Field,
    Hook,
    Objects,
    Path,
    resolve,
    text_slot,
)
from ktrail.events.net import NET_FIELDS, endpoint
from ktrail.events.values import (
    BPF_CMDS,
    BPF_PROG_TYPES,
    CLONE_NS,
    IORING_OPS,
    MS,
    NS_NAMES,
    UMOUNT,
    bits,
    net_fields,
    open_flags,
    signed64,
    sock_tuple,
    sockaddr,
)
from ktrail.strings import B64

B64_PATH = "path" + B64


def module(args: list[int], strs: list[Any]) -> Objects:
    what = text_slot(strs[0])
    return {"module": {"file": what if signed64(args[0]) != -1 else None,
                       "name": what if signed64(args[0]) == -1 else None,
                       "params": text_slot(strs[1]), "flags": args[1],
                       "image_len": args[2] or None}}


def bpf(args: list[int], strs: list[Any]) -> Objects:
    cmd = args[0]
    out: dict[str, Any] = {"cmd": BPF_CMDS.get(cmd, str(cmd))}
    if cmd == 5:
        ptype = args[1]
        out.update(prog_type=BPF_PROG_TYPES[ptype] if ptype < len(BPF_PROG_TYPES) else ptype,
                   prog_name=text_slot(strs[0]) or "", insn_cnt=args[2], attach_type=args[3])
    elif cmd == 17:
        out.update(tracepoint=text_slot(strs[0]), prog_fd=args[5])
    else:
        out.update(attach_type=args[3], target_fd=signed64(args[4]), prog_fd=args[5])
    return {"bpf": out}


def mount(args: list[int], strs: list[Any]) -> Objects:
    return {"mount": {"source": text_slot(strs[0]), "fstype": text_slot(strs[1]),
                      "flags": bits(args[0], MS)}}


def umount(args: list[int], strs: list[Any]) -> Objects:
    return {"mount": {"flags": bits(args[0], UMOUNT)}}


def namespace(args: list[int], strs: list[Any]) -> Objects:
    if signed64(args[1]) == -1:
        return {"namespace": {"op": "unshare", "flags": bits(args[0], CLONE_NS)}}
    # setns: nstype 0 means "whatever the fd is"; the inode is the namespace id.
    kind = NS_NAMES.get(args[0])
    return {"namespace": {"op": "setns", "flags": bits(args[0], CLONE_NS),
                          "ns": f"{kind or 'ns'}:[{args[2]}]" if args[2] else None}}


_NAMED = ("RENAMEAT", "LINKAT", "SYMLINKAT")
AT_REMOVEDIR = [(0x200, "AT_REMOVEDIR")]


def io_uring(args: list[int], strs: list[Any]) -> Objects:
    op = args[0]
    fd = signed64(args[1])
    obj: dict[str, Any] = {
        "opcode": f"IORING_OP_{IORING_OPS[op]}" if op < len(IORING_OPS) else str(op),
        "fd": fd if fd >= 0 else None,
        "user_data": args[2],
        "path": None,
    }
    if strs[0] is not None:
        given, base = strs[0], strs[1]
        # Joined, not normalised, as for syscall paths (model.resolve).
        obj["path"] = given if given.startswith("/") or base is None else posixpath.join(base,
                                                                                        given)
    name = IORING_OPS[op] if op < len(IORING_OPS) else None
    if name in ("OPENAT", "OPENAT2"):
        obj["flags"] = open_flags(args[4])
        obj["mode"] = f"{args[3] & 0o7777:04o}"
        obj["fd"] = None  # the request's fd slot is not the open's; its dirfd is in the path
    elif name in _NAMED:
        # Two names: slots 0-1 the old (a symlink's target, as given), 2-3 the new.
        obj["fd"] = None
        new = resolve(text_slot(strs[2]), text_slot(strs[3]))
        if name == "SYMLINKAT":
            f: dict[str, Any] = {"target": text_slot(strs[0]), "path": new}
        else:
            f = {"path": obj["path"], "new_path": new, "flags": args[4]}
        obj["path"] = f["path"]
        return {"io_uring": obj, "file": f}
    elif name in ("UNLINKAT", "MKDIRAT"):
        obj["fd"] = None
        if name == "MKDIRAT":
            obj["mode"] = f"{args[3] & 0o7777:04o}"
        else:
            obj["flags"] = bits(args[4], AT_REMOVEDIR)
        return {"io_uring": obj}
    out: Objects = {"io_uring": obj}
    asked, sock = sockaddr(strs[2]), sock_tuple(strs[3])
    if asked or sock:
        out["net"] = net_fields(asked, sock, asked_is_remote=True)
    return out


# An io_uring request's effect is the event its syscall would make: rules
# about opens and connects then see both doors without a rule of their own.
_WRITES = frozenset(("O_WRONLY", "O_RDWR", "O_TRUNC", "O_APPEND"))
# Not BIND: the kernel program does not read its address, and the socket's
# own is not bound yet at submit.
_AS_NET = {"IORING_OP_CONNECT": "connect", "IORING_OP_ACCEPT": "accept",
           "IORING_OP_LISTEN": "listen"}
_AS_FILE = {"IORING_OP_RENAMEAT": "rename", "IORING_OP_LINKAT": "link",
            "IORING_OP_SYMLINKAT": "symlink"}


def uring_effect(objs: Objects, watched: Callable[[str], bool]) -> tuple[str, Objects]:
    """The event type and objects an io_uring request stands for.

    Opens become `open` (watched path, or for writing) or `create` (O_CREAT),
    with the `file` object an open's syscall gives; renames, links, symlinks
    and unlinks their file events; connect, accept and listen their network
    events. The `io_uring` object stays beside them. Other requests (mkdir,
    socket...), and reads of unwatched files (which the syscall door does not
    report either), stay `io_uring` events.
    """
    u = objs["io_uring"]
    op = u["opcode"]
    if op in ("IORING_OP_OPENAT", "IORING_OP_OPENAT2"):
        path = u.get("path")
        flags = u.get("flags") or []
        if path is None:
            return "io_uring", objs
        path = _clean(path)
        f: dict[str, Any] = {"path": path, "flags": flags, "mode": u.get("mode")}
        if B64_PATH in u:
            f["path" + B64] = u[B64_PATH]
        if "O_CREAT" in flags:
            return "create", {"file": f, "io_uring": u}
        if watched(path):
            f["watched"] = True
        elif _WRITES.isdisjoint(flags):
            return "io_uring", objs
        return "open", {"file": f, "io_uring": u}
    kind = _AS_NET.get(op)
    if kind is not None and "net" in objs:
        return kind, objs
    if "file" in objs or op == "IORING_OP_UNLINKAT":
        f = objs.get("file")
        if f is None:  # unlink: its one name
            f = {"path": u.get("path")}
            if B64_PATH in u:
                f[B64_PATH] = u[B64_PATH]
        f = dict(f)
        for key in ("path", "new_path"):
            if isinstance(f.get(key), str):
                f[key] = _clean(f[key])
        kind = _AS_FILE.get(op)
        if op == "IORING_OP_UNLINKAT":
            kind = "rmdir" if "AT_REMOVEDIR" in (u.get("flags") or ()) else "unlink"
        if kind is not None and f.get("path") is not None:
            return kind, {**objs, "file": f}
    return "io_uring", objs


def _clean(path: str) -> str:
    """Empty and "." components dropped: they change nothing the kernel
    opens, and kept, they would let "/etc//shadow" pass rules that name
    "/etc/shadow". ".." is kept: behind a symlink it is not the lexical parent."""
    if not path.startswith("/"):
        return path
    return "/" + "/".join(c for c in path.split("/") if c not in ("", "."))


def _module_summary(e: Event) -> str:
    m = e["module"]
    what = m.get("file") or m.get("name") or (f"image of {m['image_len']} bytes"
                                              if m.get("image_len") else "")
    return f"{e['evt'].get('syscall') or 'module'} {what}".strip()


def _bpf_summary(e: Event) -> str:
    b = e["bpf"]
    extra = [str(b[k]) for k in ("prog_type", "prog_name", "tracepoint") if b.get(k)]
    return " ".join([str(b.get("cmd")), *extra])


def _mount_summary(e: Event) -> str:
    m = e["mount"]
    if e["evt"]["type"] == "umount":
        return str(m.get("target"))
    return f"{m.get('source')} on {m.get('target')} type {m.get('fstype')}"


def _ns_summary(e: Event) -> str:
    n = e["namespace"]
    return " ".join(str(x) for x in (n.get("op"), ",".join(n.get("flags") or []), n.get("ns"))
                    if x)


def _uring_summary(e: Event) -> str:
    u = e["io_uring"]
    what = u.get("path") or (endpoint(e["net"]) if e.get("net") else None)
    return f"{u.get('opcode')} {what or ''}".rstrip()


MOUNT_FLAGS = Field("mount.flags", "list of strings", "`MS_*` (mount) or `MNT_*` (umount)")
MOUNT_TARGET = (Field("mount.target", "string", "where, absolute"),
                Field("mount.target_truncated", "bool", "present when the target path was cut"))

KINDS = (
    EventKind("module_load", 34, "kernel", "kernel module load or unload (init_module, "
              "finit_module, delete_module)",
              syscalls=("init_module", "finit_module", "delete_module"),
              decoding=Decoding("module", build=module),
              fields=(Field("module.file", "string or null", "`finit_module`: the module file"),
                      Field("module.name", "string or null", "`delete_module`: the module"),
                      Field("module.params", "string or null", "parameters passed"),
                      Field("module.flags", "int", "the call's flags"),
                      Field("module.image_len", "int or null", "`init_module`: image size")),
              summary=_module_summary, path="module.file"),
    EventKind("bpf", 35, "kernel", "BPF program loads and attachments",
              syscalls=("bpf",), decoding=Decoding("bpf", build=bpf),
              fields=(Field("bpf.cmd", "string", "`BPF_PROG_LOAD`, `BPF_PROG_ATTACH`, "
                            "`BPF_LINK_CREATE`, `BPF_RAW_TRACEPOINT_OPEN`"),
                      Field("bpf.prog_type", "string", "loads: the program type"),
                      Field("bpf.prog_name", "string", "loads: the program name"),
                      Field("bpf.insn_cnt", "int", "loads: instruction count"),
                      Field("bpf.attach_type", "int", "the attach type"),
                      Field("bpf.target_fd", "int", "attachments: the target fd"),
                      Field("bpf.prog_fd", "int", "attachments: the program fd"),
                      Field("bpf.tracepoint", "string", "`BPF_RAW_TRACEPOINT_OPEN`: the "
                            "tracepoint")),
              summary=_bpf_summary),
    EventKind("mount", 36, "kernel", "a filesystem mounted",
              syscalls=("mount",),
              decoding=Decoding("mount", (Path("target", 2),), build=mount),
              fields=(Field("mount.source", "string", "what is mounted"),
                      Field("mount.fstype", "string", "filesystem type"),
                      *MOUNT_TARGET, MOUNT_FLAGS),
              summary=_mount_summary, path="mount.target"),
    EventKind("umount", 37, "kernel", "a filesystem unmounted",
              syscalls=("umount",),  # umount2(2): its tracepoint is sys_enter_umount
              decoding=Decoding("mount", (Path("target", 0),), build=umount),
              fields=(*MOUNT_TARGET, MOUNT_FLAGS),
              summary=_mount_summary, path="mount.target", falco=("umount", "umount2")),
    EventKind("namespace", 38, "kernel", "namespaces entered or created (setns, unshare)",
              syscalls=("unshare", "setns"), decoding=Decoding("namespace", build=namespace),
              fields=(Field("namespace.op", "string", "`unshare` or `setns`"),
                      Field("namespace.flags", "list of strings", "`CLONE_NEW*`"),
                      Field("namespace.ns", "string or null", "setns: the namespace entered, "
                            "as `/proc/PID/ns` shows it (`uts:[4026531838]`)")),
              summary=_ns_summary),
    EventKind("io_uring", 40, "kernel", "io_uring requests submitted that are not reported "
              "as the file or network event they amount to: mkdir, socket, bind, reads of "
              "unwatched files... (every opcode in full)",
              choices=(
                  Hook("tp_btf", ("kt_uring_submit",), "io_uring:io_uring_submit_req",
                       tracepoint="io_uring/io_uring_submit_req"),
                  # Its name before Linux 6.4 (Debian 12's 6.1).
                  Hook("tp_btf", ("kt_uring_submit_sqe",), "io_uring:io_uring_submit_sqe",
                       tracepoint="io_uring/io_uring_submit_sqe"),
              ),
              decoding=Decoding("io_uring", build=io_uring),
              fields=(Field("io_uring.opcode", "string", "`IORING_OP_OPENAT`..."),
                      Field("io_uring.fd", "int or null", "the request's target fd"),
                      Field("io_uring.user_data", "int", "the request's user data"),
                      Field("io_uring.path", "string or null", "the path of an open, "
                            "mkdir, unlink, rename (old name), link or symlink (the link), "
                            "resolved against its dirfd or cwd; else the target fd's path"),
                      Field("io_uring.flags", "list of strings", "opens: the `O_*` flags; "
                            "unlink: `AT_REMOVEDIR`"),
                      Field("io_uring.mode", "string", "opens, mkdir: the mode asked for, "
                            "octal"),
                      Field("io_uring.sqpoll", "bool", "submitted by the ring's kernel thread "
                            "(`IORING_SETUP_SQPOLL`): no syscall was made"),
                      *NET_FIELDS),
              summary=_uring_summary, path="io_uring.path", addr=True, falco=()),
)
