"""Event objects for process, privilege and kernel syscall events.

Builders for decode/syscalls.py: each takes the record's canonical arguments
and string slots (see bpf/task.bpf.c and bpf/kernel.bpf.c) and returns the
event's objects by name.
"""

from __future__ import annotations

import posixpath
import signal
from typing import Any

from ktrail.decode import sockets

Objects = dict[str, dict[str, Any]]

_O_FLAGS = [
    (0o1, "O_WRONLY"), (0o2, "O_RDWR"), (0o100, "O_CREAT"), (0o200, "O_EXCL"),
    (0o1000, "O_TRUNC"), (0o2000, "O_APPEND"), (0o4000, "O_NONBLOCK"),
    (0o200000, "O_DIRECTORY"), (0o400000, "O_NOFOLLOW"), (0o2000000, "O_CLOEXEC"),
    (0o20200000, "O_TMPFILE"),
]

def open_flags(flags: int) -> list[str]:
    names = [] if flags & 0o3 else ["O_RDONLY"]
    for bit, name in _O_FLAGS:
        if flags & bit == bit:
            names.append(name)
    return names



PTRACE_REQUESTS = {
    0: "PTRACE_TRACEME", 1: "PTRACE_PEEKTEXT", 2: "PTRACE_PEEKDATA", 3: "PTRACE_PEEKUSER",
    4: "PTRACE_POKETEXT", 5: "PTRACE_POKEDATA", 6: "PTRACE_POKEUSER", 7: "PTRACE_CONT",
    8: "PTRACE_KILL", 9: "PTRACE_SINGLESTEP", 12: "PTRACE_GETREGS", 13: "PTRACE_SETREGS",
    16: "PTRACE_ATTACH", 17: "PTRACE_DETACH", 24: "PTRACE_SYSCALL",
    0x4200: "PTRACE_SETOPTIONS", 0x4206: "PTRACE_SEIZE", 0x4207: "PTRACE_INTERRUPT",
}
PROT = [(1, "PROT_READ"), (2, "PROT_WRITE"), (4, "PROT_EXEC")]
MAP = [(0x01, "MAP_SHARED"), (0x02, "MAP_PRIVATE"), (0x10, "MAP_FIXED"),
       (0x20, "MAP_ANONYMOUS")]
MFD = [(1, "MFD_CLOEXEC"), (2, "MFD_ALLOW_SEALING"), (4, "MFD_HUGETLB"), (8, "MFD_NOEXEC_SEAL"),
       (16, "MFD_EXEC")]
CLONE_NS = [(0x00020000, "CLONE_NEWNS"), (0x02000000, "CLONE_NEWCGROUP"),
            (0x04000000, "CLONE_NEWUTS"), (0x08000000, "CLONE_NEWIPC"),
            (0x10000000, "CLONE_NEWUSER"), (0x20000000, "CLONE_NEWPID"),
            (0x40000000, "CLONE_NEWNET"), (0x00000080, "CLONE_NEWTIME"),
            (0x00000200, "CLONE_FS"), (0x00000400, "CLONE_FILES"),
            (0x00000800, "CLONE_SIGHAND"), (0x00000100, "CLONE_VM"),
            (0x00040000, "CLONE_SYSVSEM")]
MS = [(1, "MS_RDONLY"), (2, "MS_NOSUID"), (4, "MS_NODEV"), (8, "MS_NOEXEC"),
      (32, "MS_REMOUNT"), (4096, "MS_BIND"), (8192, "MS_MOVE"), (16384, "MS_REC"),
      (1 << 18, "MS_PRIVATE"), (1 << 19, "MS_SLAVE"), (1 << 20, "MS_SHARED")]
UMOUNT = [(1, "MNT_FORCE"), (2, "MNT_DETACH"), (4, "MNT_EXPIRE"), (8, "UMOUNT_NOFOLLOW")]
BPF_CMDS = {5: "BPF_PROG_LOAD", 8: "BPF_PROG_ATTACH", 17: "BPF_RAW_TRACEPOINT_OPEN",
            28: "BPF_LINK_CREATE"}
