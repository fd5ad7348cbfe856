"""Socket addresses, kernel socket tuples and DNS queries from raw slot bytes."""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

import dns.exception
import dns.message
import dns.rdatatype
import numpy as np

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
            out["path"] = "@" + path[1:].split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
        else:
            out["path"] = path.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
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
