"""Network events against the real kernel, on loopback only."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rcode


@contextlib.contextmanager
def resolver_on_loopback() -> Iterator[str]:
    """A DNS server answering NXDOMAIN, for getent to ask; yields its address.

    Port 53 of a loopback address of its own (127.x.y.z, x > 0): another run
    of these tests may hold 127.0.0.1:53 meanwhile."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for attempt in range(20):
        addr = f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
        try:
            srv.bind((addr, 53))
            break
        except OSError as e:
            if e.errno != errno.EADDRINUSE or attempt == 19:
                raise
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = srv.recvfrom(2048)
            except TimeoutError:
                continue
            r = dns.message.make_response(dns.message.from_wire(data))
            r.set_rcode(dns.rcode.NXDOMAIN)
            srv.sendto(r.to_wire(), peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield addr
    finally:
        stop.set()
        t.join()
        srv.close()


CLIENT = textwrap.dedent(
    """
    import socket, sys
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(7)
    port = srv.getsockname()[1]
    c = socket.create_connection(("127.0.0.1", port))
    a, _ = srv.accept()
    print(port, c.getsockname()[1], flush=True)
    refused = socket.socket()
    try:
        refused.connect(("127.0.0.1", 1))
    except ConnectionRefusedError:
        pass
    u = socket.socket(socket.AF_UNIX)
    try:
        u.connect("/nonexistent-ktrail.sock")
    except FileNotFoundError:
        pass
    q = (bytes.fromhex("abcd01000001000000000000")
         + b"\\x04ktrl\\x07example\\x00\\x00\\x01\\x00\\x01")
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.sendmsg([q], [], 0, (sys.argv[1], 53))
    """
)


def test_connect_accept_bind_listen(sensor) -> None:
    s = sensor()
    with resolver_on_loopback() as resolver:
        p = subprocess.Popen([sys.executable, "-c", CLIENT, resolver], stdout=subprocess.PIPE,
                             text=True)
        out = p.communicate()[0]
    assert p.returncode == 0
    t = s.stop()
    port, cport = map(int, out.split())
    ev = [e for e in t.events if e["evt"]["type"] in ("connect", "accept", "bind", "listen",
                                                      "dns")
          and e["proc"]["pid"] == p.pid]
    ok = [e for e in ev if e["net"].get("sport") == port or e["net"].get("dport") == port]
    by = {e["evt"]["type"]: e["net"] for e in ok}
    assert by["bind"]["saddr"] == "127.0.0.1" and by["bind"]["sport"] == port
    assert by["listen"]["backlog"] == 7 and by["listen"]["daddr"] is None
    assert (by["connect"]["daddr"], by["connect"]["dport"], by["connect"]["sport"]) == (
        "127.0.0.1", port, cport)
    assert by["connect"]["protocol"] == "tcp" and by["connect"]["family"] == "ipv4"
    # The peer of an accept comes from the kernel even with no address buffer.
    assert (by["accept"]["daddr"], by["accept"]["dport"]) == ("127.0.0.1", cport)

    [refused] = [e for e in ev if e["evt"]["type"] == "connect" and e["net"]["dport"] == 1]
    assert refused["evt"]["error"] == "ECONNREFUSED"
    [unix] = [e for e in ev if e["net"].get("path") == "/nonexistent-ktrail.sock"]
    assert unix["evt"]["error"] == "ENOENT" and unix["net"]["family"] == "unix"
    [q] = [e for e in ev if e["evt"]["type"] == "dns"]
    assert q["dns"]["query"] == "ktrl.example" and q["dns"]["qtype"] == "A"
    assert q["evt"]["syscall"] == "sendmsg" and q["net"]["dport"] == 53


def test_getent_against_loopback_resolver_gives_query(sensor, tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    s = sensor()
    with resolver_on_loopback() as resolver:
        conf.write_text(f"nameserver {resolver}\noptions attempts:1 timeout:1\n")
        # A private mount namespace, so the host's resolv.conf is untouched.
        subprocess.run(["unshare", "-m", "sh", "-c",
                        f"mount --bind {conf} /etc/resolv.conf && "
                        "exec getent hosts example.invalid"], timeout=30)
    t = s.stop()
    # This test's getent: another run's, or any other, may query meanwhile.
    mine = [e for e in t.started_by(os.getpid(), "dns") if e["proc"]["comm"] == "getent"]
    queries = {(e["dns"]["query"], e["dns"]["qtype"]) for e in mine}
    assert ("example.invalid", "A") in queries
    [e] = [e for e in mine if e["dns"]["qtype"] == "A"][:1]
    assert e["net"]["daddr"] == resolver and e["net"]["protocol"] == "udp"


def test_udp_to_other_ports_is_not_dns(sensor) -> None:
    # The kernel filter must keep other UDP traffic out entirely.
    s = sensor()
    code = ("import socket; d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            "d.sendto(b'x' * 40, ('127.0.0.1', 5353))")
    p = subprocess.Popen([sys.executable, "-c", code])
    assert p.wait() == 0
    t = s.stop()
    assert t.by_pid(p.pid, "exec"), "the sensor saw the sender"
    assert not [e for e in t.by_pid(p.pid, "dns") if e["net"]["dport"] == 5353]
