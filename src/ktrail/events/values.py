"""Value decoders shared by the event families: flag names, ids, signals,
socket addresses, kernel socket tuples and DNS questions, from raw arguments
and slot bytes."""

from __future__ import annotations

import errno
import ipaddress
import signal
import socket
import struct
from typing import Any

import dns.exception
import dns.message
import dns.rdatatype
import numpy as np

from ktrail.strings import decode


def signed64(v: int) -> int:
    """A u64 argument as the signed value the syscall took (fds, -1 = unchanged)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, f"E{code}")


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


def bits(value: int, table: list[tuple[int, str]]) -> list[str]:
    return [name for bit, name in table if value & bit == bit]


def caps(mask: int) -> list[str]:
    return [name for i, name in enumerate(CAPS) if mask >> i & 1]


def unset_id(v: int) -> int | None:
    v &= 0xFFFFFFFF
    return None if v == UNSET else v


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"SIG{num}" if num else "0"


NS_NAMES = {0x00020000: "mnt", 0x02000000: "cgroup", 0x04000000: "uts", 0x08000000: "ipc",
            0x10000000: "user", 0x20000000: "pid", 0x40000000: "net", 0x00000080: "time"}


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



# struct kt_sock_tuple (bpf/ktrail.h); checked against BTF by the contract test.
SOCK_TUPLE = np.dtype(
    [
        ("family", "<u2"),
        ("type", "<u2"),
        ("protocol", "<u2"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("_pad", "<u2", (3,)),
        ("saddr", "u1", (16,)),
        ("daddr", "u1", (16,)),
    ]
)
_TUPLE = struct.Struct("<HHHHH6x16s16s")

FAMILIES = {socket.AF_INET: "ipv4", socket.AF_INET6: "ipv6", socket.AF_UNIX: "unix",
            socket.AF_NETLINK: "netlink", socket.AF_PACKET: "packet"}
PROTOCOLS = {socket.IPPROTO_TCP: "tcp", socket.IPPROTO_UDP: "udp", socket.IPPROTO_ICMP: "icmp",
             socket.IPPROTO_ICMPV6: "icmpv6", 132: "sctp", 0: None}
TYPES = {socket.SOCK_STREAM: "stream", socket.SOCK_DGRAM: "dgram", socket.SOCK_RAW: "raw",
         socket.SOCK_SEQPACKET: "seqpacket"}


def _addr(family: int, raw: bytes) -> str | None:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(raw[:4]))
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(raw[:16]))
    return None


def sockaddr(raw: bytes | None) -> dict[str, Any] | None:
    """A user sockaddr (as the caller passed it) -> family, addr, port / path."""
    if not raw or len(raw) < 2:
        return None
    family = struct.unpack_from("<H", raw)[0]
    out: dict[str, Any] = {"family": FAMILIES.get(family, str(family))}
    if family == socket.AF_INET and len(raw) >= 8:
        out["port"] = struct.unpack_from(">H", raw, 2)[0]
        out["addr"] = _addr(family, raw[4:8])
    elif family == socket.AF_INET6 and len(raw) >= 24:
        out["port"] = struct.unpack_from(">H", raw, 2)[0]
        out["addr"] = _addr(family, raw[8:24])
    elif family == socket.AF_UNIX:
        path = raw[2:]
        if path[:1] == b"\0":  # abstract namespace: shown with a leading '@'
            out["path"] = "@" + decode(path[1:].split(b"\0", 1)[0])
        else:
            out["path"] = decode(path.split(b"\0", 1)[0])
    return out


def sock_tuple(raw: bytes | None) -> dict[str, Any] | None:
    """A kt_sock_tuple -> family, type, protocol, local and remote ends."""
    if not raw or len(raw) < _TUPLE.size:
        return None
    family, stype, proto, sport, dport, saddr, daddr = _TUPLE.unpack_from(raw)
    return {
        "family": FAMILIES.get(family, str(family)),
        "type": TYPES.get(stype & 0xF, str(stype)),
        "protocol": PROTOCOLS.get(proto, str(proto)),
        "saddr": _addr(family, saddr),
        "sport": sport,
        "daddr": _addr(family, daddr),
        "dport": dport,
    }


def net_fields(asked: dict[str, Any] | None, sock: dict[str, Any] | None,
               asked_is_remote: bool) -> dict[str, Any]:
    """The `net` object: the kernel's view of the socket, with what the caller
    asked for (a connect's destination, a bind's address) taking precedence."""
    out: dict[str, Any] = {"family": None, "type": None, "protocol": None, "saddr": None,
                           "sport": None, "daddr": None, "dport": None}
    if sock:
        out.update(sock)
        if not sock["dport"] and sock["daddr"] in (None, "0.0.0.0", "::"):
            out["daddr"] = out["dport"] = None  # not connected: no peer
    if asked:
        out["family"] = asked["family"]
        if "path" in asked:
            out["path"] = asked["path"]
        if "addr" in asked:
            addr, port = ("daddr", "dport") if asked_is_remote else ("saddr", "sport")
            out[addr] = asked["addr"]
            # Port 0 asks the kernel to choose; its choice is in the socket.
            if asked["port"] or not out[port]:
                out[port] = asked["port"]
    return out


def dns_query(payload: bytes | None, stream: bool) -> dict[str, Any] | None:
    """The question of a DNS query (TCP payloads start with a 2-byte length)."""
    if not payload:
        return None
    if stream:
        payload = payload[2:]
    try:
        msg = dns.message.from_wire(payload, question_only=True)
    except (dns.exception.DNSException, ValueError):
        return {"id": None, "query": None, "qtype": None, "malformed": True}
    if not msg.question:
        return {"id": msg.id, "query": None, "qtype": None}
    q = msg.question[0]
    return {"id": msg.id, "query": q.name.to_text(omit_final_dot=True),
            "qtype": dns.rdatatype.to_text(q.rdtype)}
