"""Device events from the kernel's uevent broadcasts (NETLINK_KOBJECT_UEVENT).

The kernel announces every device added, removed, bound or changed (USB
sticks, disks, network interfaces) on this netlink group; udev listens to the
same messages. They carry no process: the kernel sent them, so `proc` is the
kernel (pid 0). Read without blocking, in the run loop.
"""

from __future__ import annotations

import socket
from typing import Any

from ktrail.strings import decode, for_json
from ktrail.units import Clock

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
MAX_PER_DRAIN = 1024

Event = dict[str, Any]


def parse(msg: bytes) -> dict[str, str] | None:
    """'ACTION@DEVPATH\\0KEY=VALUE\\0...' -> the KEY=VALUE pairs (kernel format only)."""
    parts = msg.split(b"\0")
    if not parts or b"@" not in parts[0]:
        return None  # udev's own re-broadcasts start with "libudev"; not ours
    env: dict[str, str] = {}
    for p in parts[1:]:
        k, sep, v = p.partition(b"=")
        if sep:
            env[k.decode("ascii", "replace")] = decode(v)
    return env if "ACTION" in env and "DEVPATH" in env else None


KERNEL_PROC: dict[str, Any] = {
    "pid": 0, "tid": 0, "ppid": 0, "exec_id": None, "start_time": None, "comm": "kernel",
    "exe": None, "name": "kernel", "args": [], "args_truncated": False, "cwd": None,
    "uid": 0, "gid": 0, "source": "kernel", "parent": None, "ancestors": [],
}


def to_event(env: dict[str, str], clock: Clock) -> Event:
    device: dict[str, Any] = {
        "action": env.get("ACTION"),
        "devpath": env.get("DEVPATH"),
        "subsystem": env.get("SUBSYSTEM"),
        "devname": env.get("DEVNAME"),
        "devtype": env.get("DEVTYPE"),
        "driver": env.get("DRIVER"),
        "product": env.get("PRODUCT"),  # USB: vendor/product/bcdDevice
        "seqnum": int(env["SEQNUM"]) if env.get("SEQNUM", "").isdigit() else None,
        "env": env,
    }
    return {
        "evt": {"type": "device", "time": clock.time(clock.now_boot_ns()),
                "seq": device["seqnum"], "cpu": None},
        "proc": KERNEL_PROC,
        "user": {"uid": 0, "name": None},
        "container": None,
        "device": for_json(device),  # values not UTF-8: U+FFFD and a `_b64` sibling
    }


class UeventSource:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK,
                                  NETLINK_KOBJECT_UEVENT)
        # A roomy receive buffer: a burst (a hub with many devices) must not
        # overflow between two drains.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, KERNEL_GROUP))
        self.count = 0
        self.overflows = 0

    def drain(self) -> list[Event]:
        out: list[Event] = []
        for _ in range(MAX_PER_DRAIN):
            try:
                msg = self.sock.recv(65536)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: the kernel dropped messages; say so
                self.overflows += 1
                continue
            env = parse(msg)
            if env is not None:
                out.append(to_event(env, self.clock))
        self.count += len(out)
        return out

    def close(self) -> None:
        self.sock.close()
