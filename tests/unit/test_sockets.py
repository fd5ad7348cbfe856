"""events/values.py: sockaddrs, kernel socket tuples, DNS questions."""

from __future__ import annotations

import socket
import struct

import dns.message

from ktrail.events import values as sockets


def test_sockaddr_ipv4_ipv6_unix_abstract() -> None:
    v4 = struct.pack("<H", socket.AF_INET) + struct.pack(">H", 443) + bytes([10, 0, 0, 1])
    assert sockets.sockaddr(v4 + bytes(8)) == {"family": "ipv4", "port": 443, "addr": "10.0.0.1"}
    v6 = (struct.pack("<H", socket.AF_INET6) + struct.pack(">H", 53) + bytes(4)
          + socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))
    assert sockets.sockaddr(v6) == {"family": "ipv6", "port": 53, "addr": "::1"}
    un = struct.pack("<H", socket.AF_UNIX) + b"/run/x.sock\0"
    assert sockets.sockaddr(un) == {"family": "unix", "path": "/run/x.sock"}
    abstract = struct.pack("<H", socket.AF_UNIX) + b"\0hidden"
    assert sockets.sockaddr(abstract)["path"] == "@hidden"
    assert sockets.sockaddr(b"") is None and sockets.sockaddr(b"\x02") is None


def tuple_bytes(family: int, sport: int, dport: int, saddr: bytes, daddr: bytes) -> bytes:
    return struct.pack("<HHHHH6x16s16s", family, socket.SOCK_STREAM, socket.IPPROTO_TCP,
                       sport, dport, saddr, daddr)


def test_sock_tuple_and_net_fields() -> None:
    raw = tuple_bytes(socket.AF_INET, 40000, 80, bytes([127, 0, 0, 1]), bytes([1, 2, 3, 4]))
    t = sockets.sock_tuple(raw)
    assert t == {"family": "ipv4", "type": "stream", "protocol": "tcp", "saddr": "127.0.0.1",
                 "sport": 40000, "daddr": "1.2.3.4", "dport": 80}
    # A bind to port 0: the kernel's choice (in the tuple) wins over the 0 asked.
    unbound = tuple_bytes(socket.AF_INET, 5555, 0, bytes([127, 0, 0, 1]), bytes(4))
    net = sockets.net_fields({"family": "ipv4", "addr": "127.0.0.1", "port": 0},
                             sockets.sock_tuple(unbound), asked_is_remote=False)
    assert (net["sport"], net["daddr"], net["dport"]) == (5555, None, None)


def test_dns_query_udp_and_tcp() -> None:
    wire = dns.message.make_query("evil.example.top", "TXT").to_wire()
    q = sockets.dns_query(wire, stream=False)
    assert q is not None and (q["query"], q["qtype"]) == ("evil.example.top", "TXT")
    tcp = struct.pack(">H", len(wire)) + wire
    assert sockets.dns_query(tcp, stream=True)["query"] == "evil.example.top"
    assert sockets.dns_query(b"\x01\x02garbage", stream=False)["malformed"] is True
    assert sockets.dns_query(None, stream=False) is None
