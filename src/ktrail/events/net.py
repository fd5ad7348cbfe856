"""Network events: connect, accept, bind, listen and DNS queries.

The `net` object is the kernel's view of the socket after the call, with
what the caller asked for (a connect's destination, a bind's address)
where that is more exact (bpf/net.bpf.c)."""

from __future__ import annotations

from typing import Any

from ktrail.events.model import Decoding, Event, EventKind, Field, Objects
from ktrail.events.values import dns_query, net_fields, signed64, sock_tuple, sockaddr

NET_FIELDS = (
    Field("net.family", "string", "`ipv4`, `ipv6`, `unix`, `netlink`, `packet`"),
    Field("net.type", "string", "`stream`, `dgram`, `raw`, `seqpacket`"),
    Field("net.protocol", "string or null", "`tcp`, `udp`, `icmp`..."),
    Field("net.saddr", "string", "local address"),
    Field("net.sport", "int", "local port"),
    Field("net.daddr", "string or null", "remote address; null when not connected"),
    Field("net.dport", "int or null", "remote port; null when not connected"),
    Field("net.path", "string", "unix sockets: the path (`@name` for the abstract namespace)"),
)
BACKLOG = Field("net.backlog", "int", "`listen` only: the backlog asked for")
DNS_FIELDS = (
    Field("dns.query", "string", "the name asked for, without the final dot"),
    Field("dns.qtype", "string", "`A`, `AAAA`, `TXT`..."),
    Field("dns.id", "int", "the query id"),
    Field("dns.malformed", "bool", "present when the payload was not a DNS message"),
)


def endpoint(n: dict[str, Any]) -> str:
    """The telling end of a socket: the peer when connected, else the unix
    path, else the local address."""
    if n.get("daddr") is not None:
        peer = n["daddr"] if ":" not in str(n["daddr"]) else f"[{n['daddr']}]"
        return f"{peer}:{n.get('dport')}"
    if n.get("path"):
        return str(n["path"])
    return f"{n.get('saddr')}:{n.get('sport')}"


def _net_summary(e: Event) -> str:
    return endpoint(e["net"])


def _connect(args: list[int], strs: list[Any]) -> Objects:
    return {"net": net_fields(sockaddr(strs[0]), sock_tuple(strs[1]), asked_is_remote=True)}


def _bind(args: list[int], strs: list[Any]) -> Objects:
    return {"net": net_fields(sockaddr(strs[0]), sock_tuple(strs[1]), asked_is_remote=False)}


def _accept(args: list[int], strs: list[Any]) -> Objects:
    return {"net": net_fields(None, sock_tuple(strs[1]), asked_is_remote=True)}


def _listen(args: list[int], strs: list[Any]) -> Objects:
    net = net_fields(None, sock_tuple(strs[1]), asked_is_remote=True)
    net["backlog"] = signed64(args[1])
    return {"net": net}


def _dns(args: list[int], strs: list[Any]) -> Objects:
    sock = sock_tuple(strs[1])
    net = net_fields(sockaddr(strs[0]), sock, asked_is_remote=True)
    query = dns_query(strs[2], stream=net["type"] == "stream")
    return {"dns": query or {"id": None, "query": None, "qtype": None}, "net": net}


def _dns_summary(e: Event) -> str:
    d = e["dns"]
    return f"{d.get('query')} {d.get('qtype') or ''}".rstrip()


KINDS = (
    EventKind("connect", 21, "net", "an outgoing connection (its result too)",
              syscalls=("connect",), decoding=Decoding("net", build=_connect),
              fields=NET_FIELDS, summary=_net_summary, addr=True),
    EventKind("accept", 22, "net", "an incoming connection accepted; net.daddr is the peer",
              syscalls=("accept", "accept4"), decoding=Decoding("net", build=_accept),
              fields=NET_FIELDS, summary=_net_summary, addr=True),
    EventKind("bind", 23, "net", "a socket bound to a local address",
              syscalls=("bind",), decoding=Decoding("net", build=_bind),
              fields=NET_FIELDS, summary=_net_summary, addr=True),
    EventKind("listen", 24, "net", "a socket listening for connections",
              syscalls=("listen",), decoding=Decoding("net", build=_listen),
              fields=(*NET_FIELDS, BACKLOG), summary=_net_summary, addr=True),
    EventKind("dns", 25, "net", "a DNS query sent to port 53",
              syscalls=("sendto", "sendmsg", "sendmmsg"), decoding=Decoding("dns", build=_dns),
              fields=(*DNS_FIELDS, *NET_FIELDS), summary=_dns_summary, addr=True),
)