BPF_PROG_TYPES = [
    "unspec", "socket_filter", "kprobe", "sched_cls", "sched_act", "tracepoint", "xdp",
    "perf_event", "cgroup_skb", "cgroup_sock", "lwt_in", "lwt_out", "lwt_xmit", "sock_ops",
    "sk_skb", "cgroup_device", "sk_msg", "raw_tracepoint", "cgroup_sock_addr", "lwt_seg6local",
    "lirc_mode2", "sk_reuseport", "flow_dissector", "cgroup_sysctl", "raw_tracepoint_writable",
    "cgroup_sockopt", "tracing", "struct_ops", "ext", "lsm", "sk_lookup", "syscall", "netfilter",
]
CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
    "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
]
UNSET = (1 << 32) - 1  # (u32)-1 as passed for "unchanged"


def signed64(v: int) -> int:
    """A u64 argument as the signed value the syscall took (fds, -1 = unchanged)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def bits(value: int, table: list[tuple[int, str]]) -> list[str]:
    return [name for bit, name in table if value & bit == bit]


def caps(mask: int) -> list[str]:
    return [name for i, name in enumerate(CAPS) if mask >> i & 1]


def _id(v: int) -> int | None:
    v &= 0xFFFFFFFF
    return None if v == UNSET else v


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"SIG{num}" if num else "0"


def setsid(args: list[int], strs: list[Any]) -> Objects:
    return {"setsid": {}}


def prctl(args: list[int], strs: list[Any]) -> Objects:
    return {"prctl": {"option": "PR_SET_NAME", "name": strs[0], "old_name": strs[1]}}


def kill(args: list[int], strs: list[Any]) -> Objects:
    sig = args[1]
    return {"kill": {"signal": signal_name(sig), "signo": sig,
                     "target": {"pid": signed64(args[0]) or None, "tid": args[2] or None}}}


def ptrace(args: list[int], strs: list[Any]) -> Objects:
    req = args[0]
    return {"ptrace": {"request": PTRACE_REQUESTS.get(req, str(req)), "request_num": req,
                       "target": {"pid": signed64(args[1])}, "addr": args[2], "data": args[3]}}


def memfd(args: list[int], strs: list[Any]) -> Objects:
    return {"memfd": {"name": strs[0], "flags": bits(args[0], MFD)}}


def exec_memory(args: list[int], strs: list[Any]) -> Objects:
    anon = bool(args[3] & 0x20)
    return {"memory": {"addr": args[0], "len": args[1], "prot": bits(args[2], PROT),
                       "flags": bits(args[3], MAP), "anonymous": anon}}


def setuid(args: list[int], strs: list[Any]) -> Objects:
    return {"setuid": {"asked": {"real": _id(args[0]), "effective": _id(args[1]),
                                 "saved": _id(args[2])},
                       "now": {"real": args[3], "effective": args[4], "saved": args[5]}}}


def capset(args: list[int], strs: list[Any]) -> Objects:
    return {"setuid": {"caps": {"effective": caps(args[0]), "permitted": caps(args[1]),
                                "inheritable": caps(args[2])}}}


def escalation(args: list[int], strs: list[Any]) -> Objects:
    return {"privilege_escalation": {"euid_before": args[0], "uid": args[1], "euid": args[2],
                                     "suid": args[3]}}


def module(args: list[int], strs: list[Any]) -> Objects:
    return {"module": {"file": strs[0] if signed64(args[0]) != -1 else None,
                       "name": strs[0] if signed64(args[0]) == -1 else None,
                       "params": strs[1], "flags": args[1], "image_len": args[2] or None}}


def bpf(args: list[int], strs: list[Any]) -> Objects:
    cmd = args[0]
    out: dict[str, Any] = {"cmd": BPF_CMDS.get(cmd, str(cmd))}
    if cmd == 5:
        ptype = args[1]
        out.update(prog_type=BPF_PROG_TYPES[ptype] if ptype < len(BPF_PROG_TYPES) else ptype,
                   prog_name=strs[0] or "", insn_cnt=args[2], attach_type=args[3])
    elif cmd == 17:
        out.update(tracepoint=strs[0], prog_fd=args[5])
    else:
        out.update(attach_type=args[3], target_fd=signed64(args[4]), prog_fd=args[5])
    return {"bpf": out}


def mount(args: list[int], strs: list[Any]) -> Objects:
    return {"mount": {"source": strs[0], "fstype": strs[1], "flags": bits(args[0], MS)}}


def umount(args: list[int], strs: list[Any]) -> Objects:
    return {"mount": {"flags": bits(args[0], UMOUNT)}}


NS_NAMES = {0x00020000: "mnt", 0x02000000: "cgroup", 0x04000000: "uts", 0x08000000: "ipc",
            0x10000000: "user", 0x20000000: "pid", 0x40000000: "net", 0x00000080: "time"}


def namespace(args: list[int], strs: list[Any]) -> Objects:
    if signed64(args[1]) == -1:
        return {"namespace": {"op": "unshare", "flags": bits(args[0], CLONE_NS)}}
    # setns: nstype 0 means "whatever the fd is"; the inode is the namespace id.
    kind = NS_NAMES.get(args[0])
    return {"namespace": {"op": "setns", "flags": bits(args[0], CLONE_NS),
                          "ns": f"{kind or 'ns'}:[{args[2]}]" if args[2] else None}}


# IORING_OP_* by value (include/uapi/linux/io_uring.h).
IORING_OPS = [
    "NOP", "READV", "WRITEV", "FSYNC", "READ_FIXED", "WRITE_FIXED", "POLL_ADD", "POLL_REMOVE",
    "SYNC_FILE_RANGE", "SENDMSG", "RECVMSG", "TIMEOUT", "TIMEOUT_REMOVE", "ACCEPT",
    "ASYNC_CANCEL", "LINK_TIMEOUT", "CONNECT", "FALLOCATE", "OPENAT", "CLOSE", "FILES_UPDATE",
    "STATX", "READ", "WRITE", "FADVISE", "MADVISE", "SEND", "RECV", "OPENAT2", "EPOLL_CTL",
    "SPLICE", "PROVIDE_BUFFERS", "REMOVE_BUFFERS", "TEE", "SHUTDOWN", "RENAMEAT", "UNLINKAT",
    "MKDIRAT", "SYMLINKAT", "LINKAT", "MSG_RING", "FSETXATTR", "SETXATTR", "FGETXATTR",
    "GETXATTR", "SOCKET", "URING_CMD", "SEND_ZC", "SENDMSG_ZC", "READ_MULTISHOT", "WAITID",
    "FUTEX_WAIT", "FUTEX_WAKE", "FUTEX_WAITV", "FIXED_FD_INSTALL", "FTRUNCATE", "BIND", "LISTEN",
]
# Reported by default: what opens, connects, listens or changes names.
IORING_SECURITY_OPS = ("ACCEPT", "CONNECT", "OPENAT", "OPENAT2", "RENAMEAT", "UNLINKAT",
                       "MKDIRAT", "SYMLINKAT", "LINKAT", "SOCKET", "BIND", "LISTEN",
                       "URING_CMD", "FTRUNCATE", "FSETXATTR", "SETXATTR")


def uring_mask(all_ops: bool) -> int:
    """kt_uring_ops: one bit per reported opcode."""
    if all_ops:
        return (1 << 64) - 1
    return sum(1 << IORING_OPS.index(name) for name in IORING_SECURITY_OPS)


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
        # Joined, not normalised, as for syscall paths (decode/syscalls.resolve).
        obj["path"] = given if given.startswith("/") or base is None else posixpath.join(base,
                                                                                        given)
    if op < len(IORING_OPS) and IORING_OPS[op] in ("OPENAT", "OPENAT2"):
        obj["flags"] = open_flags(args[4])
        obj["fd"] = None  # the request's fd slot is not the open's; its dirfd is in the path
    out: Objects = {"io_uring": obj}
    asked, sock = sockets.sockaddr(strs[2]), sockets.sock_tuple(strs[3])
    if asked or sock:
        out["net"] = sockets.net_fields(asked, sock, asked_is_remote=True)
    return out
